"""`splunk_hec`: batches to Splunk's HTTP Event Collector (docs/streams.md).

One POST to `<url>/services/collector/event` per batch, `Authorization: Splunk <token>`, the body one
`{"time", "host", "source", "sourcetype", ["index",] "event"}` object per record, concatenated as HEC
allows. HEC's 200 only says the batch was received, not indexed; with `use_ack` the batch goes on the
stream's own channel (`X-Splunk-Request-Channel`, the stream id) and the sink polls
`/services/collector/ack` until the batch's ackId is acknowledged before it returns, so the cursor moves
only over indexed events (a timeout is retried: the batch is sent again).

HEC's answers: 429, 5xx (busy, unhealthy, internal error) and no answer are retried. A refusal of the
data itself (400 with code 6 "Invalid data format", 12/13 "Event field is required/cannot be blank", 15
indexed fields; 413 too large) is permanent, so the forwarder finds the one event refused and parks the
stream there. Everything else (401/403 a bad or disabled token, 400 code 7 an unknown index, 10/11/14
channel or acknowledgement settings, 404 a wrong URL) is a configuration error that no event caused:
it is retried with backoff, so the stream turns `failing` naming the problem and delivers once fixed.
"""

from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson

from auditkeep import __version__
from auditkeep.streams.sinks import Batch, DeliveryError
from auditkeep.streams.sinks.webhook import retry_after

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
DEFAULT_SOURCETYPE = "auditkeep:audit_log"
# HEC codes (Splunk's "Format events for HTTP Event Collector", status codes table) that refuse the data
# in the request rather than the request's settings.
DATA_REFUSED = {6, 12, 13, 15}
RETRIED = {408, 425, 429}
ACK_POLL_FIRST = 0.1  # seconds, doubling while the batch is not yet indexed
ACK_POLL_CAP = 2.0


