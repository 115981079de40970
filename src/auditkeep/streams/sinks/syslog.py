"""`syslog`: RFC 5424 messages over TCP with octet-counting framing (RFC 6587 §3.4.1), optionally TLS
(RFC 5425), on one persistent connection (docs/streams.md).

Each record becomes `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [auditkeep@32473 seq="41"
event_uuid="..." org="..."] MSG`, MSG the record's JSON (UTF-8 without a BOM), framed `<octets> <msg>`.

TCP syslog has no application acknowledgement: a batch counts as delivered once all of it is written to
the socket. Before each batch the sink checks that the receiver has not closed the connection (a
receiver never sends, so anything readable is its EOF), which turns a restarted receiver into a retried
batch instead of bytes written into a dead socket; what the receiver had read but not stored when it
died is lost to TCP syslog itself, which is why streams are at least once from the cursor, not beyond it.
"""

from __future__ import annotations

import os
import re
import select
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

from auditkeep.streams.sinks import Batch, DeliveryError

# RFC 5424 §7.2.2: an SD-ID of our own is `name@<private enterprise number>`. auditkeep has no PEN of its
# own; 32473 is the one IANA reserves for documentation (RFC 5612), so no registered vendor's IDs clash.
SD_ID = "auditkeep@32473"
NILVALUE = "-"
SEVERITY_INFORMATIONAL = 6
SEVERITY_WARNING = 4
# An event's `status` (or an OCSF record's status_id 2) that means it failed: logged as a Warning.
FAILED = frozenset({"failure", "failed", "fail", "error", "denied", "rejected", "forbidden", "unauthorized"})
_PRINTUSASCII = re.compile(r"^[!-~]+$")


def sd_escape(value: str) -> str:
    """A PARAM-VALUE with `"`, `\\` and `]` escaped by a backslash (RFC 5424 §6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def header_field(value: str | None, limit: int) -> str:
    """A header field (RFC 5424 §6.2): 1 to `limit` printable US-ASCII characters, else NILVALUE."""
    if value and len(value) <= limit and _PRINTUSASCII.match(value):
        return value
    return NILVALUE


def timestamp(record: dict[str, Any]) -> str:
    """The event's time as RFC 5424 TIMESTAMP (RFC 3339, UTC, microseconds), NILVALUE when it has none."""
    stamp = record.get("timestamp")
    metadata = record.get("metadata")
    if stamp is None and isinstance(metadata, dict):
        stamp = metadata.get("original_time")  # OCSF records keep the microseconds there
    if not isinstance(stamp, str):
        return NILVALUE
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return NILVALUE
    if moment.tzinfo is None:
        return NILVALUE
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def severity(record: dict[str, Any]) -> int:
    """Warning for an event that failed, Informational for the rest."""
    status = record.get("status")
    if record.get("status_id") == 2 or (isinstance(status, str) and status.strip().lower() in FAILED):
        return SEVERITY_WARNING
    return SEVERITY_INFORMATIONAL


def message(record: str, parsed: dict[str, Any], *, facility: int, hostname: str, app_name: str,
            procid: str, seq: int | None, event_uuid: str, org: str) -> bytes:
    """One RFC 5424 message (without its frame)."""
    action = parsed.get("action")
    if action is None and isinstance(parsed.get("metadata"), dict):
        action = parsed["metadata"].get("event_code")  # the OCSF format keeps the action there
    params = [] if seq is None else [f'seq="{seq}"']
    params += [f'event_uuid="{sd_escape(event_uuid)}"', f'org="{sd_escape(org)}"']
    if seq is None:
        params.append('test="true"')
    head = (f"<{facility * 8 + severity(parsed)}>1 {timestamp(parsed)} {hostname} {app_name} {procid} "
            f"{header_field(action if isinstance(action, str) else None, 32)} [{SD_ID} {' '.join(params)}] ")
    return head.encode() + record.encode()


