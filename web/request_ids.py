"""Every request gets an id: the caller's sane ``X-Request-ID`` or a new one.

It is on every log line written while the request runs, in the response's ``X-Request-ID``
header, and in the headers of every task the request queues (see
``scheduler.observability.celery_signals``).
"""

from __future__ import annotations

from flask import Flask, Response, g, request

from scheduler.observability import request_id

_TOKEN = "sbrt_request_id_token"


def _start() -> None:
    value = request_id.accept(request.headers.get(request_id.HEADER))
    g.request_id = value
    setattr(g, _TOKEN, request_id.bind(value))


def _answer(response: Response) -> Response:
    value = g.get("request_id")
    if value:
        response.headers[request_id.HEADER] = value
    return response


def _end(_exc: BaseException | None) -> None:
    token = g.pop(_TOKEN, None)
    if token is not None:
        request_id.unbind(token)


def init_app(app: Flask) -> None:
    # First of all hooks, so that every other hook's log lines carry the id.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_answer)
    app.teardown_request(_end)
