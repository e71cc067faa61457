"""The example alert rules name only metrics the service exports, and Prometheus accepts them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from scheduler.observability.metrics import instruments
from scheduler.observability.outbox_collector import OutboxCollector
from scheduler.observability.queue_depth import QueueDepthCollector
from tests.conftest import unavailable

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
# Written by Prometheus itself for every scrape target, not by the service.
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "absent", "and", "or",
    "unless", "bool", "offset", "histogram_quantile", "on", "ignoring", "by", "without",
    "group_left", "group_right", "time", "vector", "scalar", "clamp_min", "clamp_max",
}  # fmt: skip
_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}


def exported_names() -> set[str]:
    """Every sample name the web app and the worker can export, from their own collectors."""
    families = []
    for metric in instruments().collectors():
        families += metric.describe()
    for collector in (OutboxCollector(sessions=None), QueueDepthCollector("memory://", ())):  # type: ignore[arg-type]
        families += collector.describe()
    names = set()
    for family in families:
        suffixes = _SUFFIXES.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    # Label lists of aggregations and vector matching.
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", w)}


def _rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_name_extraction_finds_metrics_and_skips_promql() -> None:
    expr = 'sum by (channel) (rate(a_total{x="y"}[5m])) / on() b > 0.2 or absent(up{job="w"})'
    assert metric_names(expr) == {"a_total", "b", "up"}


def test_every_rule_reads_metrics_the_service_exports() -> None:
    exported = exported_names()
    assert {"sbrt_reminder_lag_seconds", "sbrt_reminder_sends_total"} <= exported
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "ReminderLag", "SendFailureRate", "WorkerDown", "BeatDown", "Web5xx",
    }  # fmt: skip
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = names - exported - PROMETHEUS_OWN
        assert not unknown, f"{rule['alert']} reads metrics nobody exports: {unknown}"
        assert rule["labels"]["severity"] in {"page", "warning"}
        assert rule["annotations"]["summary"]


def test_promtool_accepts_the_rules_and_each_alert_fires_when_it_should() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package `prometheus`)")
    for args in (["check", "rules", RULES.name], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(
            [promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
