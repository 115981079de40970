"""`auditkeep verify`, `auditkeep checkpoint` and `auditkeep verify-export` (issue #3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from auditkeep.cli._common import cli_origin, err_console, fail, one_line_errors, store
from auditkeep.integrity.checkpoints import Checkpoint, load_checkpoint
from auditkeep.integrity.keyring import load_public_keys
from auditkeep.storage import identity

_HEAD = 4096  # bytes looked at to tell an export's format when its suffix does not


def _read_checkpoint(path: Path) -> Checkpoint:
    try:
        return load_checkpoint(path.read_bytes())
    except OSError as exc:
        raise fail(f"cannot read checkpoint {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise fail(f"{path} is not a checkpoint: {str(exc).splitlines()[0]}") from None


def register(app: typer.Typer) -> None:
    """Add the commands to the root app."""

    @app.command("verify")
    @one_line_errors
    def verify(
        org: Annotated[str, typer.Option("--org", help="Organization name.")],
        checkpoint: Annotated[
            Path | None, typer.Option("--checkpoint", help="A checkpoint saved earlier (JSON).", dir_okay=False)
        ] = None,
    ) -> None:
        """Check an organization's stored log: every hash and link, the Merkle tree, every signed checkpoint.

        Exit 0 when intact; 1 naming the first broken seq and why. With --checkpoint (one saved earlier,
        e.g. from `auditkeep checkpoint`), rewriting or truncation up to its tree size is caught too.

        Example: auditkeep verify --org acme --checkpoint acme-2024-05.json
        """
        from auditkeep.ingest.verification import verify_org

        saved = _read_checkpoint(checkpoint) if checkpoint is not None else None
        with store() as storage:
            with storage.read() as conn:
                o = identity.get_org(conn, org)
            result = verify_org(storage, o.id, checkpoint=saved, origin=cli_origin())
        for line in result.summary():
            typer.echo(line)
        broken = result.report.broken
        if broken is not None:
            raise fail(f"the log of {org} is broken at seq {broken.seq}: {broken.reason} ({broken.kind.value})")

    @app.command("checkpoint")
    @one_line_errors
    def checkpoint(org: Annotated[str, typer.Option("--org", help="Organization name.")]) -> None:
        """Sign a checkpoint of the organization's log now and print it as JSON on stdout.

        Keep it somewhere the server cannot reach; `verify --checkpoint` and `verify-export --checkpoint`
        then prove any later rewrite or truncation.  Example: auditkeep checkpoint --org acme > cp.json
        """
        from auditkeep.ingest.checkpointing import make_checkpoint

        with store() as storage:
            with storage.read() as conn:
                o = identity.get_org(conn, org)
            made = make_checkpoint(storage, o.id, cli_origin())
        typer.echo(orjson.dumps(made.model_dump(), option=orjson.OPT_INDENT_2).decode())

    @app.command("verify-export")
    @one_line_errors
    def verify_export(
        file: Annotated[Path, typer.Argument(help="Export made with include=integrity: JSON, NDJSON or CSV "
                                             "(told by suffix, else by content).", dir_okay=False)],
        public_key: Annotated[Path, typer.Option("--public-key", help="As GET /api/v1/integrity/public_key "
                                                 "serves it (retired keys too), or a PEM file.", dir_okay=False)],
        checkpoint: Annotated[
            Path | None, typer.Option("--checkpoint", help="A signed checkpoint (JSON).", dir_okay=False)
        ] = None,
        complete: Annotated[bool | None, typer.Option(
            "--complete/--no-complete",
            help="Fail (exit 1) when a seq is absent from the first exported through the last, or through the "
                 "checkpoint's tree size. Default: on, unless the export states its query was filtered.")] = None,
    ) -> None:
        """Check an export offline (no database, no server) against the public key and a checkpoint.

        Any format GET /api/v1/audit_logs?include=integrity writes: JSON ({"logs": [...]} or a bare array),
        NDJSON or CSV. Read in constant memory; events may come in any order.

        Completeness: every seq from the first exported through the last (through the checkpoint's tree
        size, if higher) must be present, else exit 1 naming the missing ranges. This holds unless the
        export states its query was filtered (a JSON or NDJSON export made with include=integrity says so
        first); a CSV export or one without that statement is held to it. The statement is not signed:
        --complete insists whatever it says, --no-complete only reports the gaps.

        Exit 0: everything holds.
        Exit 1: a mismatch (the first bad seq is named), seqs missing from a complete export (the ranges
        are named), or a file that is not an export (where is named).
        Exit 2: the checkpoint's last event is not in the export (only when completeness is not required).

        Example: auditkeep verify-export logs.ndjson --public-key key.json --checkpoint cp.json
        """
        from auditkeep.client import ExportFileError
        from auditkeep.client._files import detect_format, iter_records
        from auditkeep.integrity.export import verify_export as check

        try:
            keys = load_public_keys(public_key.read_bytes())
        except OSError as exc:
            raise fail(f"cannot read public key {public_key}: {exc.strerror}") from None
        except ValueError as exc:
            raise fail(f"{public_key}: {exc}") from None
        saved = _read_checkpoint(checkpoint) if checkpoint is not None else None
        # A rotated server publishes its retired keys too: check the one the checkpoint names.
        key = keys.get(saved.key_id) if saved is not None else None
        key = key or next(iter(keys.values()))
        try:
            with file.open("rb") as stream:
                fmt = detect_format(file, stream.peek(_HEAD)[:_HEAD])
                records = iter_records(stream, fmt, bare_array=True, statements=True)
                report = check(records, public_key=key, checkpoint=saved, complete=complete)
        except OSError as exc:
            raise fail(f"cannot read export {file}: {exc.strerror}") from None
        except ExportFileError as exc:
            raise fail(f"{file} (read as {fmt.upper()}): {exc}") from None
        for line in report.summary():
            typer.echo(line)
        if report.exit_code:
            err_console.print(f"error: {report.reason}", markup=False)
            raise typer.Exit(report.exit_code)