def base_url(url: str) -> str:
    """The collector's base URL: `url` without a trailing slash or a collector path the user included."""
    base = url.rstrip("/")
    for suffix in (EVENT_PATH, "/services/collector/raw", "/services/collector"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def epoch(record: dict[str, Any]) -> bytes | None:
    """The record's time as HEC's `time` (epoch seconds with a fraction), as JSON number text; written
    exactly from the timestamp's digits, since a float would round away microseconds."""
    stamp = record.get("timestamp")
    metadata = record.get("metadata")
    if stamp is None and isinstance(metadata, dict):
        stamp = metadata.get("original_time")  # OCSF records keep the microseconds there
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        whole = Decimal(int(moment.replace(microsecond=0).timestamp()))
        return str(whole + Decimal(moment.microsecond).scaleb(-6)).encode()
    millis = record.get("time")  # the OCSF format's epoch milliseconds
    if isinstance(millis, int) and not isinstance(millis, bool):
        return str(Decimal(millis).scaleb(-3)).encode()
    return None


def channel_for(stream_id: str) -> str:
    """HEC wants a GUID per channel: the stream's id is one, so the channel stays the stream's."""
    try:
        return str(uuid.UUID(stream_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"auditkeep:stream:{stream_id}"))


def parse(response: httpx.Response) -> dict[str, Any]:
    """HEC's JSON answer ({} when the body is not a JSON object)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


class SplunkHecSink:
    leaves_cycles = True  # httpx: each response and its stream hold one another (and the request body)

    def __init__(self, stream_id: str, config: dict[str, Any]) -> None:
        self.stream_id = stream_id
        self.base = base_url(str(config["url"]))
        self.index: str | None = config.get("index")
        self.sourcetype = str(config.get("sourcetype") or DEFAULT_SOURCETYPE)
        self.source: str | None = config.get("source")
        self.host = str(config.get("host") or socket.gethostname())
        self.use_ack = bool(config.get("use_ack", False))
        self.ack_timeout = float(config.get("ack_timeout_seconds", 20.0))
        self.channel = channel_for(stream_id)
        headers = {"User-Agent": f"auditkeep/{__version__}", "Authorization": f"Splunk {config['token']}"}
        if self.use_ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        self.client = httpx.Client(timeout=float(config.get("timeout_seconds", 10.0)), headers=headers)

    def body(self, batch: Batch) -> bytes:
        """One HEC event object per record, newline-separated; records are embedded as the JSON text
        they already are."""
        common = b"".join([
            b'"host":', orjson.dumps(self.host),
            b',"source":', orjson.dumps(self.source or f"auditkeep:{batch.org_name}"),
            b',"sourcetype":', orjson.dumps(self.sourcetype),
            *([b',"index":', orjson.dumps(self.index)] if self.index else []),
        ])
        parts = []
        for record, parsed in zip(batch.records, batch.events(), strict=True):
            stamp = epoch(parsed)
            parts.append(b"".join([b"{", b'"time":' + stamp + b"," if stamp else b"", common,
                                   b',"event":', record.encode(), b"}"]))
        return b"\n".join(parts)

    def deliver(self, batch: Batch) -> None:
        url = self.base + EVENT_PATH
        try:
            r = self.client.post(url, content=self.body(batch), headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{url}: {type(exc).__name__}: {exc}") from None
        answer = self._accepted(url, r, data=True)
        if not self.use_ack:
            return
        ack_id = answer.get("ackId")
        if not isinstance(ack_id, int) or isinstance(ack_id, bool):
            raise DeliveryError(f"{url} gave no ackId: use_ack needs indexer acknowledgement enabled on the HEC "
                                "token (or set use_ack to false)")
        self._await_ack(ack_id)

    def _accepted(self, url: str, r: httpx.Response, *, data: bool) -> dict[str, Any]:
        """HEC's answer when it accepted the request; else the DeliveryError it calls for. Only a request
        carrying events (`data`) can be refused for an event's sake."""
        answer = parse(r)
        code = answer.get("code")
        if 200 <= r.status_code < 300 and code in (0, None):
            return answer
        text = str(answer.get("text", "")) if answer else r.text[:200]
        if "invalid-event-number" in answer:
            text += f" (event {answer['invalid-event-number']} of the request)"
        detail = f"{url} answered {r.status_code}" + (f" code {code}" if code is not None else "") + f": {text}"
        if r.status_code in RETRIED or r.status_code >= 500:
            raise DeliveryError(detail, retry_after=retry_after(r.headers.get("retry-after")))
        if data and (r.status_code == 413 or (r.status_code == 400 and code in DATA_REFUSED)):
            raise DeliveryError(detail, permanent=True)
        if r.status_code in (401, 403):
            detail += " (the HEC token is wrong or disabled: update the stream's token)"
        raise DeliveryError(f"{detail}; a configuration problem, retried")

    def _await_ack(self, ack_id: int) -> None:
        """Poll the channel's acknowledgements until `ack_id` is indexed, or raise a retryable
        DeliveryError after ack_timeout_seconds (then the batch is sent again)."""
        url = self.base + ACK_PATH
        deadline = time.monotonic() + self.ack_timeout
        pause = ACK_POLL_FIRST
        while True:
            try:
                r = self.client.post(url, params={"channel": self.channel}, json={"acks": [ack_id]})
            except httpx.HTTPError as exc:
                raise DeliveryError(f"{url}: {type(exc).__name__}: {exc}") from None
            acks = self._accepted(url, r, data=False).get("acks")
            if isinstance(acks, dict) and acks.get(str(ack_id)) is True:
                return
            if time.monotonic() + pause > deadline:
                raise DeliveryError(f"ackId {ack_id} on channel {self.channel} not acknowledged within "
                                    f"{self.ack_timeout:g} s; the batch will be sent again")
            time.sleep(pause)
            pause = min(ACK_POLL_CAP, pause * 2)

    def close(self) -> None:
        self.client.close()
