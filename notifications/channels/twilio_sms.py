"""SMS through Twilio's official SDK: the only sending module that imports twilio.

Besides this module only web/webhooks.py (signature check, TwiML answers) may import it; ruff's
banned-api rule (pyproject.toml) enforces that.

The verdict of every send follows one rule: retry only what is known unsent. A request that may
have reached Twilio (read timeout, connection lost while waiting for the answer, a gateway
timeout) is UNKNOWN and must be reconciled with `fetch_status` / `find_sent`, never re-posted.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from notifications.channels.base import Outcome, SendResult, SmsMessage
from scheduler import links

if TYPE_CHECKING:
    from config import Settings

# Recipient problems that no retry will fix; the sender flags the patient's SMS channel.
PERMANENT_ERROR_CODES = frozenset(
    {
        21211,  # invalid 'To' phone number
        21610,  # the recipient replied STOP (unsubscribed)
        21614,  # 'To' is not a mobile number
        21635,  # 'To' cannot receive SMS (landline / not SMS-capable)
    }
)
RATE_LIMITED_CODE = 20429

# Twilio holds a queued message at most this long (its own default is 36000 s); a reminder that
# could not leave Twilio's queue within an hour is better dropped than delivered late.
DEFAULT_VALIDITY_PERIOD_SECONDS = 3600
# find_sent looks at this many recent messages to the number, back to the send time less skew.
FIND_SENT_LIMIT = 50
CLOCK_SKEW = timedelta(seconds=5)

# The SDK logs every request line at INFO, including query strings with patients' numbers
# (find_sent): keep that out of worker logs unless someone lowers this level on purpose.
_sdk_log = logging.getLogger(__name__ + ".sdk")
_sdk_log.setLevel(logging.WARNING)


class _RoutedHttpClient(TwilioHttpClient):
    """The SDK's requests-based client, pinned to one origin and never retrying.

    Every SDK domain builds absolute URLs on *.twilio.com; rewriting the origin here, at the last
    step before the socket, sends every request (api, messaging, any edge/region rewrite) to the
    configured server, so a test or staging setup can never leak a request to production.
    """

    def __init__(self, *, base_url: str | None, timeout: float) -> None:
        super().__init__(pool_connections=True, timeout=timeout, logger=_sdk_log)
        # requests and urllib3 retry nothing by default today, but a silent retry of a POST is a
        # double-sent SMS, so make "no retries" explicit for both schemes rather than inherited.
        no_retry = Retry(total=0, connect=0, read=False, redirect=0, status=0, other=0)
        assert self.session is not None
        for prefix in ("https://", "http://"):
            self.session.mount(prefix, HTTPAdapter(max_retries=no_retry))
        self._origin = urlsplit(base_url.rstrip("/")) if base_url else None
        # The last response seen by this thread: TwilioRestException carries no headers, and
        # Retry-After lives in them. Thread-local because one channel may serve many threads.
        self._local = threading.local()

    def _route(self, url: str) -> str:
        if self._origin is None:
            return url
        target = urlsplit(url)
        path = self._origin.path + target.path
        return urlunsplit(
            (self._origin.scheme, self._origin.netloc, path, target.query, target.fragment)
        )

    def request(self, method: str, url: str, *args, **kwargs) -> Response:  # type: ignore[override]
        self._local.last_response = None
        response = super().request(method, self._route(url), *args, **kwargs)
        self._local.last_response = response
        return response

    def last_headers(self) -> dict[str, str]:
        response = getattr(self._local, "last_response", None)
        return dict(response.headers or {}) if response is not None else {}


class TwilioSmsChannel:
    """SmsChannel on Twilio Programmable Messaging."""

    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str | None = None,
        timeout_seconds: float = 10,
        validity_period_seconds: int | None = None,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("Twilio needs a From number or a Messaging Service SID")
        if validity_period_seconds is not None and not 1 <= validity_period_seconds <= 36000:
            raise ValueError("Twilio accepts a ValidityPeriod from 1 to 36000 seconds")
        if timeout_seconds <= 0:
            raise ValueError("the HTTP timeout must be positive")
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.validity_period_seconds = validity_period_seconds
        self.base_url = base_url
        self._http = _RoutedHttpClient(base_url=base_url, timeout=timeout_seconds)
        # An explicit (non-empty) environment keeps TWILIO_EDGE / TWILIO_REGION of the host from
        # silently changing where we send; the credentials come only from our settings.
        self._client = Client(
            account_sid,
            auth_token,
            http_client=self._http,
            environment={"TWILIO_ENVIRONMENT_IGNORED": "1"},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioSmsChannel | None:
        """The configured channel, or None when Twilio is not configured."""
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            return None
        if not (settings.twilio_from_number or settings.twilio_messaging_service_sid):
            return None
        return cls(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            base_url=settings.twilio_base_url,
            validity_period_seconds=DEFAULT_VALIDITY_PERIOD_SECONDS,
        )

    def send_sms(self, message: SmsMessage) -> SendResult:
        optional: dict[str, object] = {}
        if self.messaging_service_sid:
            optional["messaging_service_sid"] = self.messaging_service_sid
        if self.from_number:
            optional["from_"] = self.from_number
        if message.status_callback_url:
            optional["status_callback"] = message.status_callback_url
        if self.validity_period_seconds is not None:
            optional["validity_period"] = self.validity_period_seconds
        try:
            created = self._client.messages.create(to=message.to, body=message.body, **optional)
        except TwilioRestException as exc:
            return self._from_rest_error(exc)
        except requests.exceptions.RequestException as exc:
            return _from_transport_error(exc)
        except (TwilioException, ValueError) as exc:
            # An answer we could not read (e.g. a 201 with a broken body): it may have been sent.
            return SendResult(Outcome.UNKNOWN, error_message=f"unreadable answer: {exc}")
        return SendResult(Outcome.ACCEPTED, provider_id=created.sid)

    def fetch_status(self, provider_id: str) -> str | None:
        """Twilio's status of a message, or None when Twilio does not know the SID.

        Transport errors propagate: "could not ask" must not read as "not there".
        """
        try:
            return self._client.messages(provider_id).fetch().status
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise

    def find_sent(self, to: str, body: str, *, since: datetime) -> str | None:
        """The SID of a message with this body sent to `to` since `since`, if Twilio has one.

        Settles a send whose answer was lost (read timeout, worker killed) without posting
        again. Lists the recent messages to the number, newest first; transport and API errors
        propagate, because "could not ask" must not read as "never sent".
        """
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)  # the database keeps UTC; SQLite drops the zone
        # Twilio stamps with whole seconds and its own clock: allow a little skew.
        earliest = since.astimezone(UTC).replace(microsecond=0) - CLOCK_SKEW
        for item in self._client.messages.list(to=to, limit=FIND_SENT_LIMIT):
            created = item.date_created
            if created is not None and created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            if created is not None and created < earliest:
                break  # newest first: everything further is older
            # What we keep of a message has its patient link masked; Twilio has the real one.
            if item.body == body or links.mask_patient_links(item.body) == body:
                return item.sid
        return None

    def _from_rest_error(self, exc: TwilioRestException) -> SendResult:
        code = exc.code if isinstance(exc.code, int) else None
        common = {
            "error_code": str(exc.code) if exc.code is not None else str(exc.status),
            "error_message": str(exc.msg),
        }
        if exc.status == 429 or code == RATE_LIMITED_CODE:
            return SendResult(
                Outcome.RETRY,
                retry_after_seconds=_retry_after(self._http.last_headers()),
                **common,
            )
        if code in PERMANENT_ERROR_CODES:
            return SendResult(Outcome.PERMANENT, **common)
        if exc.status == 504:
            # A gateway gave up waiting for Twilio's backend, which may still have taken it.
            return SendResult(Outcome.UNKNOWN, **common)
        if exc.status >= 500:
            return SendResult(
                Outcome.RETRY,
                retry_after_seconds=_retry_after(self._http.last_headers()),
                **common,
            )
        # Authentication, a From we do not own, a bad parameter: retrying would not help.
        return SendResult(Outcome.FAILED, **common)


def _from_transport_error(exc: requests.exceptions.RequestException) -> SendResult:
    if isinstance(exc, requests.exceptions.ConnectTimeout) or _never_connected(exc):
        return SendResult(Outcome.RETRY, error_code="connect", error_message=str(exc))
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return SendResult(Outcome.UNKNOWN, error_code="timeout", error_message=str(exc))
    # Connection reset or closed while the request or its answer was in flight.
    return SendResult(Outcome.UNKNOWN, error_code="connection", error_message=str(exc))


def _never_connected(exc: requests.exceptions.RequestException) -> bool:
    """True when no TCP connection was made (refused, unreachable, DNS): nothing was sent."""
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def _retry_after(headers: dict[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # the HTTP-date form: let the caller's backoff decide
    return None
