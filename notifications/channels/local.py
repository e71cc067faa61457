"""The local outbox channel: what `make run` uses when neither Twilio nor SMTP is configured.

The sender already stores every rendered message on its reminder row, and the outbox page shows
those rows as the patient would see them, so this channel only has to say "accepted".
"""

from __future__ import annotations

import uuid
from datetime import datetime

from notifications.channels.base import EmailMessage, Outcome, SendResult, SmsMessage


class LocalOutboxChannel:
    """SmsChannel and EmailChannel at once; nothing leaves the machine."""

    name = "local"

    def send_sms(self, message: SmsMessage) -> SendResult:
        return SendResult(Outcome.ACCEPTED, provider_id=_local_id())

    def send_email(self, message: EmailMessage) -> SendResult:
        return SendResult(Outcome.ACCEPTED, provider_id=_local_id())

    def fetch_status(self, provider_id: str) -> str | None:
        # Nothing can be lost between us and ourselves.
        return "delivered" if provider_id.startswith("local-") else None

    def find_sent(self, to: str, body: str, *, since: datetime) -> str | None:
        # Every local send is answered at once, so none is ever left unknown to look for.
        return None


def _local_id() -> str:
    return f"local-{uuid.uuid4()}"
