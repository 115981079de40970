"""The query parameters of `GET /api/v1/audit_logs` beyond the seed's (issue #4): filters, order, paging,
polling, formats. Parsed and checked here, so every bad value is a 422 in FastAPI's shape before any work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import ip_network
from typing import Annotated, Any, Literal, get_args

import orjson
from fastapi import Depends, Header, Query
from fastapi.exceptions import RequestValidationError

from auditkeep.api.encoding import Coding, negotiate
from auditkeep.api.timerange import strict_datetime
from auditkeep.ingest.read_rules import WalkMark
from auditkeep.schemas.events import MAX_EVENTS_PER_REQUEST, MAX_SAFE_INTEGER
from auditkeep.storage.addresses import Network
from auditkeep.storage.queries import LogFilters, LogQuery, Position
from auditkeep.storage.search import MIN_QUERY_LENGTH

# `ocsf` only by the format parameter: its objects are NDJSON, and Accept cannot tell them from the logs'.
Format = Literal["json", "ndjson", "csv", "ocsf"]
MEDIA_TYPES: dict[str, Format] = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "text/csv": "csv",
}
_CURSOR_VERSION = 1
_SIGNED_VERSION = 2  # a recorded walk's cursor, with an HMAC (issue #9)
_MAX_SEQ = 2**63 - 1
Q_DESCRIPTION = (
    f"Text search: events whose `log_entry` or `url` contains this text (at least {MIN_QUERY_LENGTH} "
    "characters), ignoring the case of A-Z only (`É` and `é` differ), the same on SQLite and PostgreSQL. "
    "Served by a search index kept just behind ingest, with the newest events scanned directly, so the "
    "answer is exact and pages are full: a `Link` means more matches."
)

Text = Annotated[str | None, Query(max_length=1024)]
SafeId = Annotated[int | None, Query(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]


def _error(name: str, msg: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ["query", name], "msg": msg, "input": value}])


@dataclass(frozen=True)
class Cursor:
    """An opaque page token: where the last page ended, the walk's snapshot bound and its order.

    A cursor of a recorded walk (issue #9) also names the walk (`ingest.read_rules.WalkMark`) and carries
    an HMAC over all of it, so a hand-edited one cannot pass for a page of that walk and skip the trace:
    `<base64url JSON>.<base64url HMAC>`. The console's cursors, and those issued before, have no walk and
    no HMAC; the API records a page that presents one as a walk of its own.
    """

    position: Position
    max_seq: int
    descending: bool
    walk: WalkMark | None = None
    signed: tuple[str, str] | None = field(default=None, compare=False, repr=False)  # (body, HMAC) as sent
    # Whether the walk's export is `filtered` (api/log_responses._statement), decided on its first page and
    # carried by its signed cursors, so an include=integrity export does not rescan its range every page.
    filtered: bool | None = None

    def encode(self, key: bytes | None = None) -> str:
        """The token; a cursor of a walk is signed with `key` (`ingest.read_rules.cursor_key`)."""
        data: dict[str, Any] = {"v": _CURSOR_VERSION, "t": self.position.timestamp, "s": self.position.seq,
                                "m": self.max_seq, "o": "desc" if self.descending else "asc"}
        if self.walk is None:
            return _b64(orjson.dumps(data))
        assert key is not None, "a walk's cursor is signed"
        data |= {"v": _SIGNED_VERSION, "w": self.walk.record_uuid, "b": self.walk.binding, "i": self.walk.started}
        if self.filtered is not None:
            data["f"] = self.filtered
        body = _b64(orjson.dumps(data))
        return f"{body}.{_b64(_mac(key, body))}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a token (422 if it is not one); a signed one's HMAC is checked by `authentic`."""
        body, _, tag = text.partition(".")
        try:
            data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if not isinstance(data, dict) or data.get("v") != (_SIGNED_VERSION if tag else _CURSOR_VERSION):
                raise ValueError("unknown cursor version")
            ts, seq, max_seq, order = data["t"], data["s"], data["m"], data["o"]
            if not (isinstance(ts, str) and len(ts) == 27 and isinstance(seq, int) and isinstance(max_seq, int)
                    and 0 <= seq <= _MAX_SEQ and 0 <= max_seq <= _MAX_SEQ and order in ("asc", "desc")):
                raise ValueError("malformed cursor")
            from auditkeep.storage.types import parse_timestamp

            parse_timestamp(ts)
            walk = None
            filtered = None
            if tag:
                uuid, binding, started = data["w"], data["b"], data["i"]
                filtered = data.get("f")
                if not (isinstance(uuid, str) and isinstance(binding, str) and isinstance(started, int)
                        and filtered in (None, True, False)):
                    raise ValueError("malformed cursor")
                walk = WalkMark(uuid, binding, started)
        except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise _error("cursor", "not a cursor this service issued (take it from the Link header)", text) from None
        return cls(Position(ts, seq), max_seq, order == "desc", walk, (body, tag) if tag else None, filtered)

    def authentic(self, key: bytes) -> bool:
        """Whether a signed cursor's HMAC holds (an unsigned one: False)."""
        if self.signed is None:
            return False
        body, tag = self.signed
        # Constant time: a timing difference would let a client forge a cursor's HMAC byte by byte.
        return hmac.compare_digest(_b64(_mac(key, body)), tag)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode(), hashlib.sha256).digest()[:16]


