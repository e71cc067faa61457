"""Edited templates cannot hold a worker: renders are bounded in work, size and time, Python
errors become template errors, and error text shows no object addresses or server paths."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from jinja2 import TemplateError

from notifications import rendering, sandbox, template_store
from notifications.rendering import render_source
from notifications.sandbox import RenderLimitExceeded, TemplateRenderError, safe_error_text

REPO_ROOT = Path(__file__).resolve().parents[2]
SMS_START = "{{ clinic_sms_name }}: visit {{ first.sms_when }}. {{ link }} Reply C to confirm"


def test_a_range_of_a_billion_is_a_template_error_the_editor_can_show() -> None:
    with pytest.raises(RenderLimitExceeded, match="more than 1000 items"):
        render_source("{{ range(10**9)|length }}", {})
    check = template_store.check_source("confirmation", "sms", "en", "{{ range(10**9) }}")
    assert check.problems == [
        "The template does not render: A range in the template has more than 1000 items."
    ]


def test_nested_loops_stop_at_the_step_budget() -> None:
    loops = "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(RenderLimitExceeded, match="too much work"):
        render_source(loops, {})
    assert time.monotonic() - started < sandbox.TIME_LIMIT_SECONDS + 1


def test_the_wall_clock_limit_stops_a_render_that_stays_within_the_step_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sandbox, "MAX_STEPS", 10**12)
    monkeypatch.setattr(sandbox, "TIME_LIMIT_SECONDS", 0.2)
    loops = (
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    started = time.monotonic()
    with pytest.raises(RenderLimitExceeded, match="took longer than 0.2 s"):
        render_source(loops, {})
    assert time.monotonic() - started < 1.5


def test_a_preview_of_runaway_templates_does_not_hold_the_process() -> None:
    """Checked in a separate process, so a render that never ends fails the test, not the run.

    Three nested loops of 1000 (a billion steps) and a macro that calls itself twice per level
    (2**60 calls, no loop at all) are what an admin's typo or a curious attacker produces.
    """
    script = textwrap.dedent(
        """
        from notifications import template_store
        sources = [
            "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
            "{{ f(60) }}",
        ]
        for source in sources:
            check = template_store.check_source("confirmation", "sms", "en", source)
            print(check.problems[0])
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "The template does not render: The template does too much work (more than 20000 steps)."
    )
    assert lines[1].startswith("The template does not render: The template ")
    # The preview renders a template once per sample variant and stops at the first failure.
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ [1] * 10**9 }}",
        "{{ 9**9**9 }}",
        "{% set ns = namespace(n=99999999999) %}{% for i in range(30) %}"
        "{% set ns.n = ns.n * ns.n %}"
        "{% endfor %}{{ ns.n }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        "{{ 'x'|center(10**9) }}",
        "{{ 'x'|indent(10**9) }}",
        "{{ range(1000)|join('x' * 10000) }}",
        "{{ ('x' * 100)|replace('', 'y' * 1000) }}",
        "{{ ('x' * 100).replace('', 'y' * 1000) }}",
        "{{ range(10**9, 0, -1)|length }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '%(a)0999999999d' % {'a': 1} }}",
        "{{ '%*d' % (10**9, 1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '{:{}}'.format(1, 10**9) }}",
        "{{ '%0999999999d'|format(1) }}",
        # One long value repeated by literals costs its full length when printed.
        "{% set s = 'x' * 5000 %}{% set l = [s, s, s, s, s] %}{{ [l, l, l, l, l] }}",
        # A macro's output is built in a buffer before it is returned or printed.
        "{% macro m() %}{% for i in range(1000) %}{% for j in range(90) %}{{ 'x' * 20000 }}"
        "{% endfor %}{% endfor %}{% endmacro %}{{ m()|length }}",
        "{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}",
    ],
)
def test_values_that_would_grow_in_c_are_refused_before_they_are_built(source: str) -> None:
    with pytest.raises(RenderLimitExceeded):
        render_source(source, {})


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x'.ljust(10**9) }}",  # methods that pad or repeat are not offered
        "{{ 'x'.zfill(10**9) }}",
        "{% set l = [1] %}{{ l.extend(l) }}",  # nor methods that change shared values
        "{{ lipsum(10**6) }}",
    ],
)
def test_methods_and_globals_that_grow_values_are_not_available(source: str) -> None:
    with pytest.raises(TemplateError):
        render_source(source, {})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ 'a' + 1 }}", 'can only concatenate str (not "int") to str'),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "calls itself too deeply"),
        ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "nested too deeply"),
    ],
)
def test_python_errors_in_a_template_are_template_errors(source: str, message: str) -> None:
    with pytest.raises((TemplateRenderError, RenderLimitExceeded)) as raised:
        render_source(source, {})
    assert message in str(raised.value)
    check = template_store.check_source("confirmation", "sms", "en", source)
    assert check.problems and message in check.problems[0]


def test_error_text_keeps_object_addresses_and_server_paths_out() -> None:
    # Jinja names a missing key by its repr, e.g. "<function bounded_range at 0x7f...>".
    check = template_store.check_source("confirmation", "sms", "en", "{{ {}[range] }}")
    (problem,) = check.problems
    assert "dict object has no element <function bounded_range>" in problem
    assert "0x" not in problem
    # A missing include names the directory it searched.
    check = template_store.check_source("confirmation", "sms", "en", "{% include 'nope.txt' %}")
    (problem,) = check.problems
    assert str(rendering.TEMPLATE_DIR) not in problem and "/notifications/" not in problem
    assert "'nope.txt' not found" in problem
    assert safe_error_text("at <function f at 0x7f3a2b1c0d40> in /srv/app/x/y.py") == (
        "at <function f> in [path]"
    )


def test_ordinary_templates_render_as_before() -> None:
    source = (
        "{% for x in range(3) %}{{ loop.index }}{{ x }}{% endfor %} {{ 'a' ~ 'b' }} "
        "{{ [1, 2]|join(',') }} {% for k, v in {'k': 1}.items() %}{{ k }}={{ v }}{% endfor %} "
        "{{ name.upper() }} {{ '%05.1f'|format(3.14159) }} {{ 'x' * 3 }} {{ 2 ** 10 }} "
        "{{ missing|default('-') }} {{ range(3, 0, -1)|map('string')|join }}"
    )
    assert render_source(source, {"name": "ann"}) == ("102132 ab 1,2 k=1 ANN 003.1 xxx 1024 - 321")
    assert render_source("<p>{{ name }}</p>", {"name": "<i>"}, html=True) == "<p>&lt;i&gt;</p>"
    for kind in template_store.KINDS:
        for part in template_store.PARTS:
            for language in template_store.LANGUAGES:
                source = template_store.shipped_source(kind, part, language)
                if source:
                    assert template_store.check_source(kind, part, language, source).ok
    # A branch no sample takes still passes the save-time check: real sends are checked too.
    branching = "{% if given_name == 'Zed' %}{{ 'recnac'|reverse }} {% endif %}" + SMS_START
    assert template_store.check_source("confirmation", "sms", "en", branching).ok
