"""Scrubbing what must never reach a log line: working links, contact details, query values.

The code logs ids and codes, never patient data; this is the net under that rule for text
that comes from elsewhere (a request line, a library's message, an exception's text).
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

# The token segment right after /p/ (a patient's schedule link) or /feeds/linac/ (a staff
# calendar feed), up to the next /, ?, . or space: each URL works for whoever holds it.
_SECRET_SEGMENT = re.compile(r"(/p/|/feeds/linac/)[^/?.\s\"]+")
# A query string's values (a search term or a filter can be a patient's name); keys stay, so
# the line still says what was asked. Stops at whitespace and quotes: the end of the URL.
_QUERY_VALUE = re.compile(r"([?&][^=&#\s\"]+=)[^&#\s\"]*")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# International numbers (E.164), as patients' phones are stored and sent.
_PHONE = re.compile(r"\+[1-9]\d{7,14}\b")


def redact_url(text: str) -> str:
    """A URL or request line with its secret segments and query values replaced."""
    text = _SECRET_SEGMENT.sub(lambda m: m.group(1) + REDACTED, text)
    return _QUERY_VALUE.sub(lambda m: m.group(1) + REDACTED, text)


def redact(text: str) -> str:
    """Any log text with links, query values, email addresses and phone numbers replaced."""
    text = redact_url(text)
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub("[phone]", text)
