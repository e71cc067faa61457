"""Choose the channels for a running instance: the real providers when configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifications.channels.base import EmailChannel, SmsChannel
from notifications.channels.local import LocalOutboxChannel

if TYPE_CHECKING:
    from config import Settings


def sms_channel(settings: Settings) -> SmsChannel:
    """Twilio when its credentials and a sender are set, else the local outbox."""
    # Imported here so an instance without Twilio settings never loads the SDK.
    from notifications.channels.twilio_sms import TwilioSmsChannel

    return TwilioSmsChannel.from_settings(settings) or LocalOutboxChannel()


def email_channel(settings: Settings) -> EmailChannel:
    """SMTP when a host and a From address are set, else the local outbox."""
    from notifications.channels.smtp_email import SmtpEmailChannel

    return SmtpEmailChannel.from_settings(settings) or LocalOutboxChannel()
