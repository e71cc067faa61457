"""Staff pages: downtime."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("downtime", __name__)
