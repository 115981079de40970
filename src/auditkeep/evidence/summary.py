"""What a bundle's report.html says: counts by action, actor and day, failures and support-staff access,
gathered one event at a time while the bundle is written, and the page rendered from a Jinja2 template
with inline CSS and no scripts, so it opens from the zip with no network.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import orjson

# Rows listed in full (failures, support-staff events); beyond these the report gives counts only, so the
# page stays small for a million events.
LISTED = 200
_TOP = 50  # actions and actors shown in their tables


@dataclass
class Summary:
    """Counts over a bundle's events."""

    events: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    by_actor: Counter[str] = field(default_factory=Counter)
    by_day: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    support: int = 0
    failure_rows: list[dict[str, Any]] = field(default_factory=list)
    support_rows: list[dict[str, Any]] = field(default_factory=list)

    def add_columns(self, texts: Sequence[str], *, actions: Sequence[Any], emails: Sequence[Any],
                    user_ids: Sequence[Any], statuses: Sequence[Any], supports: Sequence[Any],
                    days: Sequence[str]) -> None:
        """`add` for a chunk of events given as columns (storage/evidence.py's bundle rows; `texts` their
        JSON): Counter's C loop counts each column, and only a failure or a support-staff event is parsed,
        for its row (~2 CPU s less per 1,000,000 events than parsing and adding each)."""
        self.events += len(texts)
        self.by_action.update(map(str, actions))
        self.by_actor.update([str(email) if email else ("(none)" if uid is None else f"user {uid}")
                              for email, uid in zip(emails, user_ids, strict=True)])
        self.by_day.update(days)
        for i, (status, support) in enumerate(zip(statuses, supports, strict=True)):
            if status not in (None, "success") or support in (1, True):  # SQLite's 1 is PostgreSQL's true
                self._rare(orjson.loads(texts[i]))

    def add(self, event: Mapping[str, Any]) -> None:
        self.events += 1
        self.by_action[str(event.get("action"))] += 1
        self.by_actor[actor(event)] += 1
        self.by_day[str(event.get("timestamp"))[:10]] += 1
        self._rare(event)

    def _rare(self, event: Mapping[str, Any]) -> None:
        """The failure and support-staff counts and rows."""
        if event.get("status") not in (None, "success"):
            self.failures += 1
            if len(self.failure_rows) < LISTED:
                self.failure_rows.append(_row(event))
        if event.get("is_support_user") is True:
            self.support += 1
            if len(self.support_rows) < LISTED:
                self.support_rows.append(_row(event))


def actor(event: Mapping[str, Any]) -> str:
    """Who acted, as the report names them: the email, else `user <id>`, else `(none)`."""
    if event.get("user_email"):
        return str(event["user_email"])
    if event.get("user_id") is not None:
        return f"user {event['user_id']}"
    return "(none)"


def _row(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"seq": event.get("seq"), "timestamp": event.get("timestamp"), "actor": actor(event),
            "action": event.get("action"), "status": event.get("status"), "client_ip": event.get("client_ip")}


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("auditkeep.evidence", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_report(summary: Summary, *, manifest: Mapping[str, Any], checks: list[tuple[str, bool]],
                  checkpoints: Mapping[str, Any]) -> bytes:
    """report.html: the human summary of a bundle; `checks` are what was verified when it was made."""
    return _ENV.get_template("report.html").render(
        s=summary, m=manifest, checks=checks, checkpoints=checkpoints, listed=LISTED,
        actions=summary.by_action.most_common(_TOP), actors=summary.by_actor.most_common(_TOP),
        days=sorted(summary.by_day.items()), top=_TOP,
    ).encode()
