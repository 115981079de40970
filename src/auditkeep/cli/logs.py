"""`auditkeep logs` and `auditkeep ingest`: pull logs out of a service and push exports into one, over HTTP.

Both talk to a running service through the SDK (`auditkeep.client`), with the key from AUDITKEEP_API_KEY
(or DATAFOLD_API_KEY): they work against any auditkeep (or Datafold) deployment and never open a database.
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any, cast

import orjson
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from auditkeep.cli._common import err_console, fail
from auditkeep.cli._filters import FilterOptions, filter_options
from auditkeep.client import (
    AuditKeepClientError,
    Client,
    ExportFileError,
    ExportFormat,
    Filters,
    Order,
    ValidationError,
)
from auditkeep.client._files import detect_format, iter_records
from auditkeep.schemas.audit_logs import LOG_FIELDS

# Exports made with include=integrity carry these; they are the source service's, not events' content.
_SERVER_FIELDS = ("seq", "prev_hash", "hash")
# Events without an event_uuid get one derived from their content and occurrence, so running the same
# import again stores nothing twice (the service accepts a known uuid with the same content once).
_IMPORT_NAMESPACE = uuid.UUID("7d1f0c3e-5a2b-4c8e-9f61-2b7e4a0d9c15")

UrlOption = Annotated[str, typer.Option("--url", envvar="AUDITKEEP_URL", help="The service, e.g. https://audit.example.com")]


def _progress(enabled: bool | None) -> Progress:
    show = err_console.is_terminal if enabled is None else enabled
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.fields[events]:,} events"), TimeElapsedColumn(),
        console=err_console, disable=not show, transient=False,
    )


@contextmanager
def _client_errors() -> Iterator[None]:
    try:
        yield
    except (AuditKeepClientError, OSError) as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    """Add the commands to the root app."""

    @app.command("logs")
    @filter_options
    def logs(
        *,
        url: UrlOption,
        start: Annotated[str | None, typer.Option("--start", help="From this date-time (inclusive; naive = UTC).")]
        = None,
        end: Annotated[str | None, typer.Option("--end", help="Until this date-time (exclusive).")] = None,
        filters: FilterOptions,
        order: Annotated[str | None, typer.Option(help="asc (default) or desc.")] = None,
        fmt: Annotated[str, typer.Option("--format", help="json, ndjson or csv.")] = "json",
        output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (resumable) instead of "
                                                                          "stdout.")] = None,
        resume: Annotated[bool, typer.Option(help="Continue an interrupted export to --output.")] = True,
        page_size: Annotated[int, typer.Option("--page-size", min=1, max=10_000)] = 10_000,
        progress: Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                      help="Progress on stderr (default: when a terminal).")]
        = None,
    ) -> None:
        """Export audit logs from a service as JSON, NDJSON or CSV, page by page.

        An export to --output that is interrupted (Ctrl-C, a lost connection) continues where it stopped
        when the same command is run again; the finished file holds each event exactly once.

        Example: AUDITKEEP_API_KEY=ak_... auditkeep logs --url https://audit.example.com \\
        --start 2024-05-01 --action 'api_key.*' --format csv -o keys.csv
        """
        if fmt not in ("json", "ndjson", "csv"):
            raise fail(f"--format must be json, ndjson or csv, not {fmt!r}", 2)
        if order not in (None, "asc", "desc"):
            raise fail(f"--order must be asc or desc, not {order!r}", 2)
        given: Filters = filters.given()  # type: ignore[assignment]
        export_format: ExportFormat = fmt  # type: ignore[assignment]
        sort: Order | None = order  # type: ignore[assignment]
        with _client_errors(), Client(base_url=url) as client, _progress(progress) as bar:
            task = bar.add_task("export" if output is None else f"→ {output.name}", total=None, events=0)
            result = client.export(
                export_format, output if output is not None else sys.stdout.buffer, start_date=start,
                end_date=end, order=sort, page_size=page_size, resume=resume,
                progress=lambda n: bar.update(task, events=n), **given,
            )
            bar.update(task, events=result.events, total=1, completed=1)
        if output is not None:
            note = " (resumed)" if result.resumed else ""
            err_console.print(f"{result.events:,} events → {output}{note}", markup=False)

    @app.command("ingest")
    def ingest(
        file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="An export: JSON, NDJSON or CSV.")],
        url: UrlOption,
        fmt: Annotated[str | None, typer.Option("--format", help="json, ndjson or csv (default: guessed).")]
        = None,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000)] = 5000,
        progress: Annotated[bool | None, typer.Option("--progress/--no-progress")] = None,
    ) -> None:
        """Import an export (from `auditkeep logs` or the API) into the key's organization, in batches.

        Events keep their event_uuid and timestamp, so running the same import again after a failure
        stores nothing twice. An event without an event_uuid gets one derived from its content and its
        occurrence in the file (the 2nd identical line is occurrence 2): repeated lines stay distinct
        events, and a re-run still adds nothing. Ends with "N new, M already present". A bad event stops
        the import with its line (NDJSON, CSV) or its index in the logs array (JSON) and how many events
        before it are already stored; batches before it stay stored.

        Example: AUDITKEEP_API_KEY=ak_... auditkeep ingest may.ndjson --url https://audit.example.com
        """
        if fmt not in (None, "json", "ndjson", "csv"):
            raise fail(f"--format must be json, ndjson or csv, not {fmt!r}", 2)
        size = file.stat().st_size
        with _client_errors(), Client(base_url=url) as client, _progress(progress) as bar, open(file, "rb") as f:
            kind: ExportFormat = fmt or detect_format(file, f.peek(4096)[:4096])  # type: ignore[assignment]
            task = bar.add_task(f"← {file.name}", total=max(size, 1), events=0)
            run = _Import(client, kind, batch_size)
            lines = _LineCounter(f)
            try:
                # Every field as written (not read_export's events): _importable refuses unknown ones.
                for log in iter_records(cast(IO[bytes], lines), kind, bare_array=True):
                    run.add(log, lines.count)
                    if run.sent:
                        bar.update(task, completed=min(f.tell(), size), events=run.stored)
                run.flush()
            except ExportFileError as exc:  # the reader names the place itself
                raise fail(f"{exc}; {run.stored_note()}") from None
            bar.update(task, completed=max(size, 1), events=run.stored)
        if run.accepted is None or run.already_present is None:
            note = f"{run.stored:,} events from {file} accepted (the service did not say how many were new)"
        else:
            note = f"{run.accepted:,} new, {run.already_present:,} already present ({run.stored:,} events from {file})"
        err_console.print(note, markup=False)


class _LineCounter:
    """A binary file that counts the lines read through it: the readers take one line at a time and
    yield each event as soon as its last line is read, so the count then is that line's number."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.count = 0

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> bytes:
        line = next(self.file)
        self.count += 1
        return line

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)


