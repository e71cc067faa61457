"""Declaring API operations once: the route, its input and output models, role and errors.

Each view is a plain function that receives parsed pydantic models and returns one (or a list);
the wrapper here authenticates, parses, calls it and serialises. The same declarations feed
the OpenAPI document, so the published contract cannot drift from what the code accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, request
from pydantic import BaseModel, TypeAdapter
from werkzeug.exceptions import UnsupportedMediaType

from scheduler.errors import NotFound
from web.api.security import authenticate_request

API_PREFIX = "/api/v1"
# Ids are 32-bit integers in the database; a larger one can only be "not found", and letting it
# reach the driver would be an overflow error instead.
MAX_ID = 2**31 - 1
# Path ids take any size here: ``_handler`` refuses ids beyond MAX_ID with a 404 once the caller
# is authenticated, so an unauthenticated caller learns nothing from the id (the pages' ``int``
# converter refuses them while routing).
ID_CONVERTER = "api_id"
_PATH_PARAM = re.compile(r"{(\w+)}")


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
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(view: Callable[..., Any]) -> Callable[..., Any]:
            self.operations.append(
                Operation(
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
                )
            )
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

    def handle(**path: Any) -> Response:
        authenticate_request(op.role)
        for name, value in path.items():
            if name in op.path_enums:
                if value not in op.path_enums[name]:
                    raise NotFound(f"Unknown {name} {value!r}.")
            elif not 0 < value <= MAX_ID:
                raise NotFound(f"No record with {name} {value}.")
        kwargs = dict(path)
        if op.query is not None:
            kwargs["query"] = op.query.model_validate(request.args.to_dict())
        if op.body is not None:
            if not request.is_json:
                raise UnsupportedMediaType("Send the body as application/json.")
            kwargs["body"] = op.body.model_validate_json(request.get_data() or b"null")
        result = op.view(**kwargs)
        if adapter is None:
            return Response(status=op.status)
        # Views may return ORM rows; validating from attributes turns them into the model.
        body = adapter.dump_json(adapter.validate_python(result, from_attributes=True))
        return Response(body, status=op.status, mimetype="application/json")

    handle.__name__ = op.operation_id
    handle.__doc__ = op.view.__doc__
    return handle


routes = ApiRoutes()
