"""Reading a scenario: JSON Schema validation, the checks a schema cannot make, and defaults.

A scenario names its linacs and protocols by name and code; every cross-reference is checked
here, so a run never starts on a scenario that would fail half-way through the year.
"""

from __future__ import annotations

import copy
import json
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from scheduler.protocols import DEFAULT_PROTOCOLS, PREP_INSTRUCTIONS
from scheduler.simulation.pathway import pathway_problems

SCHEMA_FILE = "scenario.schema.json"
# A course becomes known this many days before it is ready to treat, unless the scenario says.
DEFAULT_ARRIVAL_LEAD_DAYS = 7


class ScenarioError(ValueError):
    """The scenario cannot be run; each error names the JSON path it is about."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid scenario:\n" + "\n".join(f"- {e}" for e in self.errors))


@lru_cache(maxsize=1)
def scenario_schema() -> dict[str, Any]:
    """The published JSON Schema of a scenario (draft 2020-12)."""
    text = resources.files("scheduler.simulation").joinpath(SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)


def _json_path(path: Any) -> str:
    """("linacs", 2, "name") -> "linacs[2].name"; the document itself is "scenario"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "scenario"


def _message(error: ValidationError) -> str:
    # A oneOf failure's own message repeats the whole instance; the closest branch says more.
    if error.validator == "oneOf" and error.context:
        best = min(error.context, key=lambda e: (len(e.path), e.validator == "type"))
        return _message_at(error.absolute_path, best)
    return f"{_json_path(error.absolute_path)}: {error.message}"


def _message_at(base: Any, error: ValidationError) -> str:
    return f"{_json_path([*base, *error.path])}: {error.message}"


def load_scenario(source: dict[str, Any] | Path | str) -> dict[str, Any]:
    """The scenario validated, cross-checked and with every default filled in.

    ``source`` is the parsed document, or the path of a JSON file. Raises ScenarioError
    listing every problem found, each prefixed with its JSON path.
    """
    if isinstance(source, dict):
        document = copy.deepcopy(source)
    else:
        path = Path(source)
        try:
            document = json.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ScenarioError([f"scenario: cannot read {path}: {exc.strerror}"]) from exc
        except json.JSONDecodeError as exc:
            raise ScenarioError(
                [f"scenario: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"]
            ) from exc
    validator = Draft202012Validator(scenario_schema())
    errors = sorted(
        (_message(e) for e in validator.iter_errors(document)),
    )
    if errors:
        raise ScenarioError(errors)
    scenario = _with_defaults(document)
    problems = _cross_check(scenario)
    if problems:
        raise ScenarioError(problems)
    return scenario


def _triangle(value: dict[str, Any] | None, default: dict[str, float]) -> dict[str, float]:
    return dict(value or default)


def _with_defaults(document: dict[str, Any]) -> dict[str, Any]:
    s = document
    s.setdefault("name", "Simulation")
    s.setdefault("warmup_days", 0)
    s.setdefault("pathway", None)
    department = s["department"]
    department.setdefault("closures", [])
    department.setdefault("physicist_roster", None)
    for linac in s["linacs"]:
        linac.setdefault("capabilities", [])
        linac.setdefault("beam_group", None)
        linac.setdefault("opening_hours", None)
        linac.setdefault("active", True)
    s["protocols"] = [_protocol(p) for p in s["protocols"]]
    arrivals = s["arrivals"]
    if isinstance(arrivals, dict):
        arrivals["lead_time_days"] = _triangle(
            arrivals.get("lead_time_days"), {"min": 3, "mode": 7, "max": 21}
        )
        arrivals.setdefault("preferred_window_share", 0.0)
        arrivals.setdefault("preferred_windows", [["08:00", "12:00"], ["13:00", "17:00"]])
        arrivals.setdefault("priority_share", {"3": 1.0})
    else:
        start = date.fromisoformat(s["start"])
        for item in arrivals:
            item.setdefault("priority", 3)
            item.setdefault("preferred_window", None)
            if "arrival" not in item:
                ready = date.fromisoformat(item["ready"])
                arrival = max(ready - timedelta(days=DEFAULT_ARRIVAL_LEAD_DAYS), start)
                item["arrival"] = arrival.isoformat()
    disruptions = s.setdefault("disruptions", {})
    disruptions.setdefault("missed_fraction_probability", 0.0)
    disruptions.setdefault("downtimes", [])
    for downtime in disruptions["downtimes"]:
        downtime.setdefault("kind", "planned")
        downtime.setdefault("reason", "")
    random_downtime = disruptions.setdefault("random_downtime", None)
    if random_downtime is not None:
        random_downtime["hours"] = _triangle(
            random_downtime.get("hours"), {"min": 1, "mode": 3, "max": 10}
        )
    return s


