"""Patient replies typed by staff into the local outbox, for trying the reply flows without Twilio.

Without Twilio settings nothing reaches a phone and no phone can answer, so confirming,
opting out (STOP), opting back in (START), HELP and the schedulers' inbox could not be tried
locally. Here a staff member types what the patient would text back, and it is handled by
:func:`notifications.replies.handle_inbound`, the use case behind the inbound SMS webhook,
from the patient's own number: every effect is the one a real reply has.

Only ever allowed when no Twilio setting is present: with a real provider, a reply made up
by staff would change a real patient's consent and confirmations without the patient.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from notifications import replies
from scheduler.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from config import Settings

# The keywords the outbox page offers; anything else typed is free text for the inbox.
KEYWORDS = ("C", "STOP", "START", "HELP")
MAX_REPLY_LENGTH = 1600  # Twilio's limit for one inbound message body
# Plain provider ids (replies.provider_message_key keeps them as they are), never taken for
# a Twilio SID.
PROVIDER_ID_PREFIX = "local-reply-"


def allowed(settings: Settings) -> bool:
    """Whether replies may be simulated: no Twilio account, token, sender or service is set."""
    return not any(
        (
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            settings.twilio_from_number,
            settings.twilio_messaging_service_sid,
        )
    )


def simulate_reply(
    session: Session, *, from_number: str | None, body: str, now: datetime
) -> replies.InboundResult:
    """Handle ``body`` as an SMS from ``from_number``; commits, as the webhook's use case does.

    ``session`` must act for the service (not narrowed to a user's departments), as the
    webhook's does: a STOP from a number stops texts to every patient who gave it.
    """
    text = replies.clean_message_text(body or "").strip()
    if not from_number:
        raise InvalidInput(
            "The reply cannot be simulated.",
            [FieldError("patient", "has no mobile number to reply from")],
        )
    if not text:
        raise InvalidInput("The reply cannot be simulated.", [FieldError("body", "is empty")])
    if len(text) > MAX_REPLY_LENGTH:
        raise InvalidInput(
            "The reply cannot be simulated.",
            [FieldError("body", f"is longer than {MAX_REPLY_LENGTH} characters")],
        )
    return replies.handle_inbound(
        session,
        provider_id=f"{PROVIDER_ID_PREFIX}{uuid.uuid4().hex}",
        from_number=from_number,
        body=text,
        now=now,
    )
