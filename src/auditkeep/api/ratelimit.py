"""Rate limits on the API (issue #11): requests per API key, and failed authentications per client address.

Counting is the `limits` library's fixed window (its items and storage), kept in memory (each process its
own) or in Redis (shared by every worker and node), as AUDITKEEP_RATE_LIMIT_STORAGE says. deps.get_principal
asks; this module keeps no policy of its own beyond the settings. Every answer to a counted request carries
the RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset headers of the tightest limit (added on the way
out by a middleware, so streamed answers and error answers carry them too).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.storage import Storage as LimitsStorage
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditkeep.settings import Settings

log = logging.getLogger("auditkeep.ratelimit")

# Where a request's quota waits for its response to start (the ASGI scope is shared by every layer).
_SCOPE_KEY = "auditkeep.rate_limit"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 us, paid on every request
class Quota:
    """Where a caller stands against one limit, as the RateLimit-* headers say it."""

    limit: int
    remaining: int
    reset: int  # whole seconds until the window ends (at least 1)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset).encode()),
        ]


class _SweptMemoryStorage(MemoryStorage):
    """`memory://` without a thread per request.

    limits' MemoryStorage drops expired counters from a `threading.Timer` of 10 ms that every incr starts
    anew once the last has finished: a request arriving more than 10 ms after the previous one started a
    thread, ~350 us of CPU instead of ~6 us (bench/load.py; docs/benchmarks.md, "Load"). Counters never
    needed it (`get`, which incr calls first, drops an expired counter itself); the timer only frees the
    memory of counters nobody asks for again. Here that sweep runs inline, at most once a second.
    """

    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.timer.cancel()  # the one the base class started
        self._next_sweep = time.monotonic() + self.SWEEP_SECONDS

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def _storage(settings: Settings) -> LimitsStorage:
    if settings.rate_limit_storage == "memory://":
        return _SweptMemoryStorage()
    try:
        # wrap_exceptions: a Redis outage surfaces as limits' StorageError, which RateLimits answers.
        storage = storage_from_string(
            settings.rate_limit_storage, key_prefix=settings.rate_limit_key_prefix, wrap_exceptions=True
        )
    except ConfigurationError as exc:
        if settings.rate_limit_storage.startswith("redis"):
            raise ConfigurationError(
                f"{exc}: Redis rate-limit storage needs the redis extra: pip install 'auditkeep[redis]'"
            ) from exc
        raise
    assert isinstance(storage, LimitsStorage)  # a synchronous storage (not async+...)
    return storage


class RateLimits:
    """The API's two limits over one `limits` storage.

    Counting is FixedWindowRateLimiter's (`storage.incr(item.key_for(...), item.get_expiry()) <= item.amount`),
    done here on the storage with each counter's key name cached: `key_for` alone cost 2.7 us a call and
    the limiter's hit and window stats build it twice per limit, which put the limiter at ~42 us a request
    against the 20 us it may cost (bench/ratelimit_bench.py, docs/benchmarks.md).
    """

    def __init__(self, settings: Settings) -> None:
        self.storage = _storage(settings)
        self._items = {"key": parse_many(settings.rate_limit), "auth-failures": parse_many(settings.auth_failure_limit)}
        self._expiries = {kind: tuple(item.get_expiry() for item in items) for kind, items in self._items.items()}
        self._names = functools.lru_cache(maxsize=65_536)(self._key_names)

    def _key_names(self, kind: str, identifier: str) -> tuple[str, ...]:
        return tuple(item.key_for(kind, identifier) for item in self._items[kind])

    def _quota(self, item: RateLimitItem, name: str, remaining: int) -> Quota:
        reset = max(1, math.ceil(self.storage.get_expiry(name) - time.time()))
        return Quota(item.amount, max(0, remaining), reset)

    def _count(self, kind: str, identifier: str) -> tuple[Quota | None, bool]:
        """One more for `identifier`: the tightest quota, and whether every limit still holds (else the
        quota of the first limit it broke)."""
        tightest: tuple[RateLimitItem, str, int] | None = None
        try:
            for item, expiry, name in zip(self._items[kind], self._expiries[kind], self._names(kind, identifier),
                                          strict=True):
                remaining = item.amount - self.storage.incr(name, expiry)
                if remaining < 0:
                    return self._quota(item, name, 0), False
                if tightest is None or remaining < tightest[2]:
                    tightest = (item, name, remaining)
            return (self._quota(*tightest) if tightest else None), True
        except StorageError as exc:
            _unavailable(exc)
            return None, True

    def lockout(self, address: str) -> Quota | None:
        """The lock-out `address` is under (its failed authentications used up a window), or None."""
        try:
            for item, name in zip(self._items["auth-failures"], self._names("auth-failures", address), strict=True):
                if self.storage.get(name) >= item.amount:
                    return self._quota(item, name, 0)
        except StorageError as exc:
            _unavailable(exc)
        return None

    def failed(self, address: str) -> Quota | None:
        """Count one failed authentication from `address`; the lock-out it begins, or None."""
        quota, within = self._count("auth-failures", address)
        return None if within else quota

    def first_refusal(self, lockout: Quota, *identifiers: str) -> bool:
        """Whether this is the first refusal for `identifiers` during `lockout` (a marker that lives as long
        as the lock-out does): auth.throttled is recorded once per lock-out and organization, not once
        per refused request, else an attacker's refused requests would flood the organization's log."""
        key = "/".join(("auth-throttled", *identifiers))
        try:
            return self.storage.incr(key, lockout.reset) == 1
        except StorageError as exc:
            _unavailable(exc)
            return False

    def hit_key(self, key_id: int) -> tuple[Quota | None, bool]:
        """Count one request by API key `key_id` (its id, never its text): the tightest quota, and whether
        the request is within every limit (else the quota is that of the limit it broke)."""
        return self._count("key", str(key_id))


def _unavailable(exc: StorageError) -> None:
    # Fail open: an audit log that refuses events because its rate-limit store is down loses the very
    # records it exists to keep; the outage is logged instead.
    log.error("rate-limit storage unavailable; request let through", extra={"error": str(exc).splitlines()[0]})


def attach(request: Request, quota: Quota | None) -> None:
    """Have the response to `request` carry `quota`'s RateLimit-* headers."""
    if quota is not None:
        request.scope[_SCOPE_KEY] = quota


class _QuotaHeaders:
    """Adds the RateLimit-* headers of the request's quota, when it has one, to the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start":
                quota: Quota | None = scope.get(_SCOPE_KEY)
                if quota is not None:
                    message = {**message, "headers": [*message.get("headers", ()), *quota.headers()]}
            await send(message)

        await self.app(scope, receive, send_with_quota)


def install(app: FastAPI, settings: Settings) -> None:
    """Give `app` its limits (app.state.rate_limits) and the middleware that reports them."""
    app.state.rate_limits = RateLimits(settings)
    app.add_middleware(_QuotaHeaders)
