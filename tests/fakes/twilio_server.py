"""A Twilio-compatible HTTP server on loopback: records, validates and answers like Twilio.

It implements CreateMessage, FetchMessage and ListMessage of the 2010-04-01 API. Every
CreateMessage request is checked against the operation in Twilio's own OpenAPI description
(`../shared/twilio/twilio_api_v2010.json`), so a client that sends a parameter Twilio does not
know, a wrong type, or a badly formatted number is caught by the test, not by production.
Responses can be programmed (errors, delays) to drive the channel's error handling.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
# Beside the repository's checkout; TWILIO_OPENAPI_SPEC points elsewhere.
SPEC_PATH = Path(
    os.environ.get("TWILIO_OPENAPI_SPEC")
    or REPO_ROOT.parent / "shared" / "twilio" / "twilio_api_v2010.json"
)

API = "/2010-04-01"
CREATE_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
FETCH_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
_CREATE_RE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_FETCH_RE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_CHANNEL_ADDRESS = re.compile(r"^[a-z]+:\S+$")  # whatsapp:+1555..., messenger:123
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


class SpecMissing(RuntimeError):
    """Twilio's OpenAPI description is not next to the repository."""


@cache
def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    if not path.exists():
        raise SpecMissing(f"Twilio OpenAPI description not found at {path}")
    return json.loads(path.read_text())


