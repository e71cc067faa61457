"""No page answers bad input with a server error: every form field and query argument of every
page, fuzzed.

The routes come from the app's URL map, so a page added later is fuzzed too; a path argument
this test has no value for fails the test until one is added in ``seed_world``. Path ids are
real seeded records and extreme numbers. Each page is fetched as an admin to learn its forms
(field names and their valid values) and the query arguments its links and GET forms carry,
together with every query argument the views read; a POST route whose form no page shows gets
every field name the pages use. Each form field is first swept with a NUL, far years (dates)
and unicode or beyond-32-bit digits (numbers), the other fields valid; then hypothesis posts the
forms with one to three fields replaced by hostile values (NUL, CR/LF, huge and unicode-digit
numbers, bidi and zero-width characters, years 1 and 9999, long strings, nothing at all) and
fetches each page with hostile query arguments, as an admin and (pages only) as a viewer.

A response of 500 or more fails, and so does input that only the last line of defence caught
(a ValueError or database error turned into a 400 is logged by ``web.input_guard``): that input
must be refused where it is parsed.

Examples are derandomised, so a run is repeatable; ``FUZZ_EXAMPLES`` sets how many per page.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session
from werkzeug.routing import IntegerConverter, Rule

from notifications import template_store
from notifications.models import InboundMessage, Reminder
from scheduler import accounts
from scheduler.models import (
    CalendarFeed,
    Closure,
    Course,
    Downtime,
    Fraction,
    Patient,
    Resource,
    SimulationRun,
    User,
)
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.committing import links
from tests.pages.conftest import csrf_from

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
WEB_SOURCE = Path(__file__).resolve().parents[2] / "web"
# Not pages: the JSON API and the webhooks have their own schema tests, static files no input.
# The readiness probe reads no input, and its 503 (no worker in this test) is its answer.
SKIPPED_PREFIXES = ("/api/", "/webhooks/", "/static/", "/readyz")
# A separate address for fuzzing the sign-in form, so its failures never throttle the staff
# sessions the rest of the test signs in with.
SIGN_IN_FUZZER = {"REMOTE_ADDR": "198.51.100.77"}
SWEEP_VALUES = ("a\x00b", "9999-12-31", "0001-01-01", "²", "2147483648")
DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}")
ADDRESSES = itertools.count(1)
EXTREME_IDS = (0, 2**31 - 1, 2**31, 2**63, 10**30)

HOSTILE_TEXT = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "x\r\nSet-Cookie: a=b",
    "\x1b[31m",
    "\x7f",
    "²",
    "١٢",
    "-1",
    "0",
    "2147483648",
    "9223372036854775808",
    "9" * 400,
    "1e400",
    "nan",
    "1.5",
    "9999-12-31",
    "0001-01-01",
    "9999-12-31T23:59",
    "0001-01-01T00:00",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00-14:00",
    "2026-02-30",
    "2026-03-08T02:30",
    "24:00",
    "23:59:60",
    "Ana\u202eanA",
    "\u200b",
    "\ufeff",
    "\u2028",
    "x" * 5000,
    "/\\evil.example",
    "//evil.example",
    "https://evil.example/",
    "/%0d%0aLocation:%20x",
    "{{ 7 * 7 }}",
    "<script>alert(1)</script>",
    "Robert'); DROP TABLE patients;--",
    "localtime",
    "Factory",
    "+19005550100",
    "ümlaut@exämple.org",
)


def hostile_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=40),
        st.integers().map(str),
        st.dates().map(date.isoformat),
        st.datetimes().map(lambda d: d.isoformat(timespec="minutes")),
    )


# --- learning a page's forms and links ---------------------------------------------------------


@dataclass
class Form:
    method: str
    action: str
    fields: dict[str, list[str]] = field(default_factory=dict)  # name -> valid values
    kinds: dict[str, str] = field(default_factory=dict)  # name -> input type
    guessed: bool = False  # not seen on any page: every field name the pages use

    def add(self, name: str | None, value: str | None) -> None:
        if name:
            values = self.fields.setdefault(name, [])
            if value is not None and value not in values:
                values.append(value)


class PageParser(HTMLParser):
    """Forms (with every named field and the values offered for it) and link query names."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.links: list[str] = []
        self._form: Form | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        elif tag == "form":
            self._form = Form((a.get("method") or "get").upper(), a.get("action") or "")
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag in ("input", "button"):
            kind = (a.get("type") or "text").lower()
            if a.get("name"):
                self._form.kinds[a["name"] or ""] = kind
            if kind in ("checkbox", "radio", "submit", "hidden") or tag == "button":
                self._form.add(a.get("name"), a.get("value") or ("on" if tag == "input" else ""))
            else:
                self._form.add(a.get("name"), a.get("value") or "")
        elif tag == "select":
            self._select = a.get("name")
            self._form.add(self._select, None)
        elif tag == "option" and self._select:
            self._form.add(self._select, a.get("value") or "")
        elif tag == "textarea":
            self._textarea = a.get("name")
            self._form.add(self._textarea, None)

    def handle_data(self, data: str) -> None:
        if self._form is not None and self._textarea:
            self._form.add(self._textarea, data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


# --- the seeded records whose ids fill the paths ----------------------------------------------


@dataclass(frozen=True)
class World:
    ids: dict[str, int]
    strings: dict[str, list[str]]  # by argument name, or "endpoint:name" where they differ

    def text_values(self, rule: Rule, name: str) -> list[str]:
        values = self.strings.get(f"{rule.endpoint}:{name}") or self.strings.get(name)
        assert values, f"{rule.rule}: no value for <{name}>; add one"
        return values


def seed_world(db: Session, seed: Seed) -> World:
    """One record of every kind a page path names, with a booked course next week."""
    admin = db.get(User, seed.admin_id)
    assert admin is not None
    # The fuzzed user forms change someone other than the signed-in users.
    target = accounts.create_user(
        db, email="target@example.org", name="Target", role="viewer", password=None
    )
    token = accounts.issue_api_token(db, target.id, "fuzz target")
    patient = Patient(
        department_id=seed.department_id,
        mrn="FUZZ-1",
        given_name="Ada",
        family_name="Fuzz",
        date_of_birth=date(1950, 1, 2),
        phone_e164="+12125550199",
        email="ada@example.org",
        sms_consent=True,
        email_consent=True,
        language="en",
    )
    db.add(patient)
    db.flush()
    course = Course(patient_id=patient.id, protocol_id=seed.protocol_id)
    course.plan_approved_at = course.physics_qa_at = datetime.now(UTC)
    db.add(course)
    db.flush()
    monday = datetime.now(UTC).replace(hour=14, minute=0, second=0, microsecond=0)
    monday += timedelta(days=7 - monday.weekday())
    fractions = [
        Fraction(
            course_id=course.id,
            patient_id=patient.id,
            linac_id=seed.linac_ids[0],
            number=n,
            starts_at=monday + timedelta(days=n - 1),
            ends_at=monday + timedelta(days=n - 1, minutes=45),
        )
        for n in range(1, 6)
    ]
    downtime = Downtime(
        linac_id=seed.linac_ids[1],
        starts_at=monday + timedelta(days=1),
        ends_at=monday + timedelta(days=1, hours=2),
        reason="Service",
    )
    closure = Closure(department_id=seed.department_id, day=monday.date(), reason="Training")
    ct_sim = Resource(department_id=seed.department_id, kind="ct_sim", name="Fuzz CT")
    db.add_all([*fractions, downtime, closure, ct_sim])
    db.flush()
    reminder = Reminder(
        dedupe_key="fuzz:1",
        kind="day_before",
        channel="sms",
        patient_id=patient.id,
        course_id=course.id,
        fraction_id=fractions[0].id,
        fraction_version=1,
        due_at=monday - timedelta(days=1),
        status="failed",
        status_reason="30003: Unreachable destination handset",
    )
    inbound = InboundMessage(
        provider_id="SMfuzz1",
        from_number="+12125550199",
        patient_id=patient.id,
        body="Can I come later?",
        action="inbox",
        needs_attention=True,
    )
    db.add_all([reminder, inbound])
    db.flush()
    feed_token = links.issue_feed_token(db, seed.linac_ids[0], "Fuzz feed", seed.admin_id)
    patient_token = links.issue_patient_link(
        db, patient_id=patient.id, course_id=course.id, now=datetime.now(UTC)
    )
    db.flush()
    feed_id = db.scalar(sa.select(CalendarFeed.id).where(CalendarFeed.name == "Fuzz feed"))
    simulation = SimulationRun(
        name="Fuzz run",
        department_id=seed.department_id,
        scenario={"days": 28},
        status="done",
        days_total=28,
        days_done=28,
        summary={"courses": 1},
        output_dir="run-fuzz",
    )
    db.add(simulation)
    db.flush()
    world = World(
        ids={
            "department_id": seed.department_id,
            "linac_id": seed.linac_ids[0],
            "protocol_id": seed.protocol_id,
            "user_id": target.id,
            "token_id": token.token.id,
            "feed_id": feed_id,
            "closure_id": closure.id,
            "resource_id": ct_sim.id,
            "patient_id": patient.id,
            "course_id": course.id,
            "fraction_id": fractions[1].id,
            "downtime_id": downtime.id,
            "reminder_id": reminder.id,
            "message_id": inbound.id,
            "run_id": simulation.id,
        },
        strings={
            "kind": list(template_store.KINDS),
            "part": list(template_store.PART_LABELS),
            "language": list(template_store.LANGUAGES),
            "token": [patient_token],
            "feeds.linac_feed:token": [feed_token],
            "rest": ["unknown/path"],
            "filename": ["app.css"],
        },
    )
    db.commit()
    return world


# --- the routes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    rule: Rule
    method: str

    def __str__(self) -> str:
        return f"{self.method} {self.rule.rule}"


def page_targets(app: Flask) -> list[Target]:
    return [
        Target(rule, method)
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule)
        if not rule.rule.startswith(SKIPPED_PREFIXES) and rule.endpoint != "static"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    ]


