"""A small sliding-window rate limiter for the patient link and feed URLs.

It lives in this process's memory: with several web processes (gunicorn workers, several
containers) each one counts on its own, so the real limit is N times higher. A multi-process
deployment should back ``SlidingWindowLimiter`` with Redis (a sorted set per key, or INCR with
an expiry per window) behind the same ``allow`` method. Tokens are ~95 bits, so the limit is
not what stops guessing; it keeps one client from hammering the lookup and the database.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from flask import current_app, request


class SlidingWindowLimiter:
    """At most ``limit`` hits per ``window`` seconds per key (thread-safe)."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Record a hit for ``key``; False when it is over the limit (the hit is not kept)."""
        now = self.clock()
        horizon = now - self.window
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque()
            self._hits.move_to_end(key)
            while hits and hits[0] <= horizon:
                hits.popleft()
            allowed = len(hits) < self.limit
            if allowed:
                hits.append(now)
            # Bounded memory: a flood from many addresses forgets the least recent ones
            # rather than growing without end.
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
            return allowed

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


_LIMITERS_KEY = "sbrt.rate_limiters"
WINDOW_SECONDS = 60.0


def over_limit(name: str, *, config_key: str, default: int) -> bool:
    """Count this request against ``name``'s per-address limit; True when it is over.

    One limiter per app and name, built on first use from ``app.config[config_key]``
    (requests per minute), so tests and differently configured apps never share counts.
    The address is the connection's: behind a reverse proxy the deployment must apply
    werkzeug's ProxyFix, or every patient shares the proxy's address.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    limiters: dict[str, SlidingWindowLimiter] = app.extensions.setdefault(_LIMITERS_KEY, {})
    limiter = limiters.get(name)
    if limiter is None:
        limit = int(app.config.get(config_key, default))
        limiter = limiters.setdefault(name, SlidingWindowLimiter(limit, WINDOW_SECONDS))
    return not limiter.allow(request.remote_addr or "unknown")
