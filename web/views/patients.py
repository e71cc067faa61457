"""Staff pages: patients."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("patients", __name__)