def frame(msg: bytes) -> bytes:
    """Octet counting (RFC 6587 §3.4.1): `MSG-LEN SP SYSLOG-MSG`."""
    return str(len(msg)).encode() + b" " + msg


def tls_context(ca: str | None) -> ssl.SSLContext:
    """Verifies the receiver's certificate and name: against `ca` (PEM text, or a file of PEM on the
    forwarding machine), else the system's trust store."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca is not None:
        # Only the stream's own CA: a certificate from any public CA must not pass for the receiver's.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 5425 §4.2 requires TLS 1.2 or later
        try:
            if "-----BEGIN" in ca:
                context.load_verify_locations(cadata=ca)
            else:
                context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"the stream's ca cannot be loaded: {exc}") from None
    return context


class SyslogSink:
    leaves_cycles = True  # not measured otherwise: collected after each batch, as before

    def __init__(self, stream_id: str, config: dict[str, Any]) -> None:
        self.stream_id = stream_id
        self.host = str(config["host"])
        self.port = int(config["port"])
        self.tls = bool(config.get("tls", False))
        self.ca: str | None = config.get("ca")
        self.facility = int(config.get("facility", 13))
        self.hostname = header_field(config.get("hostname") or socket.gethostname(), 255)
        self.app_name = header_field(str(config.get("app_name") or "auditkeep"), 48)
        self.max_message_bytes = int(config.get("max_message_bytes", 8192))
        self.timeout = float(config.get("timeout_seconds", 10.0))
        self.procid = str(os.getpid())
        self.sock: socket.socket | None = None

    @property
    def address(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"

    def frames(self, batch: Batch) -> bytes:
        """The batch's messages, framed; a record too long for the receiver is refused before any is sent."""
        out = []
        for i, (record, parsed) in enumerate(zip(batch.records, batch.events(), strict=True)):
            msg = message(record, parsed, facility=self.facility, hostname=self.hostname, app_name=self.app_name,
                          procid=self.procid, seq=None if batch.test else batch.seqs[i],
                          event_uuid=batch.event_uuids[i], org=batch.org_name)
            if len(msg) > self.max_message_bytes:
                # A receiver truncates (rsyslog) or drops a message over its limit, silently: refusing it
                # here parks the stream at the event instead of losing part of it.
                raise DeliveryError(f"the message is {len(msg)} bytes, over max_message_bytes "
                                    f"({self.max_message_bytes}); raise the receiver's limit and the stream's",
                                    permanent=True)
            out.append(frame(msg))
        return b"".join(out)

    def deliver(self, batch: Batch) -> None:
        data = self.frames(batch)
        if self.sock is not None and self._closed_by_peer(self.sock):
            self._drop()
        if self.sock is None:
            self.sock = self._connect()
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError) as exc:
            self._drop()
            raise DeliveryError(f"{self.address}: writing failed: {type(exc).__name__}: {exc}") from None

    def _connect(self) -> socket.socket:
        context = tls_context(self.ca) if self.tls else None
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise DeliveryError(f"{self.address}: cannot connect: {type(exc).__name__}: {exc}") from None
        if context is None:
            return raw
        try:
            return context.wrap_socket(raw, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            raise DeliveryError(f"{self.address}: TLS: the receiver's certificate is not trusted "
                                f"({exc.verify_message}): check the stream's ca and host") from None
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise DeliveryError(f"{self.address}: TLS handshake failed: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _closed_by_peer(sock: socket.socket) -> bool:
        """Whether the receiver closed (or reset) the connection: a syslog receiver never sends, so a
        readable socket means its EOF. TLS may carry a session ticket first; it is read and dropped."""
        timeout = sock.gettimeout()
        try:
            while select.select([sock], [], [], 0)[0]:
                sock.setblocking(False)
                try:
                    if not sock.recv(4096):
                        return True
                finally:
                    sock.settimeout(timeout)
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except (OSError, ssl.SSLError):
            return True
        return False

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        self._drop()
