"""`auditkeep streams` (manage an organization's streams) and `auditkeep forward` (deliver them).

A stream is named by its id or its name. Destination settings come as JSON (`--config`), from the
argument, a file (`@path`) or standard input (`-`); the command's own audit record never repeats them,
since they may hold a secret.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError

from auditkeep.cli._common import fail, invalid_option, json_object, one_line_errors, origin_hiding, store
from auditkeep.errors import NotFoundError
from auditkeep.ingest.selfaudit import Origin
from auditkeep.schemas.streams import StreamCreate, StreamFilter, StreamPublic, StreamUpdate
from auditkeep.storage import Storage, identity
from auditkeep.storage import streams as stream_rows
from auditkeep.streams import service

app = typer.Typer(help="Streams: deliver an organization's events to a SIEM, bus or store.", no_args_is_help=True)

Org = Annotated[str, typer.Option("--org", help="The organization's name.")]
Stream = Annotated[str, typer.Argument(help="The stream's id or name.")]


def _origin() -> Origin:
    return origin_hiding("--config")


def _resolve(storage: Storage, org_name: str, stream: str) -> tuple[int, str]:
    with storage.read() as conn:
        org = identity.get_org(conn, org_name)
        for row in stream_rows.list_for_org(conn, org.id):
            if stream in (row.id, row.name):
                return org.id, row.id
    raise NotFoundError(f"no stream {stream!r} in organization {org_name!r}")


def _show(s: StreamPublic) -> None:
    typer.echo(orjson.dumps(s.model_dump(), option=orjson.OPT_INDENT_2).decode())


def _validated(model: type[StreamCreate] | type[StreamUpdate], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise fail(invalid_option(exc, "stream")) from None


@app.command("create")
@one_line_errors
def create(
    *,
    org: Org,
    name: Annotated[str, typer.Option(help="A name unique in the organization.")],
    kind: Annotated[str, typer.Option(help="The destination's kind, e.g. webhook.")],
    config: Annotated[str, typer.Option(help="Destination settings as JSON, @FILE or - (stdin).")],
    format_: Annotated[str, typer.Option("--format", help="datafold (the 17 fields with seq and hashes) or "
                                                          "ocsf (OCSF 1.3.0).")] = "datafold",
    filter_: Annotated[str | None, typer.Option("--filter", help="The GET's filters as JSON, e.g. "
                                                '\'{"action": "api_key.*"}\'.')] = None,
    start_seq: Annotated[int | None, typer.Option(help="First seq to deliver (1: backfill everything "
                                                       "retained); default: the next event stored.")] = None,
) -> None:
    """Create a stream and print it.

    Example: auditkeep streams create --org acme --name siem --kind webhook --config @webhook.json --start-seq 1
    """
    spec = _validated(StreamCreate, {"name": name, "kind": kind, "config": json_object(config, "--config"),
                                     "format": format_, "start_seq": start_seq,
                                     "filter": json_object(filter_, "--filter") if filter_ else {}})
    with store() as storage:
        with storage.read() as conn:
            org_id = identity.get_org(conn, org).id
        _show(service.create(storage, org_id, spec, origin=_origin(), actor=None))


@app.command("list")
@one_line_errors
def list_(org: Org) -> None:
    """One line a stream: id, name, kind, state, delivered seq, lag, last error."""
    with store() as storage:
        with storage.read() as conn:
            rows = stream_rows.list_for_org(conn, identity.get_org(conn, org).id)
        for row in rows:
            s = service.public(storage, row)
            typer.echo(f"{s.id}\t{s.name}\t{s.kind}\t{s.state}\tdelivered {s.delivered_seq}\t"
                       f"lag {s.lag_events} events / {s.lag_seconds:.1f} s\t{s.last_error or ''}".rstrip())


@app.command("show")
@one_line_errors
def show(org: Org, stream: Stream) -> None:
    """Print one stream as JSON (never its secrets)."""
    with store() as storage:
        org_id, stream_id = _resolve(storage, org, stream)
        with storage.read() as conn:
            _show(service.public(storage, stream_rows.get(conn, org_id, stream_id)))


def _change(org: str, stream: str, data: dict[str, Any]) -> None:
    change = _validated(StreamUpdate, data)
    with store() as storage:
        org_id, stream_id = _resolve(storage, org, stream)
        _show(service.update(storage, org_id, stream_id, change, origin=_origin(), actor=None))


@app.command("pause")
@one_line_errors
def pause(org: Org, stream: Stream) -> None:
    """Stop delivering; the cursor stays where it is, and nothing is dropped while paused."""
    _change(org, stream, {"state": "paused"})


@app.command("resume")
@one_line_errors
def resume(org: Org, stream: Stream) -> None:
    """Deliver again from the cursor, at once (whatever the backoff said)."""
    _change(org, stream, {"state": "active"})


@app.command("replay")
@one_line_errors
def replay(org: Org, stream: Stream,
           from_seq: Annotated[int, typer.Option("--from-seq", help="Deliver again from this seq.", min=1)]) -> None:
    """Deliver again from a seq (within retention).  Example: auditkeep streams replay --org acme siem --from-seq 1"""
    _change(org, stream, {"replay_from_seq": from_seq})


@app.command("update")
@one_line_errors
def update(org: Org, stream: Stream,
           config: Annotated[str | None, typer.Option(help="Settings to change, as JSON, @FILE or -.")] = None,
           filter_: Annotated[str | None, typer.Option("--filter", help="A new filter, as JSON.")] = None,
           name: Annotated[str | None, typer.Option(help="A new name.")] = None) -> None:
    """Change a stream's settings (merged; secrets left out are kept), filter or name."""
    data: dict[str, Any] = {"name": name}
    if config is not None:
        data["config"] = json_object(config, "--config")
    if filter_ is not None:
        data["filter"] = StreamFilter.model_validate(json_object(filter_, "--filter")).model_dump(exclude_none=True)
    _change(org, stream, data)


@app.command("delete")
@one_line_errors
def delete(org: Org, stream: Stream) -> None:
    """Delete a stream (what it delivered stays delivered)."""
    with store() as storage:
        org_id, stream_id = _resolve(storage, org, stream)
        service.delete(storage, org_id, stream_id, origin=_origin(), actor=None)
    typer.echo(f"deleted stream {stream}")


@app.command("test")
@one_line_errors
def test(org: Org, stream: Stream) -> None:
    """Send one record marked "test": true now; exit 1 when the destination does not take it."""
    with store() as storage:
        org_id, stream_id = _resolve(storage, org, stream)
        result = service.send_test(storage, org_id, stream_id, origin=_origin(), actor=None)
    if not result["delivered"]:
        raise fail(f"test event not delivered: {result['error']}")
    typer.echo("test event delivered")


def register(root: typer.Typer) -> None:
    """Add `auditkeep forward` to the root app."""

    @root.command("forward")
    @one_line_errors
    def forward() -> None:
        """Deliver streams until stopped (SIGINT or SIGTERM), apart from `auditkeep serve`.

        Several may run against one database: each stream is delivered by one of them at a time. Set
        AUDITKEEP_FORWARDER=false on the servers to leave delivery to these.
        """
        from auditkeep.settings import get_settings
        from auditkeep.streams.forwarder import Forwarder

        with store() as storage:
            forwarder = Forwarder(storage, get_settings())
            typer.echo(f"forwarding as {forwarder.owner}", err=True)
            forwarder.run_in_foreground()