def _no_nul(name: str, value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise _error(name, "must not contain NUL characters", value)
    return value


def _network(value: str | None) -> Network | None:
    if value is None:
        return None
    try:
        return ip_network(value.strip(), strict=False)
    except ValueError:
        raise _error("client_ip", "must be an IPv4 or IPv6 address or CIDR range (e.g. 10.0.0.0/8)", value) from None


def negotiate_format(format_: Format | None, accept: str | None) -> Format:
    """`format` wins; else the most preferred known type in Accept; else (unknown or absent) JSON."""
    if format_ is not None:
        return format_
    if not accept:
        return "json"
    ranked: list[tuple[float, int, Format]] = []
    for index, item in enumerate(accept.split(",")):
        media, *options = (part.strip() for part in item.split(";"))
        quality = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        fmt = MEDIA_TYPES.get(media.lower())
        if fmt is not None and quality > 0:
            ranked.append((-quality, index, fmt))
    return min(ranked)[2] if ranked else "json"


@dataclass(frozen=True)
class LogParams:
    """Everything a GET may ask for besides the time range."""

    filters: LogFilters
    descending: bool
    limit: int | None
    cursor: Cursor | None
    after_seq: int | None
    integrity: bool
    format: Format
    coding: Coding | None  # the body's Content-Encoding (api/encoding.py)
    given: dict[str, str]  # the extension parameters as sent (for the self-audit record and Link)

    def walk_mark(self, keys: Sequence[bytes]) -> WalkMark | None:
        """The walk the cursor belongs to, if it is signed with one of `keys` (422 if it is signed otherwise,
        so a hand-edited cursor is refused); None without a cursor or with an unsigned one."""
        cursor = self.cursor
        if cursor is None or cursor.walk is None:
            return None
        if not any(cursor.authentic(key) for key in keys):
            raise _error("cursor", "not a cursor this service issued (take it from the Link header)",
                         ".".join(cursor.signed or ()))
        return cursor.walk

    def query(self, org_id: int, start: str | None, end: str | None) -> LogQuery:
        """The storage query for the caller's organization and range."""
        cursor = self.cursor
        return LogQuery(
            # OCSF objects carry seq (metadata.sequence) and the chain's hashes (unmapped), so read them.
            org_id=org_id, start=start, end=end, integrity=self.integrity or self.format == "ocsf",
            descending=self.descending,
            filters=self.filters, limit=self.limit, after_seq=self.after_seq,
            after=cursor.position if cursor else None, max_seq=cursor.max_seq if cursor else None,
        )


@dataclass(frozen=True)
class FilterParams:
    """A read's filters, parsed, and the filter parameters as sent (for self-audit records and Links)."""

    filters: LogFilters
    given: dict[str, str]


def filter_params(
    *,
    action: Annotated[str | None, Query(max_length=256, description="Exact action, or a prefix ending in `*`")]
    = None,
    user_email: Text = None,
    user_id: SafeId = None,
    object_type: Text = None,
    object_id: SafeId = None,
    source: Text = None,
    status: Text = None,
    request_type: Text = None,
    is_support_user: bool | None = None,
    client_ip: Annotated[str | None, Query(max_length=64, description="An address or a CIDR range")] = None,
    q: Annotated[str | None, Query(min_length=MIN_QUERY_LENGTH, max_length=1024, description=Q_DESCRIPTION)]
    = None,
) -> FilterParams:
    """The filters of GET /api/v1/audit_logs (a FastAPI dependency). Its stats (api/routes/audit_log_stats.py)
    and evidence bundles (api/routes/evidence.py) take them through this same dependency, so the three accept
    and refuse exactly the same filter values, with the same 422."""
    texts = {"user_email": user_email, "object_type": object_type, "source": source, "status": status,
             "request_type": request_type, "q": q, "action": action}
    for name, value in texts.items():
        _no_nul(name, value)
    prefix: str | None = None
    if action is not None and action.endswith("*"):
        prefix = action[:-1]
        action = None
    filters = LogFilters(
        action=action, action_prefix=prefix, user_email=user_email, user_id=user_id, object_type=object_type,
        object_id=object_id, source=source, status=status, request_type=request_type,
        is_support_user=is_support_user, client_ip=_network(client_ip), q=q,
    )
    raw: dict[str, Any] = {
        **texts, "user_id": user_id, "object_id": object_id, "client_ip": client_ip,
        "is_support_user": None if is_support_user is None else str(is_support_user).lower(),
    }
    if prefix is not None:
        raw["action"] = prefix + "*"
    return FilterParams(filters, {k: str(v) for k, v in raw.items() if v is not None})


FilterParamsDep = Annotated[FilterParams, Depends(filter_params)]


def log_params(
    *,
    filtered: FilterParamsDep,
    order: Annotated[Literal["asc", "desc"] | None, Query(description="By timestamp, then seq")] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_EVENTS_PER_REQUEST,
                                       description="Page size; `Link: rel=\"next\"` when more exist")] = None,
    cursor: Annotated[str | None, Query(max_length=512, description="From the previous page's Link")] = None,
    after_seq: Annotated[int | None, Query(ge=0, le=_MAX_SEQ,
                                           description="Events stored after this seq, in seq order")] = None,
    include: Annotated[Literal["integrity"] | None, Query(description="`integrity`: add seq, prev_hash, hash")]
    = None,
    format: Annotated[Format | None, Query(description="Overrides Accept; `ocsf`: NDJSON of OCSF 1.3.0 events")]
    = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    accept_encoding: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> LogParams:
    """Parse and cross-check the extension parameters (a FastAPI dependency)."""
    if after_seq is not None:
        for name, value in (("order", order), ("cursor", cursor)):
            if value is not None:
                raise _error(name, f"{name} cannot be combined with after_seq (which reads in seq order)", value)
    decoded = Cursor.decode(cursor) if cursor is not None else None
    if decoded is not None:
        if limit is None:
            raise _error("cursor", "a cursor needs the limit it was issued with", cursor)
        if decoded.descending != (order == "desc"):
            raise _error("cursor", "the cursor belongs to a walk in the other order", cursor)
    raw: dict[str, Any] = {"order": order, "limit": limit, "after_seq": after_seq, "include": include,
                           "format": format}
    given = filtered.given | {k: str(v) for k, v in raw.items() if v is not None}
    if "is_support_user" in given:  # last, where Links and read records have always had it
        given["is_support_user"] = given.pop("is_support_user")
    return LogParams(
        filters=filtered.filters, descending=order == "desc", limit=limit, cursor=decoded, after_seq=after_seq,
        integrity=include == "integrity", format=negotiate_format(format, accept),
        coding=negotiate(accept_encoding), given=given,
    )


