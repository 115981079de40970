"""`auditkeep evidence` and `auditkeep verify-bundle` (issue #12): make an auditor's bundle, check one offline."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from auditkeep.cli._common import cli_origin, err_console, fail, one_line_errors, store
from auditkeep.cli._filters import FilterOptions, filter_options
from auditkeep.storage import identity
from auditkeep.storage.types import format_timestamp


def _moment(name: str, value: str | None) -> str | None:
    """API timestamp text of an ISO 8601 date-time (naive = UTC)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise fail(f"{name} {value!r} is not an ISO 8601 date-time (e.g. 2026-01-01 or 2026-01-01T00:00:00Z)",
                   2) from None
    return format_timestamp(parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC))


def register(app: typer.Typer) -> None:
    """Add the commands to the root app."""

    @app.command("evidence")
    @one_line_errors
    @filter_options
    def evidence(
        *,
        org: Annotated[str, typer.Option("--org", help="Organization name.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="The bundle to write (a .zip).", dir_okay=False)],
        start: Annotated[str | None, typer.Option("--start", help="From this date-time (inclusive; naive = UTC).")]
        = None,
        end: Annotated[str | None, typer.Option("--end", help="Until this date-time (exclusive).")] = None,
        filters: FilterOptions,
    ) -> None:
        """Write an evidence bundle: the events of a range with the signed checkpoints around it, proofs, the
        public key, a README and report.html, in one zip an auditor checks offline with verify-bundle.

        Filters are GET /api/v1/audit_logs's; a filtered bundle says so and is not held to completeness.
        Making a bundle is recorded as `evidence.export` in the organization's log.

        Example: auditkeep evidence --org acme --start 2026-01-01 --end 2026-04-01 --output q1.zip
        """
        from auditkeep.evidence.making import bundle_request, plan_bundle, write_bundle

        request = bundle_request(_moment("--start", start), _moment("--end", end), filters.log_filters(),
                                 filters.as_sent())
        with store() as storage:
            with storage.read() as conn:
                o = identity.get_org(conn, org)
            plan = plan_bundle(storage, o.id, request, cli_origin())
            # Written beside the target and renamed into place, so a failed run leaves no half bundle.
            fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent or ".")
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in write_bundle(storage, plan):
                        f.write(chunk)
                os.replace(tmp, output)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        err_console.print(f"{plan.events:,} events of {org} → {output} (checkpoints at tree sizes "
                          f"{plan.before.tree_size if plan.before else 0} and {plan.after.tree_size})", markup=False)

    @app.command("verify-bundle")
    def verify_bundle(
        file: Annotated[Path, typer.Argument(help="An evidence bundle (.zip) from `auditkeep evidence` or "
                                             "GET /api/v1/evidence.", dir_okay=False)],
    ) -> None:
        """Check an evidence bundle offline: no server, no database, nothing but the zip.

        Exit 0: everything holds. Exit 1: something fails, one `failed:` line per failure (a changed,
        missing, reordered or added event, a bad proof or signature, a file whose SHA-256 differs from the
        manifest, a missing seq in an unfiltered bundle). Exit 2: not a readable bundle.

        Example: auditkeep verify-bundle evidence-acme-2026-03-31.zip
        """
        from auditkeep.evidence.checking import UnreadableBundleError
        from auditkeep.evidence.checking import verify_bundle as check

        try:
            report = check(file)
        except UnreadableBundleError as exc:
            raise fail(str(exc), 2) from None
        for line in report.summary():
            typer.echo(line)
        if report.exit_code:
            err_console.print(f"error: {len(report.failures)} check(s) failed; first: {report.failures[0]}",
                              markup=False)
            raise typer.Exit(report.exit_code)
