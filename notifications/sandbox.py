"""A Jinja sandbox whose renders are bounded in work, size and wall-clock time.

Admins edit message templates, and the same templates are rendered by the web workers (the
editor's preview) and by the send workers (every real message). Jinja's own sandbox stops
attribute escapes, not runaway work: ``range(10**9)``, nested loops, ``'x' * 10**9`` or a
recursive macro would hold a worker until it is killed.

Why the work is bounded instead of timing the render from outside: a wall-clock check in
Python (a signal, a watchdog thread) cannot interrupt a single C-level operation such as
building a gigabyte string, signals only reach the main thread, and a render in a
subprocess per message would cost a process start for every SMS. So every operation that can
do a lot of work in C is checked *before* it runs (ranges, ``*``, ``**``, ``+``, ``~``,
``%`` and ``format`` widths, size arguments of filters, the allowed methods), and everything
that can repeat (loop iterations, calls of macros, filters and methods) goes through a hook
that counts steps and checks the render's deadline. Between two hooks only a bounded amount of
work can happen, so the deadline is noticed within milliseconds of passing.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import wraps
from time import monotonic
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateRuntimeError
from jinja2.runtime import Undefined, markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment, modifies_known_mutable
from jinja2.utils import Namespace, _PassArg, pass_context, pass_eval_context
from jinja2.visitor import NodeTransformer

# Limits per render. Message templates loop over a course's few fractions and print a few
# hundred characters, so these leave room for any real template by orders of magnitude.
MAX_RANGE = 1_000  # items in one range()
MAX_STEPS = 20_000  # loop iterations, calls, filters and operators, across the whole render
MAX_TEXT = 20_000  # characters of output, and the size of any one value made on the way
MAX_TEXT_MADE = 1_000_000  # characters printed or joined in total, macros and blocks included
MAX_INT_BITS = 256  # integers made by * and ** (2**256 is a 78-digit number)
MAX_SIZE_ARGUMENT = 200  # width/count/separator arguments of filters that multiply their input
TIME_LIMIT_SECONDS = 0.5

# Filters whose extra arguments multiply the size of their result.
_SIZE_FILTERS = frozenset({"center", "indent", "wordwrap", "batch", "slice", "join", "replace"})
# The methods a template may call on built-in values; everything else (ljust, zfill,
# expandtabs, list.extend, dict.update ...) either grows a value in C or changes shared state.
_SAFE_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "format",
        "format_map",
        "get",
        "index",
        "isalnum",
        "isalpha",
        "isdigit",
        "islower",
        "isspace",
        "istitle",
        "isupper",
        "items",
        "keys",
        "lower",
        "lstrip",
        "partition",
        "replace",
        "rfind",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "values",
    }
)
# A %-format or str.format width or precision of five digits or more, or one taken from the
# arguments (``%*d``, ``{:{}}``), would let a short template ask C for a huge string.
_WIDE_FORMAT = re.compile(
    r"%(?:\([^)]*\))?[-+ #0]*(?:\*|\d{5,}|\d*\.(?:\*|\d{5,}))|\{[^{}]*:[^{}]*(?:\{|\d{5,})"
)

_ITERATE = "_bounded_iteration"
_CONCAT = "_bounded_concat"
_PRINT = "_bounded_print"
_VALUE = "_bounded_value"


class RenderLimitExceeded(SecurityError):
    """A render asked for more work, time or text than a message template may use."""


class TemplateRenderError(TemplateRuntimeError):
    """A render failed with a Python error (e.g. division by zero); the text is sanitised."""


def _too_long() -> RenderLimitExceeded:
    return RenderLimitExceeded(f"The template makes a text longer than {MAX_TEXT} characters.")


@dataclass
class _Budget:
    deadline: float
    steps: int = 0
    text_made: int = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise RenderLimitExceeded(
                f"The template does too much work (more than {MAX_STEPS} steps)."
            )
        if monotonic() > self.deadline:
            raise RenderLimitExceeded(
                f"The template took longer than {TIME_LIMIT_SECONDS:g} s to render."
            )

    def made(self, characters: int) -> None:
        self.text_made += characters
        if self.text_made > MAX_TEXT_MADE:
            raise RenderLimitExceeded(
                f"The template makes more than {MAX_TEXT_MADE} characters of text in all."
            )


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "template_render_budget", default=None
)


def _step() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.step()


def _made(characters: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.made(characters)


def _weight(value: Any) -> int:
    """Roughly how many characters ``value`` prints as; stops counting past MAX_TEXT.

    A list can hold one long string many times over (``[s] * 1000``) at little memory cost,
    but printing or joining it costs the full length, so contents are counted, not items.
    """
    total, stack = 0, [value]
    while stack and total <= MAX_TEXT:
        item = stack.pop()
        total += 1
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, Namespace):
            stack.append(getattr(item, "_Namespace__attrs", {}))
    return total


def _check_size(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _too_long()
    elif isinstance(value, list | tuple | set | frozenset | dict | Namespace) and (
        _weight(value) > MAX_TEXT
    ):
        raise _too_long()
    return value


def _check_format(text: str) -> None:
    if _WIDE_FORMAT.search(text):
        raise RenderLimitExceeded(
            "The template uses a format width or precision that is too large."
        )


def _materialise(value: Any) -> Any:
    """A lazy sequence (map, select) as a list, refused as soon as it grows too large."""
    if not isinstance(value, Iterator) or isinstance(value, Undefined):
        return value
    items, weight = [], 0
    for item in value:
        _step()
        weight += _weight(item)
        if weight > MAX_TEXT:
            raise _too_long()
        items.append(item)
    return items


def bounded_range(*args: int) -> range:
    """``range`` for templates: at most MAX_RANGE items."""
    rng = range(*args)
    try:
        size = len(rng)
    except OverflowError:  # more items than a C size can count
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise RenderLimitExceeded(f"A range in the template has more than {MAX_RANGE} items.")
    return rng


@pass_context
def _bounded_iteration(context: Any, iterable: Any) -> Iterator[Any]:
    """Every for-loop iterates through this: one step per item."""
    for item in iterable:
        _step()
        yield item


@pass_context
def _bounded_print(context: Any, value: Any) -> Any:
    """Every ``{{ }}`` and text block goes through this, inside macros and blocks too."""
    _made(_weight(value))
    return value


@pass_context
def _bounded_value(context: Any, value: Any) -> Any:
    """List, tuple and dict literals: ``[a, a, a]`` can repeat a long value."""
    return _check_size(value)


@pass_eval_context
def _bounded_concat(eval_ctx: Any, parts: list[Any]) -> str:
    """The ``~`` operator, refusing a result longer than MAX_TEXT before it is built."""
    texts = [p if isinstance(p, str) else str(p) for p in parts]
    length = sum(len(t) for t in texts)
    if length > MAX_TEXT:
        raise _too_long()
    _step()
    _made(length)
    return markup_join(parts) if eval_ctx.autoescape else str_join(parts)


def _filter(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _BoundWork(NodeTransformer):
    """Route loops, prints, literals and ``~`` through the counting filters above."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - visitor naming
        node = self.generic_visit(node)
        node.iter = _filter(node.iter, _ITERATE)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:  # noqa: N802 - visitor naming
        node = self.generic_visit(node)
        # Text blocks are wrapped too: a loop repeats them like any printed value.
        node.nodes = [_filter(child, _PRINT) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802 - visitor naming
        node = self.generic_visit(node)
        return _filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT)

    def visit_List(self, node: nodes.List) -> nodes.Node:  # noqa: N802 - visitor naming
        return _filter(self.generic_visit(node), _VALUE)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:  # noqa: N802 - visitor naming
        return _filter(self.generic_visit(node), _VALUE)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:  # noqa: N802 - visitor naming
        node = self.generic_visit(node)
        return _filter(node, _VALUE) if node.ctx == "load" else node


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    size_filter = name in _SIZE_FILTERS
    # Filters marked pass_context/pass_eval_context/pass_environment get that first.
    offset = 0 if _PassArg.from_obj(func) is None else 1

    @wraps(func)  # keeps Jinja's pass_context/pass_eval_context marker
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        args = list(args)
        if len(args) > offset:
            args[offset] = _materialise(args[offset])
            if name == "format" and isinstance(args[offset], str):
                _check_format(args[offset])
        if size_filter:
            for value in (*args[offset + 1 :], *kwargs.values()):
                too_big = (isinstance(value, int) and abs(value) > MAX_SIZE_ARGUMENT) or (
                    isinstance(value, str) and len(value) > MAX_SIZE_ARGUMENT
                )
                if too_big:
                    raise RenderLimitExceeded(
                        f"The {name} filter accepts sizes and texts up to {MAX_SIZE_ARGUMENT}."
                    )
        return _check_size(func(*args, **kwargs))

    return bounded


