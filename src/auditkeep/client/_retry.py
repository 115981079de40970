"""When and how long the SDK waits before trying a request again."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

__all__ = ["RetryPolicy", "parse_retry_after"]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP-date), or None.

    auditkeep sends whole seconds on 429 (rate limits) and 503 (database unavailable); an HTTP-date is read
    against this machine's clock. A value that is neither (or not finite) is None: back off as usual.

    Example:
        >>> parse_retry_after("7")
        7.0
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, honoring `Retry-After`.

    A request is tried again after a connection error, a timeout, a 429 or a 5xx answer, at most
    `max_retries` times; never after another 4xx (the same request would fail the same way). Retrying
    a `publish` is safe because every event carries its `event_uuid` from before the first attempt.

    The wait before retry *n* (0-based) is uniform in `[0, min(max_backoff, backoff * 2**n)]` ("full
    jitter", so that many clients that failed together do not come back together), or the service's
    `Retry-After` when it sent one, capped at `max_retry_after`.

    Example:
        >>> from auditkeep.client import Client, RetryPolicy
        >>> client = Client("key", "http://localhost:8000", retry=RetryPolicy(max_retries=10))

    Subclass and override `sleep` / `asleep` to observe or skip the waits (tests do).
    """

    max_retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def should_retry_status(self, status_code: int) -> bool:
        """Whether an answer with this status may succeed if sent again."""
        return status_code == 429 or status_code >= 500

    def should_retry_exception(self, exc: httpx.TransportError) -> bool:
        """Whether a transport failure may be transient (a bad URL scheme is not)."""
        return not isinstance(exc, httpx.UnsupportedProtocol)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        cap = min(self.max_backoff, self.backoff * 2**retry)
        return random.uniform(0.0, cap)  # noqa: S311 (jitter, not cryptography)

    def sleep(self, seconds: float) -> None:
        """Wait (synchronous clients)."""
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        """Wait (asynchronous clients)."""
        await asyncio.sleep(seconds)
