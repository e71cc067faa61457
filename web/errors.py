"""Error responses: RFC 9457 problem details for the API, Flask's HTML pages elsewhere."""

from __future__ import annotations

import dataclasses
import re
import traceback
from datetime import date, datetime
from typing import Any

from flask import Flask, Response, current_app, json, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, InternalServerError

from scheduler.errors import Conflict, InvalidInput, RulesBroken, ServiceError

PROBLEM_MIMETYPE = "application/problem+json"
# Problem types are URNs: stable identifiers clients can switch on, with no promise of a page.
PROBLEM_TYPE_PREFIX = "urn:sbrt-scheduler:problem:"


def wants_problem_json() -> bool:
    return request.path.startswith("/api/")


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **members: Any,
) -> Response:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update({k: _jsonable(v) for k, v in members.items() if v is not None})
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _slug(cls: type) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()


def service_error_response(exc: ServiceError) -> Response:
    members: dict[str, Any] = dict(exc.extra)
    if isinstance(exc, InvalidInput):
        members["errors"] = [{"field": e.field, "message": e.message} for e in exc.errors]
    if isinstance(exc, Conflict):
        members["conflicts"] = exc.conflicts
    if isinstance(exc, RulesBroken):
        members["violations"] = exc.violations
    headers = {"WWW-Authenticate": 'Bearer realm="api"'} if exc.status == 401 else None
    return problem(
        exc.status,
        exc.title,
        exc.detail,
        type_=PROBLEM_TYPE_PREFIX + _slug(type(exc)),
        headers=headers,
        **members,
    )


def validation_error_response(exc: ValidationError) -> Response:
    errors = [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return problem(
        422,
        "Validation failed",
        "The request does not match the schema.",
        type_=PROBLEM_TYPE_PREFIX + "invalid-input",
        errors=errors,
    )


def _http_error(exc: HTTPException) -> Any:
    if not wants_problem_json():
        from web.input_guard import error_page

        return error_page(exc)
    # Keep headers such as Allow on 405; the body is ours.
    headers = {
        name: value
        for name, value in exc.get_response().headers.items()
        if name.lower() not in {"content-type", "content-length"}
    }
    return problem(exc.code or 500, exc.name, exc.description, headers=headers)


def _unexpected(exc: Exception) -> Response | HTTPException:
    # Messages of database errors carry bound parameters (names, phone numbers), so only the
    # exception type and the stack of code locations are logged, never str(exc).
    rule = request.url_rule.rule if request.url_rule is not None else "(no route)"
    current_app.logger.error(
        "Unhandled %s in %s %s\n%s",
        type(exc).__name__,
        request.method,
        rule,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    if not wants_problem_json():
        return InternalServerError()
    return problem(500, "Internal server error", "Something went wrong on our side.")


def init_app(app: Flask) -> None:
    app.register_error_handler(ServiceError, service_error_response)
    app.register_error_handler(ValidationError, validation_error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
