"""Per-address rate limits for the patient link and feed URLs.

With Redis configured (RATE_LIMIT_REDIS_URL, by default the broker's Redis) every web process
counts in one place; otherwise each process counts in its own memory, which is exact for the
single-process embedded setup and N times too lenient with N processes. Tokens are ~95 bits, so
the limit is not what stops guessing; it keeps one client from hammering the lookup and the
database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

import redis
from flask import current_app, request

log = logging.getLogger(__name__)


class Limiter(Protocol):
    def allow(self, key: str) -> bool: ...


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


class RedisWindowLimiter:
    """At most ``limit`` hits per fixed ``window`` per key, counted in Redis for all processes.

    One counter per key and window (INCR, expiring with the window): two round trips in one
    pipeline per request. A fixed window lets a client reach twice the limit across a window's
    edge, which is fine for a limit that only keeps hammering down. Should Redis be unreachable
    the request is let through and a warning logged: a patient opening their schedule matters
    more than the limit.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.prefix = f"sbrt:ratelimit:{name}"
        self.limit = limit
        self.window = window
        self.clock = clock

    def allow(self, key: str) -> bool:
        slot = int(self.clock() // self.window)
        counter = f"{self.prefix}:{slot}:{key}"
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(counter)
            pipe.expire(counter, int(self.window) + 1)
            count, _ = pipe.execute()
        except redis.RedisError as exc:
            log.warning("rate limit not counted, Redis unavailable: %s", type(exc).__name__)
            return True
        return int(count) <= self.limit


_LIMITERS_KEY = "sbrt.rate_limiters"
WINDOW_SECONDS = 60.0
# A limit check must never hold a request for long: give up on Redis quickly.
REDIS_TIMEOUT_SECONDS = 0.5


def _new_limiter(app, name: str, limit: int) -> Limiter:  # type: ignore[no-untyped-def]
    url = app.config.get("RATE_LIMIT_REDIS_URL")
    if not url:
        return SlidingWindowLimiter(limit, WINDOW_SECONDS)
    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
    return RedisWindowLimiter(client, name, limit, WINDOW_SECONDS)


def over_limit(name: str, *, config_key: str, default: int) -> bool:
    """Count this request against ``name``'s per-address limit; True when it is over.

    One limiter per app and name, built on first use from ``app.config[config_key]``
    (requests per minute). The address is the client's as the app sees it: behind a reverse
    proxy, TRUSTED_PROXIES makes it the address the proxy reports rather than the proxy's own.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    limiters: dict[str, Limiter] = app.extensions.setdefault(_LIMITERS_KEY, {})
    limiter = limiters.get(name)
    if limiter is None:
        limit = int(app.config.get(config_key, default))
        limiter = limiters.setdefault(name, _new_limiter(app, name, limit))
    return not limiter.allow(request.remote_addr or "unknown")
