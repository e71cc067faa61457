"""Email over SMTP: a multipart message (text, HTML, the schedule as .ics) and a clear verdict.

Only what the server definitely refused or never received is retried: once the end of the
message data has gone out, a timeout or dropped connection is UNKNOWN (the server may already
have queued it), like a read timeout on the SMS side.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import TYPE_CHECKING

from notifications.channels.base import EmailMessage, Outcome, SendResult

if TYPE_CHECKING:
    from config import Settings

ICS_FILENAME = "schedule.ics"
_END_OF_DATA = b"\r\n.\r\n"


class _TracksEndOfData:
    """Remembers whether the terminating "<CRLF>.<CRLF>" of DATA was handed to the socket.

    smtplib.SMTP.data() sends the whole dot-stuffed message, terminator included, in one send();
    past that point the server may have accepted the message even if we never hear back.
    """

    data_sent = False

    def send(self, s: bytes | str) -> None:
        super().send(s)  # type: ignore[misc]
        if isinstance(s, bytes) and s.endswith(_END_OF_DATA):
            self.data_sent = True


class _Smtp(_TracksEndOfData, smtplib.SMTP):
    pass


class _SmtpSsl(_TracksEndOfData, smtplib.SMTP_SSL):
    pass


class SmtpEmailChannel:
    """EmailChannel over one SMTP connection per message (reminders are few and spread out)."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        from_address: str,
        use_starttls: bool | None = None,
        timeout: float = 10,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.from_address = from_address
        # None: STARTTLS when the server offers it; True: refuse to send in clear text.
        self.use_starttls = use_starttls
        self.timeout = timeout
        self.implicit_tls = port == 465
        _, address = parseaddr(from_address)
        self._envelope_from = address or from_address
        self._msgid_domain = address.rpartition("@")[2] or "localhost"

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpEmailChannel | None:
        """The configured channel, or None when SMTP is not configured."""
        if not (settings.smtp_host and settings.smtp_from):
            return None
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            from_address=settings.smtp_from,
        )

    def build_message(self, message: EmailMessage) -> MimeMessage:
        """The MIME message as it will be sent (exposed for previews and tests)."""
        mime = MimeMessage()
        mime["Message-ID"] = make_msgid(domain=self._msgid_domain)
        mime["Date"] = formatdate(usegmt=True)
        mime["From"] = self.from_address
        mime["To"] = message.to
        mime["Subject"] = message.subject
        if message.list_unsubscribe:
            mime["List-Unsubscribe"] = f"<{message.list_unsubscribe}>"
            # RFC 8058 one-click unsubscribe is defined for HTTPS URIs only.
            if message.list_unsubscribe.startswith("https://"):
                mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mime.set_content(message.text)
        if message.html is not None:
            mime.add_alternative(message.html, subtype="html")
        if message.ics is not None:
            mime.add_attachment(
                message.ics,
                maintype="text",
                subtype="calendar",
                filename=ICS_FILENAME,
                params={"method": "PUBLISH", "charset": "utf-8"},
            )
        return mime

    def send_email(self, message: EmailMessage) -> SendResult:
        mime = self.build_message(message)
        message_id = mime["Message-ID"]
        smtp: _Smtp | _SmtpSsl | None = None
        try:
            smtp = self._open()
            self._prepare(smtp)
            smtp.send_message(mime, from_addr=self._envelope_from, to_addrs=[message.to])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return _from_code(code, text, message_id)
        except smtplib.SMTPResponseException as exc:
            # Sender refused, DATA refused, HELO/AUTH refused: all carry the server's code.
            return _from_code(exc.smtp_code, exc.smtp_error, message_id)
        except smtplib.SMTPNotSupportedError as exc:
            return SendResult(Outcome.FAILED, error_code="config", error_message=str(exc))
        except (smtplib.SMTPException, OSError) as exc:
            # Disconnects, timeouts, refused connections, TLS failures.
            if smtp is not None and smtp.data_sent:
                return SendResult(
                    Outcome.UNKNOWN,
                    provider_id=message_id,
                    error_code="timeout" if _is_timeout(exc) else "connection",
                    error_message=str(exc),
                )
            if isinstance(exc, ssl.SSLCertVerificationError):
                return SendResult(Outcome.FAILED, error_code="tls", error_message=str(exc))
            return SendResult(Outcome.RETRY, error_code="connection", error_message=str(exc))
        finally:
            if smtp is not None:
                _quietly_quit(smtp)
        return SendResult(Outcome.ACCEPTED, provider_id=message_id)

    def _open(self) -> _Smtp | _SmtpSsl:
        if self.implicit_tls:
            context = ssl.create_default_context()
            return _SmtpSsl(self.host, self.port, timeout=self.timeout, context=context)
        return _Smtp(self.host, self.port, timeout=self.timeout)

    def _prepare(self, smtp: _Smtp | _SmtpSsl) -> None:
        """EHLO, STARTTLS as configured, and login."""
        smtp.ehlo()
        if not self.implicit_tls and self.use_starttls is not False:
            if smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            elif self.use_starttls:
                raise smtplib.SMTPNotSupportedError("server does not offer STARTTLS")
        if self.username:
            smtp.login(self.username, self.password or "")


def _from_code(code: int, text: bytes | str, message_id: str) -> SendResult:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    common = {"error_code": str(code), "error_message": detail}
    if 400 <= code < 500:
        return SendResult(Outcome.RETRY, **common)
    if 550 <= code <= 553:
        # Mailbox unavailable / not local / name not allowed: this address will not work.
        return SendResult(Outcome.PERMANENT, **common)
    if code >= 500:
        return SendResult(Outcome.FAILED, **common)
    # A positive code in an exception means a protocol mix-up; nothing was confirmed sent.
    return SendResult(Outcome.RETRY, **common)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, socket.timeout | TimeoutError) or "timed out" in str(exc)


def _quietly_quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
