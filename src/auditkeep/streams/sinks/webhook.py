"""`webhook`: one signed POST per batch (docs/streams.md shows how a receiver checks it).

Body: `{"stream_id": ..., "events": [...]}`. Headers: `Auditkeep-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256(secret, "<t>.<raw body>")>` and `Auditkeep-Delivery: <uuid>` (new for every attempt). Any 2xx
acknowledges the whole batch; 408, 429 and 5xx (and no answer) are retried, honouring Retry-After; any
other status refuses the batch for good.

Sent with urllib3, not httpx: in the ingest process's one GIL, an httpx POST of a 500-record batch cost
~850 us of CPU and left the request (its ~0.4 MB body) in a reference cycle only a collection frees;
urllib3 costs ~390 us and leaves none (bench/streams_bench.py ingest, issue #10).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import urllib3

from auditkeep import __version__
from auditkeep.ids import new_event_uuid
from auditkeep.streams.sinks import Batch, DeliveryError

RETRIED = {408, 425, 429}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Auditkeep-Signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookSink:
    leaves_cycles = False  # urllib3's responses are freed by reference counting (streams/sinks/__init__.py)

    def __init__(self, stream_id: str, config: dict[str, Any]) -> None:
        self.stream_id = stream_id
        self.url = str(config["url"])
        self.secret = str(config["secret"])
        timeout = float(config.get("timeout_seconds", 10.0))
        # One connection, kept alive. No retries and no redirects here: the forwarder retries with its own
        # backoff, and a 3xx is answered like any other refusal (as with httpx's defaults before).
        self.client = urllib3.PoolManager(maxsize=1, retries=False,
                                          timeout=urllib3.Timeout(connect=timeout, read=timeout))

    def body(self, records: list[str]) -> bytes:
        # Records are already JSON texts (built by the database); joining them avoids re-encoding a batch.
        return b"".join([b'{"stream_id":', orjson.dumps(self.stream_id), b',"events":[',
                         ",".join(records).encode(), b"]}"])

    def deliver(self, batch: Batch) -> None:
        body = self.body(batch.records)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"auditkeep/{__version__}",
            "Auditkeep-Signature": sign(self.secret, int(time.time()), body),
            "Auditkeep-Delivery": new_event_uuid(),
        }
        try:
            r = self.client.request("POST", self.url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            raise DeliveryError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if 200 <= r.status < 300:
            return
        detail = f"{self.url} answered {r.status}: {r.data[:800].decode(errors='replace')[:200]}"
        if r.status in RETRIED or r.status >= 500:
            raise DeliveryError(detail, retry_after=retry_after(r.headers.get("retry-after")))
        raise DeliveryError(detail, permanent=True)

    def close(self) -> None:
        self.client.clear()
