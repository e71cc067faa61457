"""Declaring API operations once: the route, its input and output models, role, errors and audit.

Each view is a plain function that receives parsed pydantic models and returns one (or a list);
the wrapper here authenticates, parses, calls it and serialises. The same declarations feed
the OpenAPI document, so the published contract cannot drift from what the code accepts.

Every operation is one unit of work (``unit_of_work.run``): the view's use cases only flush,
and the wrapper commits once, after writing the operation's audit entry in the same
transaction. A change and its audit entry are therefore stored together or not at all. Every
operation that changes state, and every read whose answer holds patient data, must declare
its :class:`Audit`; declaring one without it fails at import, so no such operation can exist
unaudited.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, g, request
from pydantic import BaseModel, TypeAdapter
from werkzeug.exceptions import UnsupportedMediaType

from scheduler import unit_of_work
from scheduler.errors import NotFound
from scheduler.models import (
    Closure,
    Course,
    Department,
    Downtime,
    Fraction,
    Linac,
    Patient,
    Resource,
)
from web import audit
from web.api.security import authenticate_request
from web.db import get_session

API_PREFIX = "/api/v1"
# Ids are 32-bit integers in the database; a larger one can only be "not found", and letting it
# reach the driver would be an overflow error instead.
MAX_ID = 2**31 - 1
# Path ids take any size here: ``_handler`` refuses ids beyond MAX_ID with a 404 once the caller
# is authenticated, so an unauthenticated caller learns nothing from the id (the pages' ``int``
# converter refuses them while routing).
ID_CONVERTER = "api_id"
_PATH_PARAM = re.compile(r"{(\w+)}")
# Fields that make an answer patient data: a read returning any of them is audited.
PHI_FIELDS = frozenset({"patient_id", "mrn", "date_of_birth"})


@dataclass(frozen=True)
class Audit:
    """The audit entry an operation writes: ``action`` on a record of type ``subject``.

    The record's id comes from the path parameter named ``id_from`` when there is one, else from
    that attribute of the answer (for a list, the ids of every record in it). By default
    ``id_from`` is ``<subject>_id`` if the path has it, else ``id``.
    """

    action: str
    subject: str
    id_from: str | None = None


def _holds_phi(model: type[BaseModel] | None, seen: frozenset[type] = frozenset()) -> bool:
    """Whether an answer of this model (or any model nested in it) carries patient data."""
    if model is None or model in seen:
        return False
    for name, info in model.model_fields.items():
        if name in PHI_FIELDS:
            return True
        for nested in _models_in(info.annotation):
            if _holds_phi(nested, seen | {model}):
                return True
    return False


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


# The department-owned record each path id names. The caller's session is narrowed to their
# departments (scheduler.access), so one outside them is not found -- 404, not 403, so that
# the answer does not reveal that it exists -- before the operation runs at all.
DEPARTMENT_RECORDS: dict[str, type] = {
    "department_id": Department,
    "closure_id": Closure,
    "linac_id": Linac,
    "downtime_id": Downtime,
    "resource_id": Resource,
    "patient_id": Patient,
    "course_id": Course,
    "fraction_id": Fraction,
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI form, relative to API_PREFIX: /courses/{course_id}
    view: Callable[..., Any]
    summary: str
    tag: str
    role: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    many: bool = False
    status: int = 200
    errors: tuple[int, ...] = ()
    path_enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    audit: Audit | None = None

    @property
    def changes_state(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")

    @property
    def reads_phi(self) -> bool:
        return _holds_phi(self.response)

    @property
    def operation_id(self) -> str:
        return self.view.__name__

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def flask_rule(self) -> str:
        def convert(match: re.Match[str]) -> str:
            name = match.group(1)
            return f"<{name}>" if name in self.path_enums else f"<{ID_CONVERTER}:{name}>"

        return _PATH_PARAM.sub(convert, self.path)

    @property
    def description(self) -> str:
        return (self.view.__doc__ or "").strip()

    def response_adapter(self) -> TypeAdapter[Any] | None:
        if self.response is None:
            return None
        return TypeAdapter(list[self.response] if self.many else self.response)


class ApiRoutes:
    """A registry of operations, turned into a Flask blueprint per app."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def operation(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        role: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        many: bool = False,
        status: int = 200,
        errors: Sequence[int] = (),
        path_enums: dict[str, tuple[str, ...]] | None = None,
        audit: Audit | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(view: Callable[..., Any]) -> Callable[..., Any]:
            op = Operation(
                method=method,
                path=path,
                view=view,
                summary=summary,
                tag=tag,
                role=role,
                body=body,
                query=query,
                response=response,
                many=many,
                status=status,
                errors=tuple(errors),
                path_enums=dict(path_enums or {}),
                audit=audit,
            )
            if audit is None and (op.changes_state or op.reads_phi):
                raise TypeError(
                    f"{method} {path} changes state or answers with patient data: "
                    "declare the audit entry it writes (audit=Audit(...))"
                )
            self.operations.append(op)
            return view

        return register

    def blueprint(self) -> Blueprint:
        bp = Blueprint("api", __name__, url_prefix=API_PREFIX)
        for op in self.operations:
            bp.add_url_rule(
                op.flask_rule,
                endpoint=op.operation_id,
                view_func=_handler(op),
                methods=[op.method],
            )
        return bp


