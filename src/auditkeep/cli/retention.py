"""`auditkeep orgs set-retention` and `auditkeep purge`: per-organization retention (issue #4)."""

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


@orgs.app.command("set-retention")
@one_line_errors
def set_retention(
    name: Annotated[str, typer.Argument(help="The organization.")],
    days: Annotated[int, typer.Argument(min=0, help="Keep events this many days; 0 keeps them forever.")],
) -> None:
    """Set how long an organization's events are kept; `auditkeep purge` deletes older ones.

    Example: auditkeep orgs set-retention acme 365
    """
    with store() as storage:
        with storage.write() as conn:
            org = identity.get_org(conn, name)
            identity.set_retention(conn, org.id, days or None)
        shown = f"{days} days" if days else "forever"
        audit(storage, org.id, "organization.retention_change", cli_origin(), object_type="organization",
              object_id=org.id, log_entry=f"Retention of {name!r} set to {shown} (was "
              f"{f'{org.retention_days} days' if org.retention_days else 'forever'})",
              payload={"retention_days": days or None, "previous_retention_days": org.retention_days})
    typer.echo(f"retention of {name}: {shown}")


def _describe(result: PurgeResult, days: int) -> str:
    return (f"Retention purge: {result.count} event(s) older than {days} days deleted "
            f"(seq {result.first_seq}..{result.last_seq}, timestamps {result.oldest}..{result.newest})")


def register(app: typer.Typer) -> None:
    """Add `purge` to the root app (set-retention joins the `orgs` group on import)."""

    @app.command("purge")
    @one_line_errors
    def purge(
        org: Annotated[str | None, typer.Option("--org", help="Only this organization (default: all).")] = None,
    ) -> None:
        """Delete events older than each organization's retention, in batches, and record a
        `retention.purge` event (count, seq and time range) in each organization that lost any.

        The deleted events are always the oldest part of the chain, so verification still holds from the
        oldest kept event. Example (daily, from cron): auditkeep purge
        """
        origin = cli_origin()
        with store() as storage:
            with storage.read() as conn:
                targets = [identity.get_org(conn, org)] if org else identity.list_orgs(conn)
            if org and targets[0].retention_days is None:
                raise fail(f"organization {org!r} keeps its events forever (auditkeep orgs set-retention)")
            for target in targets:
                days = target.retention_days
                if days is None:
                    continue
                # Anchor first: a signed checkpoint plus the Merkle compact range at the purge boundary,
                # so roots stay checkable afterwards; it refuses (and nothing is deleted) if the events
                # about to go do not verify, since purging them would destroy the evidence.
                result = purge_org(
                    storage, target.id, cutoff_for(days),
                    before_delete=functools.partial(anchor_before_purge, storage, target.id),
                )
                if result.count:
                    audit(storage, target.id, "retention.purge", origin, object_type="organization",
                          object_id=target.id, log_entry=_describe(result, days),
                          payload={"count": result.count, "first_seq": result.first_seq,
                                   "last_seq": result.last_seq, "oldest_timestamp": result.oldest,
                                   "newest_timestamp": result.newest, "cutoff": result.cutoff,
                                   "retention_days": days})
                err_console.print(f"{target.name}: {result.count} event(s) purged", markup=False)
