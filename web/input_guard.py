"""What every staff and patient page refuses before a view runs, and how a refusal looks.

- Ids in page paths (``<int:...>``) beyond the database's integer range are a 404: PostgreSQL
  would otherwise fail the query with an overflow.
- Control characters other than tab and line breaks in any query argument, form field or path
  segment are a 400: nobody types them, PostgreSQL refuses NUL in text, and a CR/LF in a value
  that reaches a header splits it.
- Errors on pages are HTML in the site's layout with a readable reason.
- Last line of defence: a ValueError or OverflowError, or a value the database refuses, that a
  page did not turn into a field error is answered with a 400 and logged, so the gap is seen
  and closed where the value is parsed.

The JSON API validates its bodies with its own schemas and answers 422 problem documents, and the
Twilio webhooks keep (normalised) whatever a patient sent, so both are left out here.
"""

from __future__ import annotations

import logging
import traceback
import unicodedata
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from flask import Flask, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.routing import IntegerConverter, Map

from web.params import MAX_ID
from web.patient.text import INVALID_LINK

logger = logging.getLogger(__name__)

# Paths whose input is checked elsewhere (see the module docstring).
UNGUARDED_PREFIXES = ("/api/", "/webhooks/", "/static/")
# What a multi-line field (notes, templates, instructions) may hold of the control characters.
ALLOWED_CONTROLS = frozenset("\t\n\r")
PATIENT_PREFIX = "/p/"
# Said to a patient, whose language is not known yet, when a request cannot be read.
PATIENT_REQUEST_REFUSED = (
    ("en", "This request could not be read. Please open the link in your message again."),
    ("es", "No se pudo leer esta solicitud. Vuelva a abrir el enlace de su mensaje."),
)
# Refusals that keep their plain form: a feed reader or calendar app is not a browser.
PLAIN_PREFIXES = ("/feeds/",)


def decimal_at_most(limit: int) -> str:
    """A regular expression matching the ASCII decimal numbers from 0 to ``limit``."""
    digits = str(limit)
    options = [f"[0-9]{{1,{len(digits) - 1}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):
        if digit != "0":
            rest = len(digits) - i - 1
            options.append(
                f"{digits[:i]}[0-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else "")
            )
    options.append(digits)
    return "(?:" + "|".join(options) + ")"


class DatabaseIdConverter(IntegerConverter):
    """``<int:...>`` for record ids: a number beyond a PostgreSQL ``integer`` matches no record,
    so it is a 404 before any query is made.

    The bound is in the pattern, not only in ``to_python``: Werkzeug decides 404 or 405 from the
    patterns, so a value refused after matching would be a 405 on a path whose other methods
    have their own rule. ASCII digits only (``\\d`` also matches other scripts' digits).
    """

    regex = decimal_at_most(MAX_ID)

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def control_character(values: Iterable[str]) -> str | None:
    """The first control character (other than tab and line breaks) in ``values``, if any."""
    for value in values:
        for char in value:
            if char not in ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
                return char
    return None


def guarded(path: str) -> bool:
    return not path.startswith(UNGUARDED_PREFIXES)


def _refuse_control_characters() -> None:
    if not guarded(request.path):
        return
    texts: list[str] = [request.path]
    for multi in (request.args, request.form):
        for key, values in multi.lists():
            texts.append(key)
            texts.extend(values)
    char = control_character(texts)
    if char is not None:
        raise BadRequest(
            f"The request holds a control character (U+{ord(char):04X}) that cannot be typed; "
            "go back, remove it and try again."
        )


def error_page(exc: HTTPException) -> Any:
    """``exc`` as an HTML page in the site's layout, keeping its headers (Allow, Retry-After)."""
    if exc.response is not None or request.path.startswith(PLAIN_PREFIXES):
        return exc
    headers = {
        name: value
        for name, value in exc.get_response().headers.items()
        if name.lower() not in {"content-type", "content-length"}
    }
    try:
        if request.path.startswith(PATIENT_PREFIX):
            # The patients' own frame: no staff navigation, and no title naming the treatment.
            lines = INVALID_LINK if exc.code == 404 else PATIENT_REQUEST_REFUSED
            body = render_template("patient/message.html", lines=lines)
        else:
            body = render_template(
                "error.html", title=exc.name, code=exc.code, description=exc.description
            )
    except Exception:  # noqa: BLE001 - the layout itself failed: Werkzeug's own page is plain
        logger.exception("Error page could not be rendered")
        return exc
    return body, exc.code or 500, headers


def bad_input_reached_code(exc: Exception) -> Any:
    """Last line of defence for pages: input a parser let through is a 400, and logged."""
    if not guarded(request.path):
        from web.errors import _unexpected

        return _unexpected(exc)
    rule = request.url_rule.rule if request.url_rule is not None else "(no route)"
    # Only the exception type and code locations: messages can carry typed values.
    logger.warning(
        "Bad input reached %s in %s %s\n%s",
        type(exc).__name__,
        request.method,
        rule,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return error_page(
        BadRequest("A value in the request is out of range or malformed; go back and check it.")
    )


def init_app(app: Flask) -> None:
    """Call before any blueprint is registered: rules pick their converters when added."""
    app.url_map.converters["int"] = DatabaseIdConverter
    app.before_request(_refuse_control_characters)
    for exc_type in (ValueError, OverflowError, sa.exc.DataError):
        app.register_error_handler(exc_type, bad_input_reached_code)
