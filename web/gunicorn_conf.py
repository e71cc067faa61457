"""gunicorn settings for the web app: `gunicorn -c python:web.gunicorn_conf 'web:create_app()'`.

Settings: checked once in the master, before any worker is forked, so bad ones end the server
with one error line. Metrics: each gunicorn worker counts in files of its own under
PROMETHEUS_MULTIPROC_DIR and a scrape of /metrics, whichever worker answers it, sums them all.
The directory is emptied when the server starts (a temporary one is made when none is set), and
a worker's live figures are dropped when it exits. Logs: gunicorn's own lines go out in the
app's format (LOG_FORMAT), and the access log, written by web.access_log.RedactingLogger, never
holds a link's token or a query's values.
"""

from __future__ import annotations

from typing import Any

from config import load_settings_or_exit

# Address, worker count and log destinations stay on the command line, where the Procfile and
# docker-compose.yml show them.
logger_class = "web.access_log.RedactingLogger"
# gunicorn's control socket lives at one path per user, shared by every gunicorn that user
# runs on the machine; nothing here uses it, so a second server cannot take it from the first.
control_socket_disable = True
# Without the default format's user agent and referer (a referer can be a patient link); the
# request id is added to every line by the log format itself (scheduler.observability.logs).
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def on_starting(server: Any) -> None:
    # A worker that fails to load the app makes gunicorn halt with a traceback per worker; bad
    # settings are the operator's to fix, so they end the master with one error line instead.
    load_settings_or_exit()
    from scheduler.observability.exposition import prepare_multiprocess_dir

    server.sbrt_metrics_dir = prepare_multiprocess_dir("sbrt-metrics-web-")


def child_exit(server: Any, worker: Any) -> None:
    from scheduler.observability.exposition import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    from scheduler.observability.exposition import remove_multiprocess_dir

    remove_multiprocess_dir(getattr(server, "sbrt_metrics_dir", None))
