"""`s3`: one gzip NDJSON object per batch, and a manifest beside it that proves it (issue #10).

Keys: `<prefix>/<org>/<yyyy>/<mm>/<dd>/<first seq>-<last seq>.ndjson.gz` and `....manifest.json`, the
date being the UTC day the batch's first event was received (stored): received times never decrease along
the chain, so days hold seq ranges in order, and a redelivered batch gets the same key whatever the clock
says now. The object is gzip with no name or time in its header, so the same events make the same bytes.

The manifest names the object's seq range, count and SHA-256, and carries the latest signed checkpoint
whose tree covers the last seq (one is signed when none does yet). The object is written before its
manifest, and both before the batch counts as acknowledged: a manifest never names a missing object.
Nothing in one batch can be refused alone, so every failure (the store down, access denied, no such
bucket) is retried with backoff until the operator fixes it.

boto3 is the optional extra `auditkeep[s3]`.
"""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from auditkeep.ingest.checkpointing import covering_checkpoint
from auditkeep.storage import Storage
from auditkeep.storage import streams as store
from auditkeep.streams.sinks import Batch, DeliveryError


def object_key(prefix: str, org_name: str, day: datetime, first_seq: int, last_seq: int) -> str:
    """Where a batch's object goes (its manifest: the same with `.manifest.json` for `.ndjson.gz`)."""
    parts = [prefix] if prefix else []
    # An organization's name may hold any character; quoted, it stays one path segment.
    parts += [quote(org_name, safe=""), f"{day:%Y}", f"{day:%m}", f"{day:%d}", f"{first_seq}-{last_seq}.ndjson.gz"]
    return "/".join(parts)


def manifest_key(key: str) -> str:
    return key.removesuffix(".ndjson.gz") + ".manifest.json"


def gzip_ndjson(records: list[str]) -> bytes:
    """The records as gzip NDJSON, byte for byte the same for the same records (mtime 0, no file name)."""
    return gzip.compress(("\n".join(records) + "\n").encode(), compresslevel=6, mtime=0)


class S3Sink:
    leaves_cycles = True  # not measured otherwise: collected after each batch, as before

    def __init__(self, stream_id: str, config: dict[str, Any], storage: Storage) -> None:
        self.stream_id = stream_id
        self.client: Any = None
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            # Told at delivery, so the stream shows it (last_error) and delivers once it is installed.
            self.missing: str | None = "the s3 stream kind needs boto3: pip install 'auditkeep[s3]'"
            return
        self.missing = None
        self.storage = storage
        self.bucket = str(config["bucket"])
        self.prefix = str(config.get("prefix") or "").strip("/")
        timeout = float(config.get("timeout_seconds", 30.0))
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.get("endpoint_url") or None,
            region_name=config.get("region") or None,
            aws_access_key_id=config.get("access_key_id") or None,
            aws_secret_access_key=config.get("secret_access_key") or None,
            aws_session_token=config.get("session_token") or None,
            # The forwarder retries with its own backoff and shows the error on the stream; boto3's own
            # retries would only hide an outage for longer.
            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}),
        )

    def deliver(self, batch: Batch) -> None:
        if self.missing:
            raise DeliveryError(self.missing)
        from botocore.exceptions import BotoCoreError, ClientError

        if batch.test:
            key = "/".join([*([self.prefix] if self.prefix else []), quote(batch.org_name, safe=""),
                            f"auditkeep-test-{batch.event_uuids[0]}.ndjson.gz"])
            objects = [(key, gzip_ndjson(batch.records), "application/gzip")]
        else:
            objects = self._objects(batch)
        for key, body, content_type in objects:  # the object first, then its manifest
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
                                       ChecksumAlgorithm="SHA256")
            except (BotoCoreError, ClientError) as exc:
                raise DeliveryError(f"s3://{self.bucket}/{key}: {type(exc).__name__}: {exc}") from None

    def _objects(self, batch: Batch) -> list[tuple[str, bytes, str]]:
        first, last = batch.seqs[0], batch.seqs[-1]
        with self.storage.read() as conn:
            received = store.received_at(conn, batch.org_id, [first])[first]
        day = received if received.tzinfo else received.replace(tzinfo=UTC)
        key = object_key(self.prefix, batch.org_name, day.astimezone(UTC), first, last)
        body = gzip_ndjson(batch.records)
        checkpoint = covering_checkpoint(self.storage, batch.org_id, last)
        manifest = {
            "stream_id": self.stream_id,
            "org": batch.org_name,
            "object": key,
            "first_seq": first,
            "last_seq": last,
            "count": len(batch.records),
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "checkpoint": checkpoint.model_dump(),
        }
        return [(key, body, "application/gzip"),
                (manifest_key(key), orjson.dumps(manifest, option=orjson.OPT_INDENT_2), "application/json")]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