def path_converters(rule: Rule) -> dict[str, object]:
    """The variables in the rule's path (``arguments`` also holds its defaults)."""
    return dict(rule._converters)  # noqa: SLF001 - Werkzeug keeps them only here


def real_path(rule: Rule, world: World) -> str:
    values: dict[str, object] = {}
    for name, converter in path_converters(rule).items():
        if isinstance(converter, IntegerConverter):
            assert name in world.ids, f"{rule.rule}: no seeded record for <{name}>; add one"
            values[name] = world.ids[name]
        else:
            values[name] = world.text_values(rule, name)[0]
    return build(rule, values)


def build(rule: Rule, values: dict[str, object]) -> str:
    path = rule.rule
    for name, value in values.items():
        path = re.sub(rf"<(?:[a-z]+(?:\([^)]*\))?:)?{name}>", str(value), path)
    return path


def path_strategy(rule: Rule, world: World) -> st.SearchStrategy[str]:
    parts: dict[str, st.SearchStrategy[object]] = {}
    for name in path_converters(rule):
        if name in world.ids:
            parts[name] = st.sampled_from((world.ids[name], *EXTREME_IDS))
        else:
            real = st.sampled_from(world.text_values(rule, name))
            text = hostile_values().filter(bool).map(lambda v: quote(v, safe=""))
            parts[name] = st.one_of(real, real, text)
    return st.fixed_dictionaries(parts).map(lambda values: build(rule, values))


