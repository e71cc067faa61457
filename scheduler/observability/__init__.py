"""Running the service observably: structured logs, request ids, Prometheus metrics.

Shared by the web app, the Celery worker and beat; it imports no web code, and builds
nothing at import time (the metric objects are made on first use, after the process has
decided whether it shares its metrics with sibling processes).
"""
