"""The OpenAPI 3.1 document, generated from the operation registry and the pydantic models,
and the page that shows it in Swagger UI served from the app's own static files (no CDN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, render_template
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from web.api.registry import API_PREFIX, MAX_ID, ApiRoutes, Operation
from web.errors import PROBLEM_MIMETYPE

DOCUMENT_KEY = "sbrt.openapi"
# Under the static folder; the Makefile copies these files there from swagger-ui-dist.
SWAGGER_UI_DIR = "vendor/swagger-ui"
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
REF = "#/components/schemas/{model}"
SECURITY = [{"bearerAuth": []}, {"sessionCookie": []}]
ERROR_DESCRIPTIONS = {
    400: "Malformed request",
    401: "No valid bearer token or session",
    403: "The caller's role does not allow this (or a session request lacks its CSRF token)",
    404: "No such record",
    409: (
        "The slot is taken (`conflicts`), the record's state does not allow this, or the "
        "patient has another course close to this one that must be acknowledged first "
        "(type `urn:sbrt-scheduler:problem:nearby-course-warning`, `nearby_courses`); when "
        "booking the best option, nothing fits (type "
        "`urn:sbrt-scheduler:problem:no-schedule-available`, `explanation`) or other bookings "
        "took every option found (type `urn:sbrt-scheduler:problem:options-taken`)"
    ),
    415: "The body is not application/json",
    422: "Invalid input; `errors` names each field, `violations` each broken rule",
    500: "Unexpected server error (details are logged, never returned)",
}


class FieldErrorOut(BaseModel):
    field: str
    message: str


class ConflictOut(BaseModel):
    kind: str
    linac_id: int | None
    starts_at: str
    ends_at: str


class NearbyCourseOut(BaseModel):
    course_id: int
    protocol_code: str
    status: str
    first_start: str
    last_end: str
    days_apart: int


class ViolationOut(BaseModel):
    code: str
    message: str
    fraction: int | None = None
    overridable: bool = False


class ProblemExplanationOut(BaseModel):
    code: str
    message: str
    earliest_feasible: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldErrorOut] | None = None
    conflicts: list[ConflictOut] | None = None
    violations: list[ViolationOut] | None = None
    nearby_courses: list[NearbyCourseOut] | None = None
    explanation: ProblemExplanationOut | None = None


def build_document(routes: ApiRoutes) -> dict[str, Any]:
    inputs = {m for op in routes.operations for m in (op.body, op.query) if m is not None}
    outputs = {op.response for op in routes.operations if op.response is not None}
    keys = [(m, "validation") for m in inputs] + [(m, "serialization") for m in outputs]
    keys.append((Problem, "serialization"))
    refs, top = models_json_schema(keys, ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    query_names = set()
    for query in {op.query for op in routes.operations if op.query is not None}:
        query_names.add(_ref_name(refs[(query, "validation")]))

    paths: dict[str, dict[str, Any]] = {}
    for op in routes.operations:
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = _operation(
            op, refs, schemas
        )
    for name in query_names:
        # Query models are spelled out as parameters; as schemas nothing refers to them.
        schemas.pop(name, None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SBRT scheduler API",
            "version": "1",
            "description": (
                "Book SBRT courses: propose complete schedules, book them atomically, move, "
                "cancel and re-plan around linac downtime. Times are ISO 8601: responses give "
                "UTC instants plus local times in the department's zone; requests accept an "
                "instant with an offset or a naive local time (a nonexistent one is rejected, "
                "an ambiguous one needs `fold`). Errors are RFC 9457 problem details. Names, "
                "MRNs, reasons and labels are plain text on one line: control characters, line "
                "breaks, bidi overrides and isolates and zero-width characters are refused with "
                "a 422 (notes and preparation instructions may hold line breaks and tabs)."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": tag} for tag in dict.fromkeys(op.tag for op in routes.operations)],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (created by an admin).",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "session",
                    "description": (
                        "A signed-in staff session; unsafe methods also need the "
                        "X-CSRF-Token header. It ends at sign-out, at a change of the "
                        "user's password, role or active state, after SESSION_IDLE_MINUTES "
                        "unused and SESSION_MAX_HOURS after sign-in."
                    ),
                },
            },
        },
        "security": SECURITY,
    }


def _ref_name(ref: dict[str, Any]) -> str:
    return ref["$ref"].rsplit("/", 1)[-1]


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is omitted, never null: drop the null branch."""
    branches = schema.get("anyOf")
    if not branches:
        return schema
    kept = [b for b in branches if b.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}


def _operation(op: Operation, refs: dict[Any, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    for name in op.path_params:
        if name in op.path_enums:
            schema: dict[str, Any] = {"type": "string", "enum": list(op.path_enums[name])}
        else:
            schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op.query is not None:
        definition = schemas[_ref_name(refs[(op.query, "validation")])]
        required = set(definition.get("required", []))
        for name, prop in definition.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": _without_null(prop),
            }
            if "description" in prop:
                param["description"] = prop["description"]
            parameters.append(param)

    responses: dict[str, Any] = {}
    if op.response is None:
        responses[str(op.status)] = {"description": "Done"}
    else:
        ref = refs[(op.response, "serialization")]
        body = {"type": "array", "items": ref} if op.many else ref
        responses[str(op.status)] = {
            "description": "Success",
            "content": {"application/json": {"schema": body}},
        }
    for code in _error_codes(op):
        response: dict[str, Any] = {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {PROBLEM_MIMETYPE: {"schema": refs[(Problem, "serialization")]}},
        }
        if code == 401:
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
            }
        responses[str(code)] = response

    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": (op.description + f"\n\nRequires the `{op.role}` role.").strip(),
        "tags": [op.tag],
        "x-required-role": op.role,
        "security": SECURITY,
        "responses": responses,
    }
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    return document


def _error_codes(op: Operation) -> list[int]:
    codes = {400, 401, 403, 500, *op.errors}
    if op.path_params:
        codes.add(404)
    if op.body is not None:
        codes.update({415, 422})
    if op.query is not None or op.method != "GET":
        codes.add(422)
    return sorted(codes)


def document() -> dict[str, Any]:
    """This app's document, built on first use (the routes do not change while it runs)."""
    if DOCUMENT_KEY not in current_app.extensions:
        current_app.extensions[DOCUMENT_KEY] = build_document(
            current_app.extensions["sbrt.api_routes"]
        )
    return current_app.extensions[DOCUMENT_KEY]


def _openapi_json() -> Response:
    return Response(json.dumps(document(), indent=1), mimetype="application/json")


def _docs() -> str:
    # The viewer's files come from npm (package-lock.json) and are copied into the static
    # folder by `make node_modules/.installed`; without them the page says how to get them.
    installed = all(
        Path(current_app.static_folder or "", SWAGGER_UI_DIR, name).is_file()
        for name in SWAGGER_UI_FILES
    )
    return render_template(
        "api_docs.html", doc=document(), viewer_installed=installed, viewer_dir=SWAGGER_UI_DIR
    )


def blueprint(routes: ApiRoutes) -> Blueprint:
    bp = Blueprint("openapi", __name__, url_prefix="/api")
    bp.add_url_rule("/openapi.json", "openapi_json", _openapi_json)
    bp.add_url_rule("/docs", "docs", _docs)
    bp.record_once(lambda state: state.app.extensions.setdefault("sbrt.api_routes", routes))
    return bp
