"""What every channel returns: a verdict the sender can act on without knowing the provider."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"  # the provider took the message (provider_id set)
    RETRY = "retry"  # known not sent (429, connection refused, 5xx before acceptance)
    UNKNOWN = "unknown"  # the request may have reached the provider: reconcile, never resend
    PERMANENT = "permanent"  # will never succeed for this recipient (invalid number, STOP...)
    FAILED = "failed"  # not sent, and retrying would not help (bad configuration, rejected)


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class SmsMessage:
    to: str  # E.164
    body: str
    status_callback_url: str | None = None


@dataclass(frozen=True)
class EmailMessage:
    to: str
    subject: str
    text: str
    html: str | None = None
    ics: bytes | None = None  # the schedule as an iCalendar attachment
    list_unsubscribe: str | None = None  # a URL; the header is added when given


class SmsChannel(Protocol):
    name: str

    def send_sms(self, message: SmsMessage) -> SendResult: ...

    def fetch_status(self, provider_id: str) -> str | None:
        """The provider's current status of a message (to reconcile an unknown send)."""
        ...

    def find_sent(self, to: str, body: str, *, since: datetime) -> str | None:
        """The provider id of a message with this body sent to ``to`` since ``since``, if any.

        Settles a send whose answer was lost (timeout, worker killed): found means sent.
        """
        ...


class EmailChannel(Protocol):
    name: str

    def send_email(self, message: EmailMessage) -> SendResult: ...
