"""Per-action retention rules (issue #12): how long each event is kept, by its action.

A rule names an exact action (`user.login`) or a prefix ending in `*` (`billing.*`); `*` is the
organization's default (its maximum is organizations.retention_days, as before rules existed). For an
event:

- its **maximum** is the most specific matching rule's DAYS: an exact action beats any prefix, a longer
  prefix beats a shorter one, and `*` matches every event (an event without an action matches only `*`);
  "forever" is a maximum too;
- its **minimum** is the largest `min_days` of *every* matching rule, so a broad rule's minimum (say
  `* --min-days 365` for an auditor) is a floor no more specific rule can go under.

It may be deleted once it was received longer ago than both. Retention still deletes only a prefix of
the chain (storage/retention.py), so an event a rule keeps also keeps every later one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from auditkeep.storage.identity import Org
from auditkeep.storage.tables import retention_rules
from auditkeep.storage.types import format_timestamp

DEFAULT = "*"


def check_pattern(action: str) -> str:
    """`action` as a rule's pattern: an exact action or one prefix ending in `*`; ValueError otherwise."""
    pattern = action.strip()
    if not pattern or len(pattern) > 200 or "\x00" in pattern:
        raise ValueError(f"--action must be 1 to 200 characters, got {action!r}")
    if "*" in pattern[:-1]:
        raise ValueError(f"--action is an exact action or a prefix ending in '*' (one '*', at the end), "
                         f"got {action!r}")
    return pattern


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: `max_days` None = forever; `min_days` None = no minimum."""

    action: str
    max_days: int | None
    min_days: int | None = None

    def matches(self, action: str | None) -> bool:
        if self.action.endswith("*"):
            return self.action == DEFAULT or (action is not None and action.startswith(self.action[:-1]))
        return action == self.action

    @property
    def specificity(self) -> tuple[int, int]:
        """Exact actions first, then longer prefixes; `*` last."""
        return (0, len(self.action)) if self.action.endswith("*") else (1, len(self.action))

    def describe(self) -> str:
        keep = f"{self.max_days} days" if self.max_days is not None else "forever"
        return f"rule {self.action!r} ({keep}" + (f", at least {self.min_days} days)" if self.min_days else ")")


@dataclass(frozen=True, slots=True)
class Verdict:
    """For one action: the cutoff on received_at before which it may go (None: never), and the rule
    that sets that cutoff (its maximum or, when larger, a minimum)."""

    cutoff: str | None
    rule: Rule
    by_minimum: bool


@dataclass
class Policy:
    """An organization's rules, evaluated at `now`."""

    rules: list[Rule]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    _cache: dict[str | None, Verdict] = field(default_factory=dict)

    @property
    def default(self) -> Rule:
        return next(r for r in self.rules if r.action == DEFAULT)

    @property
    def per_action(self) -> bool:
        """Whether anything beyond the plain default maximum is set (the purge then reports by rule)."""
        return len(self.rules) > 1 or self.default.min_days is not None

    @property
    def deletes_anything(self) -> bool:
        return any(r.max_days is not None for r in self.rules)

    def _cutoff(self, days: int) -> str:
        return format_timestamp(self.now - timedelta(days=days))

    def verdict(self, action: str | None) -> Verdict:
        if action in self._cache:
            return self._cache[action]
        matching = [r for r in self.rules if r.matches(action)]
        governing = max(matching, key=lambda r: r.specificity)
        floor = max((r for r in matching if r.min_days), key=lambda r: r.min_days or 0, default=None)
        if governing.max_days is None:
            result = Verdict(None, governing, False)
        elif floor is not None and floor.min_days is not None and floor.min_days > governing.max_days:
            result = Verdict(self._cutoff(floor.min_days), floor, True)
        else:
            result = Verdict(self._cutoff(governing.max_days), governing, False)
        self._cache[action] = result
        return result


def list_rules(conn: sa.Connection, org: Org) -> list[Rule]:
    """The organization's rules, the default (`*`, from organizations.retention_days) first."""
    rows = conn.execute(sa.select(retention_rules.c.action, retention_rules.c.max_days, retention_rules.c.min_days)
                        .where(retention_rules.c.org_id == org.id).order_by(retention_rules.c.action)).all()
    default_min = next((r.min_days for r in rows if r.action == DEFAULT), None)
    return [Rule(DEFAULT, org.retention_days, default_min),
            *(Rule(r.action, r.max_days, r.min_days) for r in rows if r.action != DEFAULT)]


def policy(conn: sa.Connection, org: Org, now: datetime | None = None) -> Policy:
    return Policy(list_rules(conn, org), now or datetime.now(UTC))


def set_rule(conn: sa.Connection, org_id: int, rule: Rule) -> None:
    """Store a rule (replacing the one for the same pattern). The default's maximum lives in
    organizations.retention_days, which the caller sets; its row keeps the minimum."""
    now = datetime.now(UTC)
    conn.execute(retention_rules.delete().where(retention_rules.c.org_id == org_id,
                                                retention_rules.c.action == rule.action))
    if rule.action == DEFAULT and rule.min_days is None:
        return
    conn.execute(retention_rules.insert().values(org_id=org_id, action=rule.action, max_days=rule.max_days,
                                                 min_days=rule.min_days, updated_at=now))


def remove_rule(conn: sa.Connection, org_id: int, action: str) -> bool:
    """Delete a per-action rule; whether there was one."""
    done = conn.execute(retention_rules.delete().where(retention_rules.c.org_id == org_id,
                                                       retention_rules.c.action == action)).rowcount
    return bool(done)
