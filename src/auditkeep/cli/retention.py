"""`auditkeep orgs set-retention` and `auditkeep purge`: per-organization retention (issues #4 and #9)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import typer

from auditkeep.cli import orgs
from auditkeep.cli._common import cli_origin, err_console, fail, one_line_errors, store
from auditkeep.ingest.checkpointing import anchor_before_purge
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity, retention_rules
from auditkeep.storage.retention import PurgeResult, cutoff_for, purge_org
from auditkeep.storage.retention_rules import DEFAULT, Rule

MAX_RETENTION_DAYS = 36_500  # a hundred years: anything longer is a typo, or means "forever"
_RULE = ("Retention counts from when auditkeep received an event, not from its timestamp: an imported or "
         "back-dated event is kept for DAYS after it arrived, then purged.")


def parse_days(text: str) -> int | None:
    """A retention argument: a whole number of days from 1 to MAX_RETENTION_DAYS, or "forever" (None)."""
    if text.strip().lower() == "forever":
        return None
    value = text.strip().replace("_", "").replace(",", "")
    if not value.isdigit() or not 1 <= int(value) <= MAX_RETENTION_DAYS:
        raise fail(f"DAYS must be a whole number of days from 1 to {MAX_RETENTION_DAYS:,}, or 'forever'; "
                   f"got {text!r}", 2)
    return int(value)


# Help texts are paragraphs of one line each: rich keeps a help text's line breaks.
_SET_RETENTION_HELP = "\n\n".join([
    "Set how long an organization's events are kept; `auditkeep purge` deletes the rest.",
    f"{_RULE} The purge deletes exactly the oldest part of the chain (events received more than DAYS ago), "
    "so the chain still verifies from the oldest kept event.",
    "With --action ACTION or --action 'PREFIX*' it sets a per-action rule instead: the most specific rule "
    "matching an event's action gives its DAYS (an exact action beats a prefix, a longer prefix a shorter one, "
    "the default rule comes last). --min-days N forbids deleting the events a rule matches before N days, "
    "whatever a more specific rule says. The purge still deletes only the oldest part of the chain: it stops "
    "at the first event its rule (or a legal hold) keeps, so that event keeps every later one.",
    "Examples: auditkeep orgs set-retention acme 365 --min-days 90; auditkeep orgs set-retention acme 7 "
    "--action 'debug.*'; auditkeep orgs set-retention acme --action 'debug.*' --remove",
])
_PURGE_HELP = "\n\n".join([
    "Delete the events each organization has kept longer than its retention, in batches, and record a "
    "`retention.purge` event (counts, seq and time range) in each organization that lost any.",
    f"{_RULE.replace('DAYS', 'its retention')} The deleted events are therefore always the oldest part of the "
    "chain: a signed anchor of the boundary is stored first, and verification still holds from the oldest "
    "kept event.",
    "It never deletes an event a legal hold covers (auditkeep holds): it stops before the first one, and says "
    "so (\"kept because hold ID (REASON) covers seq N\"); with per-action rules it stops at the first event "
    "its rule keeps, and names the rule.",
    "For each organization it prints what it deleted and what it kept, e.g. \"demo: deleted 1,204 events "
    "(seq 1-1,204) received before 2026-09-04T00:00:00.000000Z; kept 8,351 events received since, 7,147 of "
    "them with a timestamp older than 90 days because they were received within the last 90 days (imported "
    "or back-dated)\".",
    "Example (daily, from cron): auditkeep purge",
])


# Unknown options pass as arguments, so `-5` gets parse_days' one-line message, not "No such option".
@orgs.app.command("set-retention", help=_SET_RETENTION_HELP, context_settings={"ignore_unknown_options": True})
@one_line_errors
def set_retention(
    name: Annotated[str, typer.Argument(help="The organization.")],
    days: Annotated[str | None, typer.Argument(
        metavar="DAYS", help=f"Keep events this many days after they were received (1 to {MAX_RETENTION_DAYS:,}), "
                             "or 'forever'. Needed unless --remove.", show_default=False)] = None,
    action: Annotated[str | None, typer.Option(
        "--action", metavar="ACTION|PREFIX*",
        help="Only events with this action, or whose action starts with PREFIX (the most specific rule wins). "
             "Default: the organization's default rule.")] = None,
    min_days: Annotated[str | None, typer.Option(
        "--min-days", metavar="N",
        help="Also forbid deleting these events before N days, whatever a more specific rule says.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the --action rule instead (no DAYS; "
                                                          "a - in its place is accepted, as before).")] = False,
) -> None:
    pattern = DEFAULT
    if action is not None:
        try:
            pattern = retention_rules.check_pattern(action)
        except ValueError as exc:
            raise fail(str(exc), 2) from None
    if remove:
        # `-` stood in for DAYS while DAYS was required (issue #9); a number with --remove would be a
        # rule's new length that the removal then ignored, so it is refused instead of guessed at.
        if days not in (None, "-"):
            raise fail(f"--remove takes no DAYS (got {days!r}): it removes the --action rule", 2)
        _remove_rule(name, pattern)
        return
    if days is None:
        raise fail("missing DAYS: how many days to keep the events (or 'forever'); only --remove goes "
                   "without it", 2)
    retention = parse_days(days)
    floor = parse_days(min_days) if min_days is not None else None
    if min_days is not None and floor is None:
        raise fail("--min-days must be a number of days ('forever' is DAYS' job)", 2)
    if floor is not None and retention is not None and floor > retention:
        raise fail(f"--min-days {floor} is more than DAYS {retention}: a rule cannot keep events for at least "
                   f"longer than it keeps them at most", 2)
    rule = Rule(pattern, retention, floor)
    with store() as storage:
        with storage.write() as conn:
            org = identity.get_org(conn, name)
            before = next((r for r in retention_rules.list_rules(conn, org) if r.action == pattern), None)
            if pattern == DEFAULT:
                identity.set_retention(conn, org.id, retention)
            retention_rules.set_rule(conn, org.id, rule)
        shown = f"{retention} days" if retention else "forever"
        if floor is not None:
            shown += f", at least {floor} days"
        if pattern == DEFAULT:
            was = f"{org.retention_days} days" if org.retention_days else "forever"
            text = f"Retention of {name!r} set to {shown} (was {was})"
        else:
            was = before.describe() if before else "no rule"
            text = f"Retention of {name!r} for actions {pattern!r} set to {shown} (was {was})"
        payload: dict[str, Any] = {"retention_days": retention, "previous_retention_days": org.retention_days}
        if pattern != DEFAULT or floor is not None or (before is not None and before.min_days is not None):
            payload = {"action": pattern, "retention_days": retention, "min_days": floor,
                       "previous": None if before is None else
                       {"retention_days": before.max_days, "min_days": before.min_days}}
        audit(storage, org.id, "organization.retention_change", cli_origin(), object_type="organization",
              object_id=org.id, log_entry=text, payload=payload)
    typer.echo(f"retention of {name}: {shown}" if pattern == DEFAULT else
               f"retention of {name} for {pattern}: {shown}")


def _remove_rule(name: str, pattern: str) -> None:
    if pattern == DEFAULT:
        raise fail("--remove needs --action (the default rule is changed, not removed)", 2)
    with store() as storage:
        with storage.write() as conn:
            org = identity.get_org(conn, name)
            before = next((r for r in retention_rules.list_rules(conn, org) if r.action == pattern), None)
            if before is None or not retention_rules.remove_rule(conn, org.id, pattern):
                raise fail(f"organization {name!r} has no retention rule for {pattern!r}")
        audit(storage, org.id, "organization.retention_change", cli_origin(), object_type="organization",
              object_id=org.id, log_entry=f"Retention rule {before.describe()} of {name!r} removed",
              payload={"action": pattern, "removed": True,
                       "previous": {"retention_days": before.max_days, "min_days": before.min_days}})
    typer.echo(f"retention of {name} for {pattern}: rule removed")


@orgs.app.command("retention")
@one_line_errors
def show_retention(name: Annotated[str, typer.Argument(help="The organization.")]) -> None:
    """One line a retention rule: the default (*) first, then per-action rules.

    Example: auditkeep orgs retention acme
    """
    with store() as storage, storage.read() as conn:
        rules = retention_rules.list_rules(conn, identity.get_org(conn, name))
    for rule in rules:
        keep = f"{rule.max_days} days" if rule.max_days is not None else "forever"
        typer.echo(f"{rule.action}\t{keep}" + (f"\tat least {rule.min_days} days" if rule.min_days else ""))


def _describe(result: PurgeResult, days: int | None, per_action: bool) -> str:
    """What a purge deleted and kept, and why, in one line (also the `retention.purge` event's text)."""
    if per_action:
        deleted = (f"deleted {result.count:,} events (seq {result.first_seq:,}-{result.last_seq:,}), each past "
                   f"its retention rule" if result.count else "deleted no events")
    elif result.count:
        deleted = (f"deleted {result.count:,} events (seq {result.first_seq:,}-{result.last_seq:,}) received "
                   f"before {result.cutoff}")
    else:
        deleted = f"deleted no events (none received before {result.cutoff})"
    if result.stop is not None:
        return f"{deleted}; kept {result.kept:,} events from seq {result.stop.seq:,}: {result.stop.text}"
    kept = f"kept {result.kept:,} events received since"
    if result.kept_old:
        kept += (f", {result.kept_old:,} of them with a timestamp older than {days} days because they were "
                 f"received within the last {days} days (imported or back-dated)")
    return f"{deleted}; {kept}"


def register(app: typer.Typer) -> None:
    """Add `purge` to the root app (set-retention joins the `orgs` group on import)."""

    @app.command("purge", help=_PURGE_HELP)
    @one_line_errors
    def purge(
        org: Annotated[str | None, typer.Option("--org", help="Only this organization (default: all).")] = None,
    ) -> None:
        origin = cli_origin()
        with store() as storage:
            with storage.read() as conn:
                targets = [identity.get_org(conn, org)] if org else identity.list_orgs(conn)
                policies = {t.id: retention_rules.policy(conn, t) for t in targets}
            if org and not policies[targets[0].id].deletes_anything:
                raise fail(f"organization {org!r} keeps its events forever (auditkeep orgs set-retention)")
            for target in targets:
                days = target.retention_days
                policy = policies[target.id]
                if not policy.deletes_anything:
                    err_console.print(f"{target.name}: keeps its events forever; nothing deleted", markup=False)
                    continue
                # Anchor first: a signed checkpoint plus the Merkle compact range at the purge boundary,
                # so roots stay checkable afterwards; it refuses (and nothing is deleted) if the events
                # about to go do not verify, since purging them would destroy the evidence.
                # Per-action rules and minimums: each event's cutoff is its action's; without them the
                # plain cutoff (and the report it has always made). Legal holds stop it either way.
                result = purge_org(
                    storage, target.id, cutoff_for(days) if days is not None else None,
                    before_delete=functools.partial(anchor_before_purge, storage, target.id),
                    policy=policy if policy.per_action else None,
                )
                summary = _describe(result, days, policy.per_action)
                if result.count:
                    audit(storage, target.id, "retention.purge", origin, object_type="organization",
                          object_id=target.id, log_entry=f"Retention purge: {summary}",
                          payload={"count": result.count, "first_seq": result.first_seq,
                                   "last_seq": result.last_seq, "oldest_timestamp": result.oldest,
                                   "newest_timestamp": result.newest, "cutoff": result.cutoff,
                                   "cutoff_applies_to": "received_at", "kept": result.kept,
                                   "kept_with_older_timestamp": result.kept_old, "retention_days": days,
                                   **({"rules": [{"action": r.action, "retention_days": r.max_days,
                                                  "min_days": r.min_days} for r in policy.rules]}
                                      if policy.per_action else {}),
                                   **({"stopped_by": result.stop.detail} if result.stop else {})})
                err_console.print(f"{target.name}: {summary}", markup=False)
