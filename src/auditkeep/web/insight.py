"""The audit log page's activity chart and top lists (issue #13): storage/stats.py's counts for the page's
own filters, drawn as server-rendered SVG so the strict CSP needs no script and zooming is a plain link.

Each bar links to the same filters with a custom range of just its bucket; its interval is chosen so the
range shows at most about 200 bars (a bar stays a few pixels wide on a phone).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import urlencode

from auditkeep.errors import InvalidRangeError
from auditkeep.storage import Storage, stats
from auditkeep.storage.types import format_timestamp, parse_timestamp
from auditkeep.web.queries import LogFilter, log_query

WIDTH = 1000  # the SVG's user units; it scales to the card's width
HEIGHT = 120
_MAX_BARS = 200
_LOCAL = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends, which LogFilter's custom range reads


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    height: float  # all events
    failure_height: float
    href: str
    label: str
    count: int
    failures: int


@dataclass(frozen=True, slots=True)
class Chart:
    interval: stats.Interval
    bars: list[Bar]
    total: int
    failures: int
    peak: int
    first: str  # the range shown, for the axis labels
    last: str
    top_actors: list[stats.TopValue]
    top_actions: list[stats.TopValue]
    top_addresses: list[stats.TopValue]


def choose_interval(start: datetime, end: datetime) -> stats.Interval:
    """The finest interval that shows [start, end) in at most _MAX_BARS bars."""
    span = end - start
    for name, width in stats.INTERVALS.items():
        if span / width <= _MAX_BARS:
            return name
    return "day"


def _bounds(storage: Storage, org_id: int, f: LogFilter, now: datetime) -> tuple[datetime, datetime]:
    start, end = f.bounds(now)
    if start is None:  # "All time", or a custom range open at its start: from the first event
        first = stats.first_timestamp(storage, org_id)
        low = now - timedelta(days=1) if first is None else first
    else:
        low = parse_timestamp(start)
    return low, parse_timestamp(end) if end is not None else now


def _floor(moment: datetime, interval: stats.Interval) -> datetime:
    if interval == "minute":
        return moment.replace(second=0, microsecond=0)
    if interval == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def zoom_params(f: LogFilter, start: datetime, end: datetime) -> dict[str, str]:
    """The page's filters with a custom range of [start, end)."""
    return replace(f, range="custom", start=start.strftime(_LOCAL), end=end.strftime(_LOCAL)).params()


def chart(storage: Storage, org_id: int, f: LogFilter, now: datetime) -> Chart | None:
    """The chart and top lists for the page's filters (FilterError as the page's own query raises); None
    when even days make more than stats.MAX_BUCKETS bars (over 13 years of daily activity)."""
    try:
        return _chart(storage, org_id, f, now)
    except InvalidRangeError:
        return None


def _chart(storage: Storage, org_id: int, f: LogFilter, now: datetime) -> Chart:
    low, high = _bounds(storage, org_id, f, now)
    interval = choose_interval(low, high)
    width = stats.INTERVALS[interval]
    first = _floor(low, interval)
    slots = max(1, -(-(high - first) // width))  # ceil
    query = log_query(org_id, f, now)
    buckets = stats.buckets(storage, query, interval)
    peak = max((b.count for b in buckets), default=0)
    slot_width = WIDTH / slots
    bars = []
    for b in buckets:
        at = parse_timestamp(b.start)
        index = (at - first) // width
        height = HEIGHT * b.count / peak if peak else 0
        end = at + width
        bars.append(Bar(
            x=round(index * slot_width, 2), width=round(max(slot_width * 0.85, 0.5), 2), height=round(height, 2),
            failure_height=round(height * b.failures / b.count, 2) if b.count else 0.0,
            href="/audit-logs?" + urlencode(zoom_params(f, at, end)),
            label=f"{format_timestamp(at)[:16].replace('T', ' ')} UTC: {b.count:,} event{'s' if b.count != 1 else ''}"
                  f", {b.failures:,} failure{'s' if b.failures != 1 else ''}",
            count=b.count, failures=b.failures))
    return Chart(
        interval=interval, bars=bars, total=sum(b.count for b in buckets),
        failures=sum(b.failures for b in buckets), peak=peak,
        first=format_timestamp(first)[:16].replace("T", " "), last=format_timestamp(high)[:16].replace("T", " "),
        top_actors=stats.top(storage, query, "user_email", 5), top_actions=stats.top(storage, query, "action", 5),
        top_addresses=stats.top(storage, query, "client_ip", 5),
    )