def read_query_names() -> set[str]:
    """Every query argument the views read by name."""
    names: set[str] = set()
    pattern = re.compile(
        r"(?:(?:args|values)\.get(?:list)?|query_int|query_date|_date_arg)\(\s*\"([A-Za-z_][\w-]*)\""
    )
    for path in WEB_SOURCE.rglob("*.py"):
        if "api" in path.parts:
            continue
        names.update(pattern.findall(path.read_text()))
    return names


# --- the client -------------------------------------------------------------------------------


class Staff:
    """A signed-in test client that signs in again when a fuzzed request signed it out."""

    def __init__(self, app: Flask, role: str) -> None:
        self.client: FlaskClient = app.test_client()
        self.role = role
        self.csrf = ""
        self.sign_in()

    def sign_in(self) -> None:
        login = self.client.get("/login").get_data(as_text=True)
        response = self.client.post(
            "/login",
            data={
                "csrf_token": csrf_from(login),
                "email": f"{self.role}@example.org",
                "password": ADMIN_PASSWORD,
            },
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        self.csrf = csrf_from(self.client.get("/").get_data(as_text=True))

    def request(self, method: str, path: str, **kwargs: object):  # noqa: ANN201 - a response
        response = self.client.open(path, method=method, **kwargs)  # type: ignore[arg-type]
        location = response.headers.get("Location", "")
        if response.status_code in (302, 303) and urlsplit(location).path == "/login":
            self.sign_in()
        return response


@dataclass
class Catalogue:
    """What the pages showed: forms by (method, action path) and the query names in use."""

    forms: dict[tuple[str, str], list[Form]] = field(default_factory=lambda: defaultdict(list))
    query_names: set[str] = field(default_factory=set)
    all_fields: set[str] = field(default_factory=set)


def catalogue_pages(staff: Staff, targets: list[Target], world: World) -> Catalogue:
    found = Catalogue()
    found.query_names |= read_query_names()
    for target in targets:
        if target.method != "GET":
            continue
        path = real_path(target.rule, world)
        response = staff.request("GET", path)
        if response.status_code != 200 or "html" not in response.content_type:
            continue
        parser = PageParser()
        parser.feed(response.get_data(as_text=True))
        for form in parser.forms:
            action = urlsplit(form.action).path or path
            found.forms[(form.method, action)].append(form)
            found.all_fields |= set(form.fields)
            if form.method == "GET":
                found.query_names |= set(form.fields)
        for href in parser.links:
            found.query_names |= {name for name, _ in parse_qsl(urlsplit(href).query)}
    found.all_fields.discard("csrf_token")
    return found


# --- the property -----------------------------------------------------------------------------


class LastLineHits(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def last_line_hits() -> Iterator[LastLineHits]:
    handler = LastLineHits()
    guard = logging.getLogger("web.input_guard")
    guard.addHandler(handler)
    yield handler
    guard.removeHandler(handler)


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> PasswordHasher:
    # Sign-in runs again after every fuzzed sign-out; argon2 at production cost would take most
    # of the test's time, and nothing here is about hashing.
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(accounts, "_hasher", lambda: cheap)
    return cheap


def fuzz_target(
    staff: Staff,
    target: Target,
    world: World,
    catalogue: Catalogue,
    examples: int,
    last_line: LastLineHits,
) -> None:
    real = real_path(target.rule, world)
    forms = catalogue.forms.get((target.method, real), [])
    if target.method == "POST" and not forms:
        # A form this state of the data does not show: every field name any page uses.
        forms = [Form("POST", real, {name: [""] for name in catalogue.all_fields}, guessed=True)]
    query_names = sorted(catalogue.query_names)

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        # The first failing example is reported as drawn: shrinking it would cost minutes.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def attempt(data: st.DataObject) -> None:
        path = data.draw(st.one_of(st.just(real), path_strategy(target.rule, world)), "path")
        query = data.draw(
            st.dictionaries(st.sampled_from(query_names), hostile_values(), max_size=3)
            if query_names
            else st.just({}),
            "query",
        )
        body: dict[str, object] | None = None
        if forms:
            form = data.draw(st.sampled_from(forms), "form")
            # Each field one of the values the page offers (an option, a checkbox's value).
            valid = {
                name: data.draw(st.sampled_from(values), name) if values else ""
                for name, values in form.fields.items()
            }
            names = sorted(valid)
            bad = data.draw(
                st.dictionaries(
                    st.sampled_from(names) if names else st.just("field"),
                    hostile_values(),
                    min_size=1,
                    max_size=3,
                ),
                "hostile fields",
            )
            dropped = data.draw(st.sets(st.sampled_from(names)) if names else st.just(set()))
            fields = {k: v for k, v in (valid | bad).items() if k not in dropped - set(bad)}
            if "csrf_token" not in bad:
                fields["csrf_token"] = staff.csrf
            if form.method == "GET":
                query |= fields
            else:
                body = fields
        send(staff, target, path, query, body, last_line)

    sweep(staff, target, real, forms, query_names, last_line)
    attempt()


def send(
    staff: Staff,
    target: Target,
    path: str,
    query: dict[str, object],
    body: dict[str, object] | None,
    last_line: LastLineHits,
) -> None:
    before = len(last_line.messages)
    response = staff.request(
        target.method,
        path,
        query_string=query,
        data=body if target.method == "POST" else None,
        environ_base=environ_for(target),
    )
    assert response.status_code < 500, (
        f"{target}: {target.method} {path} query={query!r} body={body!r} answered "
        f"{response.status_code}"
    )
    if response.status_code in (400, 404) and not path.startswith(("/p/", "/feeds/")):
        # A refusal is a readable page in the site's layout, not a bare server page.
        assert 'class="brand"' in response.get_data(as_text=True), (
            f"{target}: {path} query={query!r} body={body!r} answered a bare {response.status_code}"
        )
    assert len(last_line.messages) == before, (
        f"{target}: {path} query={query!r} body={body!r} was refused only by the last line "
        f"of defence: {last_line.messages[before:]}"
    )


def environ_for(target: Target) -> dict[str, str]:
    """Requests to sign-in and to patient links and feeds come from addresses of their own (a
    new one for each request to the rate-limited patient pages), so limits do not turn the
    fuzzing into a series of 429s or lock out the staff sessions."""
    if target.rule.endpoint == "auth.login":
        return SIGN_IN_FUZZER
    if target.rule.rule.startswith(("/p/", "/feeds/")):
        n = next(ADDRESSES)
        return {"REMOTE_ADDR": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
    return {}


def signature_values(valid: str, kind: str) -> list[str]:
    """The hostile values a field of this kind is always tried with (random examples find
    these only by luck): a NUL for every field, far years for dates, unicode digits and
    beyond-32-bit numbers for numbers."""
    values = ["a\x00b"]
    if kind == "datetime-local" or "T" in valid and DATE_LIKE.match(valid):
        values += ["9999-12-31T23:59", "0001-01-01T00:00"]
    elif kind == "date" or DATE_LIKE.match(valid):
        values += ["9999-12-31", "0001-01-01"]
    elif kind == "number" or valid.isdigit():
        values += ["²", "2147483648"]
    return values


def sweep(
    staff: Staff,
    target: Target,
    real: str,
    forms: list[Form],
    query_names: list[str],
    last_line: LastLineHits,
) -> None:
    """Each field of each form once with each signature value, the others valid; every query
    argument at once with each signature value of a date and a number."""
    for form in forms:
        valid = {name: values[0] if values else "" for name, values in form.fields.items()}
        valid["csrf_token"] = staff.csrf
        if form.guessed:
            for value in SWEEP_VALUES:
                fields = dict.fromkeys(valid, value) | {"csrf_token": staff.csrf}
                send(staff, target, real, {}, fields, last_line)
            continue
        for name in sorted(valid.keys() - {"csrf_token"}):
            for value in signature_values(valid[name], form.kinds.get(name, "")):
                fields = valid | {name: value, "csrf_token": staff.csrf}
                if form.method == "GET":
                    send(staff, target, real, fields, None, last_line)
                else:
                    send(staff, target, real, {}, fields, last_line)
    if target.method == "GET":
        for value in SWEEP_VALUES:
            send(staff, target, real, dict.fromkeys(query_names, value), None, last_line)


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_no_page_answers_hostile_input_with_a_server_error(
    app: Flask,
    db: Session,
    seed: Seed,
    cheap_hashes: PasswordHasher,
    last_line_hits: LastLineHits,
    database_url: str,
) -> None:
    # PostgreSQL refuses what SQLite stores (NUL, over-long text, integers beyond 32 bits), so
    # it is fuzzed too, with fewer examples: its requests cost several times SQLite's.
    examples = EXAMPLES if database_url.startswith("sqlite") else max(3, EXAMPLES // 4)
    for role in ("admin", "viewer"):
        user = db.query(User).filter(User.email == f"{role}@example.org").one()
        user.password_hash = cheap_hashes.hash(ADMIN_PASSWORD)
    db.commit()
    world = seed_world(db, seed)
    targets = page_targets(app)
    assert len(targets) > 50, "the URL map lost its pages"
    admin = Staff(app, "admin")
    catalogue = catalogue_pages(admin, targets, world)
    assert {"department", "start", "page", "next"} <= catalogue.query_names
    viewer = Staff(app, "viewer")
    for target in targets:
        fuzz_target(admin, target, world, catalogue, examples, last_line_hits)
        if target.method == "GET":
            fuzz_target(viewer, target, world, catalogue, max(2, examples // 4), last_line_hits)