class CreateMessageValidator:
    """Checks a raw CreateMessage request against the OpenAPI operation (plus its prose rules)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        operation = spec["paths"][CREATE_PATH]["post"]
        assert operation["operationId"] == "CreateMessage"
        self.path_params = {p["name"]: p for p in operation["parameters"] if p["in"] == "path"}
        self.media_types = operation["requestBody"]["content"]
        self.schema = self.media_types["application/x-www-form-urlencoded"]["schema"]

    def validate(self, account_sid: str, content_type: str, body: bytes) -> list[str]:
        violations: list[str] = []
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in self.media_types:
            violations.append(f"content type {content_type!r} is not one the operation accepts")
        violations += self._check_value(
            "path AccountSid", account_sid, self.path_params["AccountSid"]["schema"]
        )
        try:
            form = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            return [*violations, f"body is not form encoded: {exc}"]
        properties = self.schema["properties"]
        for name in self.schema.get("required", []):
            if name not in form:
                violations.append(f"required parameter {name} missing")
        for name, values in form.items():
            prop = properties.get(name)
            if prop is None:
                violations.append(f"unknown parameter {name}")
                continue
            prop = self._resolve(prop)
            if prop.get("type") == "array":
                for value in values:
                    violations += self._check_value(name, value, self._resolve(prop["items"]))
            elif len(values) > 1:
                violations.append(f"parameter {name} repeated but not an array")
            else:
                violations += self._check_value(name, values[0], prop)
        violations += self._prose_rules(form)
        return violations

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if not ref:
            return schema
        node: Any = self.spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def _check_value(self, name: str, value: str, schema: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        kind = schema.get("type", "string")
        if kind == "integer" and not re.fullmatch(r"-?\d+", value):
            problems.append(f"{name}={value!r} is not an integer")
        elif kind == "number":
            try:
                float(value)
            except ValueError:
                problems.append(f"{name}={value!r} is not a number")
        elif kind == "boolean" and value not in {"true", "false", "True", "False"}:
            problems.append(f"{name}={value!r} is not a boolean")
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{name}={value!r} not in {schema['enum']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{name} shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{name} longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{name}={value!r} does not match {schema['pattern']}")
        fmt = schema.get("format")
        ignore_format = schema.get("x-twilio", {}).get("ignoreFormat", False)
        if fmt and not ignore_format:
            problems += self._check_format(name, value, fmt)
        return problems

    @staticmethod
    def _check_format(name: str, value: str, fmt: str) -> list[str]:
        if fmt == "phone-number":
            # To: E.164 or a channel address. From also allows short codes and alphanumeric IDs.
            sender_forms = name in {"From", "FallbackFrom"} and (
                _SHORT_CODE.match(value) or _ALPHANUMERIC_SENDER.match(value)
            )
            if not (_E164.match(value) or _CHANNEL_ADDRESS.match(value) or sender_forms):
                return [f"{name}={value!r} is not an E.164 number or channel address"]
        elif fmt == "uri":
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                return [f"{name}={value!r} is not an absolute http(s) URL"]
            if "_" in parts.hostname:
                return [f"{name}: underscores are not allowed in the hostname"]
        elif fmt == "date-time":
            try:
                datetime.fromisoformat(value)
            except ValueError:
                return [f"{name}={value!r} is not an ISO 8601 date-time"]
        return []

    @staticmethod
    def _prose_rules(form: dict[str, list[str]]) -> list[str]:
        """Rules the operation states in its descriptions rather than in the schema."""
        problems = []
        if "From" not in form and "MessagingServiceSid" not in form:
            problems.append("either From or MessagingServiceSid is required")
        if not any(key in form for key in ("Body", "MediaUrl", "ContentSid")):
            problems.append("one of Body, MediaUrl or ContentSid is required")
        if "Body" in form and len(form["Body"][0]) > 1600:
            problems.append("Body longer than 1600 characters")
        if "ValidityPeriod" in form:
            try:
                if not 1 <= int(form["ValidityPeriod"][0]) <= 36000:
                    problems.append("ValidityPeriod outside 1..36000")
            except ValueError:
                pass  # already reported as a type error
        return problems


@dataclass
class RecordedRequest:
    at: datetime
    method: str
    path: str
    operation: str | None
    headers: dict[str, str]
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    violations: list[str] = field(default_factory=list)
    status: int | None = None  # the status answered (None while a delayed answer is pending)

    def param(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Behaviour:
    """How to answer one CreateMessage request."""

    status: int = 201
    code: int | None = None
    message: str | None = None
    delay: float = 0.0
    retry_after: str | None = None


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    _server: ThreadingHTTPServer
    _thread: threading.Thread
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _requests: list[RecordedRequest] = field(default_factory=list)
    _messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    _script: deque[Behaviour] = field(default_factory=deque)
    _stopping: threading.Event = field(default_factory=threading.Event)
    # An outage: every CreateMessage answered with this status until the monotonic deadline.
    _outage: tuple[int, float] | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def create_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.operation == "CreateMessage"]

    @property
    def violations(self) -> list[str]:
        return [v for r in self.requests for v in r.violations]

    @property
    def messages(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {sid: dict(m) for sid, m in self._messages.items()}

    def program(
        self,
        *,
        status: int = 201,
        code: int | None = None,
        times: int = 1,
        delay: float = 0.0,
        retry_after: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` CreateMessage requests this way (then normally again).

        A delayed 201 still creates the message before waiting: exactly the case where the
        client times out although Twilio accepted the message.
        """
        if status == 429 and code is None:
            code = 20429
        with self._lock:
            for _ in range(times):
                self._script.append(Behaviour(status, code, message, delay, retry_after))

    def outage(self, seconds: float, *, status: int = 500) -> None:
        """Answer every CreateMessage with `status` for the next `seconds` (0 ends it now)."""
        with self._lock:
            self._outage = (status, time.monotonic() + seconds) if seconds > 0 else None

    def set_status(self, sid: str, status: str) -> None:
        with self._lock:
            self._messages[sid]["status"] = status

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- used by the handler --------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            if self._outage is not None and time.monotonic() < self._outage[1]:
                return Behaviour(status=self._outage[0])
            return self._script.popleft() if self._script else Behaviour()

    def _store(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._messages[message["sid"]] = message

    def _get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._messages.get(sid)
            return dict(found) if found else None


def _error_body(status: int, code: int | None, message: str) -> dict[str, Any]:
    code = code or status
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


_DEFAULT_ERROR_MESSAGES = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    21211: "The 'To' number is not a valid phone number.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21635: "'To' number cannot be a landline",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeTwilio/1.0"
    # Status line, headers and body leave in one segment: split writes meet the client's
    # delayed ACK and cost ~40 ms a request, which would distort the dispatch benchmark.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    fake: FakeTwilio
    validator: CreateMessageValidator

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean; every request is recorded instead

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        create = _CREATE_RE.match(url.path)
        fetch = _FETCH_RE.match(url.path)
        if method == "POST" and create:
            operation = "CreateMessage"
        elif method == "GET" and create:
            operation = "ListMessage"
        elif method == "GET" and fetch:
            operation = "FetchMessage"
        else:
            operation = None
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        recorded = RecordedRequest(
            at=datetime.now(UTC),
            method=method,
            path=url.path,
            operation=operation,
            headers=dict(self.headers.items()),
            query=parse_qs(url.query, keep_blank_values=True),
            form=form if method == "POST" else {},
        )
        self.fake._record(recorded)
        match = create or fetch
        if operation is None or match is None:
            self._answer(
                recorded, 404, _error_body(404, 20404, "The requested resource was not found")
            )
            return
        if not self._authorized(match.group("account")):
            self._answer(recorded, 401, _error_body(401, 20003, "Authenticate"))
            return
        if operation == "CreateMessage":
            recorded.violations = self.validator.validate(
                match.group("account"), self.headers.get("Content-Type", ""), body
            )
            self._create(recorded, form)
        elif operation == "FetchMessage":
            found = self.fake._get(match.group("sid"))
            if found is None:
                self._answer(recorded, 404, _error_body(404, 20404, "Message not found"))
            else:
                self._answer(recorded, 200, found)
        else:
            self._list(recorded, url.path)

    def _authorized(self, account_sid: str) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (
            secrets.compare_digest(user, self.fake.account_sid)
            and secrets.compare_digest(password, self.fake.auth_token)
            and account_sid == self.fake.account_sid
        )

    def _create(self, recorded: RecordedRequest, form: dict[str, list[str]]) -> None:
        behaviour = self.fake._next_behaviour()
        if behaviour.status >= 400:
            message = behaviour.message or _DEFAULT_ERROR_MESSAGES.get(
                behaviour.code or behaviour.status, "Error"
            )
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            if behaviour.delay:
                self.fake._stopping.wait(behaviour.delay)
            body = _error_body(behaviour.status, behaviour.code, message)
            self._answer(recorded, behaviour.status, body, headers)
            return
        message = self._message_resource(form)
        self.fake._store(message)
        if behaviour.delay:
            self.fake._stopping.wait(behaviour.delay)
        self._answer(recorded, behaviour.status, message)

    def _message_resource(self, form: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            values = form.get(name)
            return values[0] if values else None

        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC).replace(microsecond=0))
        account = self.fake.account_sid
        body = one("Body") or ""
        return {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": one("From"),
            "messaging_service_sid": one("MessagingServiceSid"),
            "num_media": "0",
            # GSM-7 segments: one up to 160 characters, then 153 per concatenated part.
            "num_segments": str(1 if len(body) <= 160 else -(-len(body) // 153)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if one("MessagingServiceSid") else "queued",
            "subresource_uris": {
                "media": f"{API}/Accounts/{account}/Messages/{sid}/Media.json",
            },
            "to": one("To"),
            "uri": f"{API}/Accounts/{account}/Messages/{sid}.json",
        }

    def _list(self, recorded: RecordedRequest, path: str) -> None:
        to = (recorded.query.get("To") or [None])[0]
        page_size = int((recorded.query.get("PageSize") or ["50"])[0])
        items = [m for m in self.fake.messages.values() if to is None or m["to"] == to]
        items = list(reversed(items))[:page_size]  # newest first, as Twilio lists them
        self._answer(
            recorded,
            200,
            {
                "messages": items,
                "end": max(0, len(items) - 1),
                "first_page_uri": path,
                "next_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "previous_page_uri": None,
                "start": 0,
                "uri": path,
            },
        )

    def _answer(
        self,
        recorded: RecordedRequest,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = json.dumps(body).encode()
        recorded.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            pass  # the client gave up (timeout test); the request is recorded all the same


def start_fake_twilio(
    account_sid: str | None = None, auth_token: str | None = None, *, spec_path: Path = SPEC_PATH
) -> FakeTwilio:
    """Start the server on a free loopback port in a background thread."""
    validator = CreateMessageValidator(load_spec(spec_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    # A short poll interval keeps stop() (and so every test's teardown) quick.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-twilio", daemon=True
    )
    fake = FakeTwilio(
        account_sid=account_sid or "AC" + secrets.token_hex(16),
        auth_token=auth_token or secrets.token_hex(16),
        _server=server,
        _thread=thread,
    )
    # A handler class per server, so two fakes in one process never share state.
    server.RequestHandlerClass = type(
        "FakeTwilioHandler", (_Handler,), {"fake": fake, "validator": validator}
    )
    thread.start()
    return fake