def _protocol(item: str | dict[str, Any]) -> dict[str, Any]:
    """A shipped default named by its code, or a full protocol object (left for the records
    use case to complete and check); a code that is not shipped is kept for _cross_check."""
    if isinstance(item, str):
        for shipped in DEFAULT_PROTOCOLS:
            if shipped["code"] == item:
                found = copy.deepcopy(shipped)
                found["prep_instructions"] = PREP_INSTRUCTIONS[found["site"]]
                return found
        return {"code": item, "unknown_default": True}
    protocol = dict(item)
    protocol.setdefault("name", protocol["code"])
    protocol.setdefault("site", "oligomets")
    protocol.setdefault("prep_instructions", PREP_INSTRUCTIONS.get(protocol["site"], ""))
    return protocol


def _cross_check(s: dict[str, Any]) -> list[str]:
    """References between parts, dates and distributions: what the schema cannot say."""
    errors: list[str] = []
    shipped = ", ".join(p["code"] for p in DEFAULT_PROTOCOLS)
    codes: set[str] = set()
    for i, protocol in enumerate(s["protocols"]):
        if protocol.pop("unknown_default", False):
            errors.append(f"protocols[{i}]: no shipped protocol {protocol['code']!r} ({shipped})")
        if protocol["code"] in codes:
            errors.append(f"protocols[{i}].code: {protocol['code']!r} is listed twice")
        codes.add(protocol["code"])
    names: set[str] = set()
    for i, linac in enumerate(s["linacs"]):
        if linac["name"] in names:
            errors.append(f"linacs[{i}].name: {linac['name']!r} is used by another linac")
        names.add(linac["name"])
    for i, closure in enumerate(s["department"]["closures"]):
        _check_day(errors, f"department.closures[{i}].day", closure["day"])
    try:
        ZoneInfo(s["department"]["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(
            f"department.timezone: {s['department']['timezone']!r} is not an IANA time zone"
        )
    if s["warmup_days"] >= s["days"]:
        errors.append("warmup_days: must be less than days")
    _check_day(errors, "start", s["start"])
    arrivals = s["arrivals"]
    if isinstance(arrivals, dict):
        for code in arrivals["weekly_rate"]:
            if code not in codes:
                errors.append(f"arrivals.weekly_rate.{code}: not one of the scenario's protocols")
        _check_triangle(errors, "arrivals.lead_time_days", arrivals["lead_time_days"])
        for i, window in enumerate(arrivals["preferred_windows"]):
            _check_window(errors, f"arrivals.preferred_windows[{i}]", window)
        if arrivals["preferred_window_share"] > 0 and not arrivals["preferred_windows"]:
            errors.append("arrivals.preferred_windows: needed when preferred_window_share > 0")
        if sum(arrivals["priority_share"].values()) <= 0:
            errors.append("arrivals.priority_share: the shares must not all be 0")
    else:
        for i, item in enumerate(arrivals):
            where = f"arrivals[{i}]"
            if item["protocol"] not in codes:
                errors.append(f"{where}.protocol: {item['protocol']!r} is not in protocols")
            ready = _check_day(errors, f"{where}.ready", item["ready"])
            arrival = _check_day(errors, f"{where}.arrival", item["arrival"])
            if ready and arrival and arrival > ready:
                errors.append(f"{where}.arrival: must not be after the ready date")
            if item["preferred_window"] is not None:
                _check_window(errors, f"{where}.preferred_window", item["preferred_window"])
    disruptions = s["disruptions"]
    for i, downtime in enumerate(disruptions["downtimes"]):
        where = f"disruptions.downtimes[{i}]"
        if downtime["linac"] not in names:
            errors.append(f"{where}.linac: no linac named {downtime['linac']!r}")
        starts = _check_instant(errors, f"{where}.starts_at", downtime["starts_at"])
        ends = _check_instant(errors, f"{where}.ends_at", downtime["ends_at"])
        if starts and ends and ends <= starts:
            errors.append(f"{where}.ends_at: must be after starts_at")
    if disruptions["random_downtime"] is not None:
        _check_triangle(
            errors, "disruptions.random_downtime.hours", disruptions["random_downtime"]["hours"]
        )
    if s["pathway"] is not None:
        errors += pathway_problems(s["pathway"])
    return errors


def _check_day(errors: list[str], where: str, value: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(f"{where}: {value!r} is not a calendar date")
        return None


def _check_instant(errors: list[str], where: str, value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        errors.append(f"{where}: {value!r} is not an ISO 8601 date and time")
        return None


def _check_window(errors: list[str], where: str, window: list[str]) -> None:
    if time.fromisoformat(window[0]) >= time.fromisoformat(window[1]):
        errors.append(f"{where}: the start must be before the end")


def _check_triangle(errors: list[str], where: str, t: dict[str, float]) -> None:
    if not t["min"] <= t["mode"] <= t["max"]:
        errors.append(f"{where}: needs min <= mode <= max")