class BoundedSandboxedEnvironment(SandboxedEnvironment):
    """The sandbox with every render bounded in steps, size and time (see the module doc)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # lipsum builds text in a Python loop sized by its arguments; templates do not need it.
        self.globals.pop("lipsum", None)
        self.globals["range"] = bounded_range
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters[_ITERATE] = _bounded_iteration
        self.filters[_CONCAT] = _bounded_concat
        self.filters[_PRINT] = _bounded_print
        self.filters[_VALUE] = _bounded_value

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _BoundWork().visit(super()._parse(source, name, filename))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str | list | tuple | dict | set) and callable(value):
            return attr in _SAFE_METHODS and not modifies_known_mutable(obj, attr)
        return True

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)
        return wrapped

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        if operator == "*":
            _check_product(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            sized = (str, list, tuple)
            both = isinstance(left, sized) and isinstance(right, sized)
            if both and _weight(left) + _weight(right) > MAX_TEXT:
                raise _too_long()
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _step()
        owner = getattr(__obj, "__self__", None)
        if getattr(__obj, "__name__", None) == "replace" and isinstance(owner, str):
            new = args[1] if len(args) > 1 else ""
            if isinstance(new, str) and (len(owner) + 1) * max(len(new), 1) > MAX_TEXT:
                raise _too_long()
        return _check_size(super().call(__context, __obj, *args, **kwargs))


def _check_product(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            if _weight(seq) * max(times, 0) > MAX_TEXT:
                raise _too_long()
            return
    ints = isinstance(left, int) and isinstance(right, int)
    if ints and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
        raise RenderLimitExceeded("The template computes a number that is too large.")


def _check_power(base: Any, exponent: Any) -> None:
    ints = isinstance(base, int) and isinstance(exponent, int)
    if ints and abs(base) > 1 and exponent > 0 and abs(base).bit_length() * exponent > MAX_INT_BITS:
        raise RenderLimitExceeded("The template computes a number that is too large.")


def compile_bounded(environment: SandboxedEnvironment, source: str) -> Any:
    """``environment.from_string(source)``, with Python's own refusals as template errors.

    Parsing and compiling recurse over the template's nesting, so a source of thousands of
    brackets is a RecursionError (or a SyntaxError from Python's compiler), not a Jinja error.
    """
    try:
        return environment.from_string(source)
    except TemplateError:
        raise
    except (RecursionError, MemoryError, SyntaxError):
        raise RenderLimitExceeded("The template is nested too deeply.") from None
    except Exception as exc:  # a compiler refusal Jinja does not translate
        raise TemplateRenderError(safe_error_text(exc)) from None


_shared_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "template_render_shared_deadline", default=None
)


class SharedTimeLimit:
    """A time limit for all the renders made inside ``with limit:``, on top of each one's own.

    A page that previews many messages would otherwise wait up to TIME_LIMIT_SECONDS for each
    one a runaway template renders; once the shared time is spent, further renders fail at
    once (and the page shows them without a preview).
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = monotonic() + seconds
        self._tokens: list[contextvars.Token[float | None]] = []

    def __enter__(self) -> SharedTimeLimit:
        self._tokens.append(_shared_deadline.set(self.deadline))
        return self

    def __exit__(self, *exc: object) -> None:
        _shared_deadline.reset(self._tokens.pop())


def render_bounded(template: Any, context: Mapping[str, Any]) -> str:
    """Render ``template`` (from a bounded environment) within the limits of this module.

    Jinja's own errors come out as they are; anything else a template can provoke (a division
    by zero, a type error, too deep a recursion) becomes a :class:`TemplateRenderError` with a
    sanitised message, so callers need to handle only ``TemplateError``.
    """
    deadline = monotonic() + TIME_LIMIT_SECONDS
    shared = _shared_deadline.get()
    if shared is not None:
        if monotonic() >= shared:
            raise RenderLimitExceeded("No time is left for rendering more messages here.")
        deadline = min(deadline, shared)
    token = _budget.set(_Budget(deadline=deadline))
    try:
        out: list[str] = []
        length = 0
        for chunk in template.generate(context):
            length += len(chunk)
            if length > MAX_TEXT:
                raise RenderLimitExceeded(
                    f"The message would be longer than {MAX_TEXT} characters."
                )
            out.append(chunk)
        return "".join(out)
    except TemplateError:
        raise
    except RecursionError:
        raise RenderLimitExceeded("The template calls itself too deeply.") from None
    except MemoryError:
        raise RenderLimitExceeded("The template needs too much memory.") from None
    except Exception as exc:  # whatever Python raised inside the template's expressions
        raise TemplateRenderError(safe_error_text(exc)) from None
    finally:
        _budget.reset(token)


# --- error text fit to show ---------------------------------------------------------------------

_ADDRESS = re.compile(r"\s+at\s+0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")
_PATH = re.compile(r"(?<![\w:/.])(?:[A-Za-z]:)?(?:[/\\][\w.@+-]+){2,}[/\\]?")
_MAX_ERROR_TEXT = 300


def safe_error_text(exc: BaseException | str) -> str:
    """An error's message without memory addresses or server paths, fit to show to staff.

    Jinja quotes objects with their ``repr`` (``<function x at 0x7f...>``) and Python errors
    can name files on the server; neither belongs on a page.
    """
    text = str(exc) if not isinstance(exc, str) else exc
    text = _ADDRESS.sub("", text)
    text = _PATH.sub("[path]", text)
    text = " ".join(text.split())
    if not text and isinstance(exc, BaseException):
        text = type(exc).__name__
    if len(text) > _MAX_ERROR_TEXT:
        text = text[: _MAX_ERROR_TEXT - 1] + "…"
    return text
