"""Answering a scrape: which registry to read, the optional bearer token, the worker's server.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) a scrape reads every process's files
in the directory and sums them, so whichever gunicorn worker or prefork child answers, the
figures are the whole service's. Otherwise it reads this process's instruments.
"""

from __future__ import annotations

import hmac
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from scheduler.observability.metrics import MULTIPROC_ENV, instruments, multiprocess_dir

log = logging.getLogger(__name__)


def prepare_multiprocess_dir(prefix: str) -> str | None:
    """Make sure PROMETHEUS_MULTIPROC_DIR names an empty directory, before any worker starts.

    Files left by an earlier run would be summed into this one's counters, so a configured
    directory is emptied; without one, a fresh temporary directory is made for this service
    and returned (its owner removes it at exit; a configured one is never removed).
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for leftover in path.glob("*.db"):
            leftover.unlink()
        return None
    made = tempfile.mkdtemp(prefix=prefix)
    os.environ[MULTIPROC_ENV] = made
    return made


def remove_multiprocess_dir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """A gunicorn worker or pool child has exited: its live gauges no longer count."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def scrape_registry(extra: Iterable[Any] = ()) -> Any:
    """A registry holding everything one scrape reports."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=True)
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        for collector in instruments().collectors():
            registry.register(collector)
    for collector in extra:
        registry.register(collector)
    return registry


def render(registry: Any, accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type, in the format the scraper asked for."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def token_accepted(authorization: str | None, token: str | None) -> bool:
    """No token configured: open. Otherwise `Authorization: Bearer <token>`, compared in
    constant time."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def metrics_wsgi_app(
    registry_factory: Callable[[], Any], token: str | None
) -> Callable[[dict, Callable], list[bytes]]:
    """A WSGI app answering GET /metrics (the worker serves this on its own port)."""

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not token_accepted(environ.get("HTTP_AUTHORIZATION"), token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"unauthorized\n"]
        body, content_type = render(registry_factory(), environ.get("HTTP_ACCEPT"))
        start_response("200 OK", [("Content-Type", content_type)])
        return [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Every scrape would be a line; the scraper keeps its own record of them.
        pass


def serve_in_thread(app: Callable, host: str, port: int) -> WSGIServer:
    """Serve a WSGI app from a daemon thread of this process; raises OSError if the port is
    taken."""
    server = make_server(host, port, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    return server
