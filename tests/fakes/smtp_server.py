"""An SMTP server on loopback (aiosmtpd) that keeps what it receives and can refuse on demand."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.controller import Controller

Stage = Literal["rcpt", "data"]


@dataclass(frozen=True)
class ReceivedMail:
    at: datetime
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    def parsed(self) -> EmailMessage:
        message = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass(frozen=True)
class _Reply:
    stage: Stage
    reply: str | None  # None: accept normally
    delay: float


class _Handler:
    """aiosmtpd handler hooks; the programmed replies are consumed one per message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[ReceivedMail] = []
        self.script: deque[_Reply] = deque()

    def _take(self, stage: Stage) -> _Reply | None:
        with self.lock:
            if self.script and self.script[0].stage == stage:
                return self.script.popleft()
        return None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        planned = self._take("rcpt")
        if planned is not None and planned.reply:
            return planned.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        planned = self._take("data")
        if planned is not None and planned.delay:
            await asyncio.sleep(planned.delay)
        if planned is not None and planned.reply:
            return planned.reply
        mail = ReceivedMail(
            at=datetime.now(UTC),
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            content=envelope.original_content or envelope.content,
        )
        with self.lock:
            self.received.append(mail)
        return "250 Message accepted for delivery"


@dataclass
class FakeSmtp:
    host: str
    port: int
    _controller: Controller
    _handler: _Handler = field(repr=False)

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._handler.lock:
            return list(self._handler.received)

    def program(
        self, code: int | None = None, *, times: int = 1, stage: Stage = "rcpt", delay: float = 0
    ) -> None:
        """Answer the next `times` messages with `code` at RCPT or DATA (or just wait `delay`).

        A delay at the DATA stage happens after the whole message was received: the case where
        the client times out waiting for the final answer.
        """
        texts = {451: "4.3.0 Try again later", 550: "5.1.1 Mailbox unavailable"}
        reply = f"{code} {texts.get(code, 'Programmed reply')}" if code else None
        with self._handler.lock:
            for _ in range(times):
                self._handler.script.append(_Reply(stage, reply, delay))

    def stop(self) -> None:
        self._controller.stop()


def _free_port() -> int:
    # aiosmtpd 1.4's Controller connects to its own port to check readiness, so port 0 cannot
    # be passed through; take a free one from the kernel instead.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_fake_smtp(port: int | None = None, **smtp_kwargs: Any) -> FakeSmtp:
    """Start on a free loopback port, or on `port` (a server brought back after an outage)."""
    handler = _Handler()
    port = port or _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **smtp_kwargs)
    controller.start()
    return FakeSmtp(host="127.0.0.1", port=port, _controller=controller, _handler=handler)