def _handler(op: Operation) -> Callable[..., Response]:
    adapter = op.response_adapter()

    def action(path: dict[str, Any]) -> Any:
        user = authenticate_request(op.role)
        for name, value in path.items():
            if name in op.path_enums:
                if value not in op.path_enums[name]:
                    raise NotFound(f"Unknown {name} {value!r}.")
            elif not 0 < value <= MAX_ID:
                raise NotFound(f"No record with {name} {value}.")
        _require_visible(path)
        kwargs = dict(path)
        if op.query is not None:
            kwargs["query"] = op.query.model_validate(request.args.to_dict())
        if op.body is not None:
            if not request.is_json:
                raise UnsupportedMediaType("Send the body as application/json.")
            kwargs["body"] = op.body.model_validate_json(request.get_data() or b"null")
        g.pop(_AUDIT_DETAIL, None)  # a retried action starts afresh
        result = op.view(**kwargs)
        # Views may return ORM rows; validating from attributes turns them into the model, read
        # while the transaction is still open.
        answer = None if adapter is None else adapter.validate_python(result, from_attributes=True)
        if op.audit is not None:
            _record(op, op.audit, path, answer, actor_id=user.id)
        return answer

    def handle(**path: Any) -> Response:
        answer = unit_of_work.run(get_session(), lambda: action(path))
        if adapter is None:
            return Response(status=op.status)
        body = adapter.dump_json(answer)
        return Response(body, status=op.status, mimetype="application/json")

    return handle


_AUDIT_DETAIL = "api_audit_detail"


def add_audit_detail(**detail: Any) -> None:
    """Ids or flags a view adds to its operation's audit entry (never names, phones or text)."""
    g.setdefault(_AUDIT_DETAIL, {}).update(detail)


def _record(
    op: Operation, spec: Audit, path: dict[str, Any], answer: Any, *, actor_id: int
) -> None:
    key = spec.id_from or (f"{spec.subject}_id" if f"{spec.subject}_id" in op.path_params else "id")
    detail: dict[str, Any] = {name: value for name, value in path.items() if name != key}
    if key in path:
        subject_id = path[key]
    elif isinstance(answer, list):
        subject_id = None
        detail["ids"] = [getattr(item, key) for item in answer]
    else:
        subject_id = getattr(answer, key, None)
    detail.update(g.pop(_AUDIT_DETAIL, {}))
    audit.record(spec.action, spec.subject, subject_id, actor_id=actor_id, **detail)


def _require_visible(path: dict[str, Any]) -> None:
    session = get_session()
    for name, value in path.items():
        record = DEPARTMENT_RECORDS.get(name)
        if record is not None and session.get(record, value) is None:
            raise NotFound(f"No record with {name} {value}.")


routes = ApiRoutes()