class _Import:
    """`auditkeep ingest`'s batches: where each event came from, what the service stored, and the
    content-derived uuids of events that have none."""

    def __init__(self, client: Client, kind: ExportFormat, batch_size: int) -> None:
        self.client = client
        self.kind = kind
        self.batch_size = batch_size
        self.batch: list[dict[str, Any]] = []
        self.places: list[str] = []  # where each event of `batch` is in the file
        self.stored = 0  # events the service answered 201 for
        self.accepted: int | None = 0
        self.already_present: int | None = 0
        self.sent = False  # whether the last `add` sent a batch
        self._index = 0
        self._line = 0
        # Occurrences so far of each content without a uuid (16-byte digests: ~100 bytes an event).
        self._seen: dict[bytes, int] = {}

    def add(self, log: dict[str, Any], line: int) -> None:
        """Queue the event read up to `line` (the lines read so far); send a full batch."""
        if self.kind == "json":
            place = f"log {self._index}"
        else:
            place = f"line {line}" if line <= self._line + 1 else f"lines {self._line + 1}-{line}"
        self._index, self._line = self._index + 1, line
        try:
            event = _importable(log, self._seen)
        except ExportFileError as exc:
            raise ExportFileError(f"{place}: {exc}") from None
        self.batch.append(event)
        self.places.append(place)
        self.sent = len(self.batch) >= self.batch_size
        if self.sent:
            self.flush()

    def flush(self) -> None:
        """Send the queued events; a refused one stops the import with its place in the file."""
        if not self.batch:
            return
        try:
            done = self.client.publish(self.batch, batch_size=self.batch_size)
        except ValidationError as exc:
            # publish splits by size too: the requests before the refused one were stored.
            self.stored += exc.batch_start
            self.batch, self.places = self.batch[exc.batch_start:], self.places[exc.batch_start:]
            bad = exc.bad_indices[0] - exc.batch_start if exc.bad_indices else 0
            raise fail(f"{self.places[bad]}: refused ({_problem(exc, exc.batch_start + bad)}); "
                       f"{self.stored_note()}") from None
        except AuditKeepClientError as exc:
            raise fail(f"{exc}; {self.stored_note()}") from None
        self.stored += len(done)
        if done.accepted is None or done.already_present is None or self.accepted is None \
                or self.already_present is None:
            self.accepted = self.already_present = None
        else:
            self.accepted += done.accepted
            self.already_present += done.already_present
        self.batch, self.places = [], []

    def stored_note(self) -> str:
        """How much of the file is stored, for an error's line."""
        if not self.places:
            return f"{self.stored:,} events before it already stored"
        return (f"{self.stored:,} events before {self.places[0]} already stored, none from there on "
                "(run again once fixed: nothing is stored twice)")


def _problem(exc: ValidationError, index: int) -> str:
    """The service's reason for refusing the event at `index` of a publish."""
    for item in exc.detail if isinstance(exc.detail, list) else []:
        loc = item.get("loc") if isinstance(item, dict) else None
        if isinstance(loc, list) and len(loc) > 1 and loc[1] == index - exc.batch_start:
            field = ".".join(str(part) for part in loc[2:])
            return f"{field}: {item.get('msg')}" if field else str(item.get("msg"))
    return str(exc)


def _importable(log: dict[str, Any], seen: dict[bytes, int]) -> dict[str, Any]:
    event = {k: v for k, v in log.items() if k not in _SERVER_FIELDS}
    unknown = set(event) - set(LOG_FIELDS)
    if unknown:
        raise ExportFileError(f"unknown field(s) {', '.join(sorted(unknown))} in an event")
    if event.get("event_uuid") is None:
        content = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        key = hashlib.blake2b(content, digest_size=16).digest()
        occurrence = seen[key] = seen.get(key, 0) + 1
        # Occurrence 1 names the content alone, as imports did before occurrences counted (issue #9), so a
        # file imported then is not stored again; each later identical event is an event of its own.
        name = content.decode() if occurrence == 1 else f"{content.decode()}\n{occurrence}"
        event["event_uuid"] = str(uuid.uuid5(_IMPORT_NAMESPACE, name))
    return event
