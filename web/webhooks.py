"""Twilio webhooks: message status callbacks and patients' inbound SMS.

Authentication is the ``X-Twilio-Signature`` header alone: an HMAC, keyed with the account's
auth token, over the URL Twilio called and the posted form. The app runs behind a proxy, so
that URL is rebuilt from ``PUBLIC_BASE_URL`` (the app's public root, including any path
prefix the proxy strips) plus the request path and query, never from ``request.url``.
Without a configured auth token every webhook is refused: an unsigned request is never
trusted.

CSRF: these views are exempt from the app-wide check (web/csrf.py) on purpose: Twilio has no
session and no token to send, the views never read the session cookie or the signed-in user,
so a forged cross-site request gains nothing, and the signature (which a browser cannot
produce) takes the token's place.

Replies to inbound SMS are TwiML. STOP/START words get an empty response because Twilio (or
the carrier, for toll-free numbers) already answers those with its standard opt-out/opt-in
text; a second message from us would be refused or duplicate it. HELP is answered by us with
the clinic's phone (with Twilio's default opt-out handling also on, disable its own HELP text
in Advanced Opt-Out so the patient gets one answer).

Logs carry provider message ids and masked phone numbers, never message bodies.

A signed request is stored even when its fields are odd: a MessageSid not in Twilio's format
is kept under a stable key (notifications/replies.py: provider_message_key) and logged by that
key only, and control characters (NUL included) are removed from the body, with a warning
that counts them. Only a request without a MessageSid or a sender is refused (400).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, request
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from config import Settings
from notifications import replies
from web import SETTINGS_KEY, csrf
from web.db import get_session

SIGNATURE_HEADER = "X-Twilio-Signature"

bp = Blueprint("twilio_webhooks", __name__)


def mask_phone(number: str | None) -> str:
    """Enough to tell two numbers apart in a log, not enough to dial."""
    digits = "".join(ch for ch in number or "" if ch.isdigit())
    return f"***{digits[-2:]}" if len(digits) > 4 else "***"


def _public_url() -> str:
    settings: Settings = current_app.extensions[SETTINGS_KEY]
    url = settings.public_base_url.rstrip("/") + request.path
    if request.query_string:
        # The raw query as Twilio sent it: the signature covers its exact spelling.
        url += "?" + request.query_string.decode("latin-1")
    return url


def _signature_problem() -> str | None:
    """Why this request cannot be trusted, or None when its signature checks out."""
    settings: Settings = current_app.extensions[SETTINGS_KEY]
    if not settings.twilio_auth_token:
        return "no Twilio auth token configured"
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return "no signature"
    validator = RequestValidator(settings.twilio_auth_token)
    if not validator.validate(_public_url(), request.form, signature):
        return "bad signature"
    return None


def _forbidden(reason: str) -> Response:
    current_app.logger.warning("refused Twilio webhook %s: %s", request.path, reason)
    # No detail for the caller: a forger learns nothing about why.
    return Response("Forbidden\n", status=403, mimetype="text/plain")


def _bad_request(missing: str) -> Response:
    current_app.logger.warning("signed Twilio webhook %s without %s", request.path, missing)
    return Response("Bad Request\n", status=400, mimetype="text/plain")


def _message_key(raw_sid: str) -> str:
    """The key the message is stored under; a SID not in Twilio's format is logged by its key
    alone, since the raw value could be anything, including a patient's details."""
    sid = replies.provider_message_key(raw_sid)
    if not replies.looks_like_twilio_sid(raw_sid):
        current_app.logger.warning(
            "signed Twilio webhook %s with a MessageSid not in Twilio's format (%d characters)"
            "; handled as %s",
            request.path,
            len(raw_sid),
            sid,
        )
    return sid


@bp.post(replies.STATUS_CALLBACK_PATH)
def status_callback() -> Response:
    problem = _signature_problem()
    if problem:
        return _forbidden(problem)
    form = request.form
    raw_sid = form.get("MessageSid") or form.get("SmsSid")
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not raw_sid or not status:
        return _bad_request("MessageSid or MessageStatus")
    sid = _message_key(raw_sid)
    known = replies.apply_status_callback(
        get_session(),
        provider_id=sid,
        status=status,
        error_code=form.get("ErrorCode"),
        now=datetime.now(UTC),
    )
    if not known:
        # 200 all the same: an error would only make Twilio retry a report we cannot use
        # (e.g. a message sent outside this system, or before its id was recorded).
        current_app.logger.info("status callback for unknown message %s", sid)
    return Response("", status=200, mimetype="text/plain")


@bp.post(replies.INBOUND_PATH)
def inbound_sms() -> Response:
    problem = _signature_problem()
    if problem:
        return _forbidden(problem)
    form = request.form
    raw_sid = form.get("MessageSid") or form.get("SmsSid")
    # A sender made only of control characters is no sender: nobody could be called back.
    sender = replies.clean_field(form.get("From"))
    if not raw_sid or not sender:
        return _bad_request("MessageSid or From")
    sid = _message_key(raw_sid)
    body = form.get("Body", "")
    # Line breaks are only rewritten ("\r\n" -> "\n"); what is counted was removed.
    removed = len(body.replace("\r\n", "\n")) - len(replies.clean_message_text(body))
    if removed:
        # The count only: the body is the patient's words.
        current_app.logger.warning(
            "inbound SMS %s: removed %d control characters from the body", sid, removed
        )
    result = replies.handle_inbound(
        get_session(),
        provider_id=sid,
        from_number=sender,
        body=body,
        now=datetime.now(UTC),
    )
    current_app.logger.info(
        "inbound SMS %s from %s: %s%s%s",
        sid,
        mask_phone(sender),
        result.action,
        ", needs attention" if result.needs_attention else "",
        ", replay ignored" if result.replayed else "",
    )
    twiml = MessagingResponse()
    if result.reply:
        twiml.message(result.reply)
    return Response(str(twiml), status=200, mimetype="application/xml")


def init_app(app: Flask) -> None:
    csrf.exempt(app, bp)
    app.register_blueprint(bp)
