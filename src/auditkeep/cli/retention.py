"""`auditkeep orgs set-retention` and `auditkeep purge`: per-organization retention (issues #4 and #9)."""

from __future__ import annotations

import functools
from typing import Annotated

import typer

from auditkeep.cli import orgs
from auditkeep.cli._common import cli_origin, err_console, fail, one_line_errors, store
from auditkeep.ingest.checkpointing import anchor_before_purge
from auditkeep.ingest.selfaudit import audit
from auditkeep.storage import identity
from auditkeep.storage.retention import PurgeResult, cutoff_for, purge_org

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
    "Example: auditkeep orgs set-retention acme 365",
])
_PURGE_HELP = "\n\n".join([
    "Delete the events each organization has kept longer than its retention, in batches, and record a "
    "`retention.purge` event (counts, seq and time range) in each organization that lost any.",
    f"{_RULE.replace('DAYS', 'its retention')} The deleted events are therefore always the oldest part of the "
    "chain: a signed anchor of the boundary is stored first, and verification still holds from the oldest "
    "kept event.",
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
    days: Annotated[str, typer.Argument(
        metavar="DAYS", help=f"Keep events this many days after they were received (1 to {MAX_RETENTION_DAYS:,}), "
                             "or 'forever'.")],
) -> None:
    retention = parse_days(days)
    with store() as storage:
        with storage.write() as conn:
            org = identity.get_org(conn, name)
            identity.set_retention(conn, org.id, retention)
        shown = f"{retention} days" if retention else "forever"
        audit(storage, org.id, "organization.retention_change", cli_origin(), object_type="organization",
              object_id=org.id, log_entry=f"Retention of {name!r} set to {shown} (was "
              f"{f'{org.retention_days} days' if org.retention_days else 'forever'})",
              payload={"retention_days": retention, "previous_retention_days": org.retention_days})
    typer.echo(f"retention of {name}: {shown}")


def _describe(result: PurgeResult, days: int) -> str:
    """What a purge deleted and kept, and why, in one line (also the `retention.purge` event's text)."""
    if result.count:
        deleted = (f"deleted {result.count:,} events (seq {result.first_seq:,}-{result.last_seq:,}) received "
                   f"before {result.cutoff}")
    else:
        deleted = f"deleted no events (none received before {result.cutoff})"
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
            if org and targets[0].retention_days is None:
                raise fail(f"organization {org!r} keeps its events forever (auditkeep orgs set-retention)")
            for target in targets:
                days = target.retention_days
                if days is None:
                    err_console.print(f"{target.name}: keeps its events forever; nothing deleted", markup=False)
                    continue
                # Anchor first: a signed checkpoint plus the Merkle compact range at the purge boundary,
                # so roots stay checkable afterwards; it refuses (and nothing is deleted) if the events
                # about to go do not verify, since purging them would destroy the evidence.
                result = purge_org(
                    storage, target.id, cutoff_for(days),
                    before_delete=functools.partial(anchor_before_purge, storage, target.id),
                )
                summary = _describe(result, days)
                if result.count:
                    audit(storage, target.id, "retention.purge", origin, object_type="organization",
                          object_id=target.id, log_entry=f"Retention purge: {summary}",
                          payload={"count": result.count, "first_seq": result.first_seq,
                                   "last_seq": result.last_seq, "oldest_timestamp": result.oldest,
                                   "newest_timestamp": result.newest, "cutoff": result.cutoff,
                                   "cutoff_applies_to": "received_at", "kept": result.kept,
                                   "kept_with_older_timestamp": result.kept_old, "retention_days": days})
                err_console.print(f"{target.name}: {summary}", markup=False)
