"""`webhook`: one signed POST per batch (docs/streams.md shows how a receiver checks it).

Body: `{"stream_id": ..., "events": [...]}`. Headers: `Auditkeep-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256(secret, "<t>.<raw body>")>` and `Auditkeep-Delivery: <uuid>` (new for every attempt). Any 2xx
acknowledges the whole batch; 408, 429 and 5xx (and no answer) are retried, honouring Retry-After; any
other status refuses the batch for good.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

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
    def __init__(self, stream_id: str, config: dict[str, Any]) -> None:
        self.stream_id = stream_id
        self.url = str(config["url"])
        self.secret = str(config["secret"])
        self.client = httpx.Client(timeout=float(config.get("timeout_seconds", 10.0)),
                                   headers={"User-Agent": f"auditkeep/{__version__}"})

    def body(self, records: list[str]) -> bytes:
        # Records are already JSON texts (built by the database); joining them avoids re-encoding a batch.
        return b"".join([b'{"stream_id":', orjson.dumps(self.stream_id), b',"events":[',
                         ",".join(records).encode(), b"]}"])

    def deliver(self, batch: Batch) -> None:
        body = self.body(batch.records)
        headers = {
            "Content-Type": "application/json",
            "Auditkeep-Signature": sign(self.secret, int(time.time()), body),
            "Auditkeep-Delivery": new_event_uuid(),
        }
        try:
            r = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if 200 <= r.status_code < 300:
            return
        detail = f"{self.url} answered {r.status_code}: {r.text[:200]}"
        if r.status_code in RETRIED or r.status_code >= 500:
            raise DeliveryError(detail, retry_after=retry_after(r.headers.get("retry-after")))
        raise DeliveryError(detail, permanent=True)

    def close(self) -> None:
        self.client.close()