LogParamsDep = Annotated[LogParams, Depends(log_params)]


# The read's parameters without FastAPI's dependency machinery (issue #11, "CPU per read"). For 17 parameters
# FastAPI resolved two dependencies, each in a thread-pool hop of its own, and validated every parameter
# through Pydantic: more CPU than the page's query. `plain_log_params` takes the values any client sends
# (`limit=100`, `order=desc`, a cursor, an email, ...) the short way and hands every other one back to
# FastAPI (`Unsure`), so each value FastAPI would refuse or coerce is still judged by FastAPI itself, and
# its 422 is unchanged: a value is taken here only when FastAPI would take it as it is (or, for numbers
# and booleans, as the one value it would make of it), then `filter_params` and `log_params` run as they
# do under FastAPI, in the same order.


class Unsure(Exception):
    """A parameter value `plain_log_params` leaves to FastAPI's validation."""


# A decimal integer as it is usually written: no sign but `-`, no leading zero, no spaces or underscores.
_PLAIN_INT = re.compile(r"0|-?[1-9][0-9]{0,18}")


def _plain_int(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if _PLAIN_INT.fullmatch(value) is None or not low <= (number := int(value)) <= high:
            raise Unsure
        return number
    return parse


def _plain_text(max_length: int, min_length: int = 1) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not min_length <= len(value) <= max_length:
            raise Unsure
        return value
    return parse


def _plain_choice(choices: Mapping[str, Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            return choices[value]
        except KeyError:
            raise Unsure from None
    return parse


_SAFE_ID = _plain_int(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
# Each as declared in `filter_params` and `log_params` (tests/api/test_plain_params.py holds them to it).
_PLAIN_FILTERS: dict[str, Callable[[str], Any]] = {
    "action": _plain_text(256), "user_email": _plain_text(1024), "user_id": _SAFE_ID,
    "object_type": _plain_text(1024), "object_id": _SAFE_ID, "source": _plain_text(1024),
    "status": _plain_text(1024), "request_type": _plain_text(1024),
    "is_support_user": _plain_choice({"true": True, "false": False}), "client_ip": _plain_text(64),
    "q": _plain_text(1024, MIN_QUERY_LENGTH),
}
_PLAIN_OPTIONS: dict[str, Callable[[str], Any]] = {
    "order": _plain_choice({"asc": "asc", "desc": "desc"}), "limit": _plain_int(1, MAX_EVENTS_PER_REQUEST),
    "cursor": _plain_text(512), "after_seq": _plain_int(0, _MAX_SEQ),
    "include": _plain_choice({"integrity": "integrity"}), "format": _plain_choice({f: f for f in get_args(Format)}),
}


def _plain(sent: dict[str, str], parsers: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    return {name: None if (value := sent.get(name)) is None else parse(value) for name, parse in parsers.items()}


def plain_log_params(query: Mapping[str, str], headers: Mapping[str, str]) -> LogParams:
    """`log_params` of a request's query parameters and headers (Starlette's: FastAPI takes a parameter's
    value with `.get`, the last one sent, which `items()` gives too), or `Unsure` when a value is one to leave
    to FastAPI. Raises what `filter_params` and `log_params` raise (their 422s), as they would under FastAPI."""
    sent = dict(query.items())  # a dict's get, not a Mapping's: no KeyError raised per absent parameter
    filtered = filter_params(**_plain(sent, _PLAIN_FILTERS))
    return log_params(filtered=filtered, **_plain(sent, _PLAIN_OPTIONS), accept=headers.get("accept"),
                      accept_encoding=headers.get("accept-encoding"))


def plain_datetime(value: str | None) -> datetime | None:
    """A `QueryDateTime` parameter (api/timerange.py) as FastAPI passes it to the endpoint (None if absent),
    or `Unsure` for a value FastAPI refuses (its 422)."""
    if value is None:
        return None
    try:
        parsed = strict_datetime(value)
    except Exception:  # a 422 (PydanticCustomError) or anything else: FastAPI's to judge, as it always was
        raise Unsure from None
    if not isinstance(parsed, datetime):
        raise Unsure
    return parsed
