"""`auditkeep streams` (issue #10): create (settings from the argument, a file or standard input), list, show,
pause, resume, replay, update, test and delete a stream from the command line, on both backends; each change
is a self-audit event whose record never repeats --config, and errors are one line naming the option."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.storage import Storage
from auditkeep.storage.tables import events
from auditkeep.streams.forwarder import Forwarder
from tests.conftest import Tenant
from tests.streams.receivers import WebhookReceiver, verify_signature, webhook_receiver
from tests.streams.test_webhook_streams import drain, ingest

SECRET = "cli-stream-secret-0123456789"


@pytest.fixture
def org(tenant: Tenant, storage: Storage, cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tenant's name, with the CLI sealing secrets under the same key as the forwarder unseals them."""
    monkeypatch.setenv("AUDITKEEP_SECRETS_KEY_PATH", str(storage.settings.secrets_key_path))
    return tenant.org.name


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def run(cli: CliRunner, *args: str, code: int = 0, stdin: str | None = None) -> str:
    result = cli.invoke(app, list(args), input=stdin)
    assert result.exit_code == code, result.output
    return result.output


def streams(cli: CliRunner, *args: str, code: int = 0, stdin: str | None = None) -> str:
    return run(cli, "streams", *args, code=code, stdin=stdin)


def shown(output: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(output)
    return value


def audit_rows(storage: Storage, tenant: Tenant) -> list[dict[str, Any]]:
    with storage.read() as conn:
        rows = conn.execute(events.select().where(events.c.org_id == tenant.org.id,
                                                  events.c.action.like("stream.%"))
                            .order_by(events.c.seq)).mappings().all()
    return [dict(r) for r in rows]


def test_a_stream_from_the_command_line(
    cli: CliRunner, org: str, tenant: Tenant, storage: Storage, app_client: TestClient, forwarder: Forwarder,
    receiver: WebhookReceiver, tmp_path: Path,
) -> None:
    """Created from a settings file with a filter and a backfill, the stream delivers only its matches,
    signed with the secret the file gave; pause holds delivery, resume and replay move it, an update merges
    settings and keeps the secret, test sends one marked record, delete stops it. The secret never shows."""
    ingest(app_client, tenant, 6, action="report.view")
    ingest(app_client, tenant, 4, action="user.login", start=6)
    settings = tmp_path / "webhook.json"
    settings.write_text(orjson.dumps({"url": receiver.url, "secret": SECRET, "batch_size": 3}).decode())
    made = shown(streams(cli, "create", "--org", org, "--name", "siem", "--kind", "webhook",
                         "--config", f"@{settings}", "--filter", '{"action": "report.*"}', "--start-seq", "1"))
    assert made["config"] == {"url": receiver.url, "batch_size": 3, "timeout_seconds": 10.0}
    assert made["secrets_set"] == ["secret"] and made["filter"] == {"action": "report.*"}
    assert made["state"] == "active" and made["delivered_seq"] == 0 and made["format"] == "datafold"

    (line,) = streams(cli, "list", "--org", org).splitlines()
    assert line.split("\t")[:5] == [made["id"], "siem", "webhook", "active", "delivered 0"]
    assert shown(streams(cli, "show", "--org", org, made["id"])) == {
        **shown(streams(cli, "show", "--org", org, "siem")), "lag_seconds": pytest.approx(0, abs=60)}

    assert shown(streams(cli, "pause", "--org", org, "siem"))["state"] == "paused"
    assert not forwarder.run_once() and receiver.events() == []

    assert shown(streams(cli, "resume", "--org", org, "siem"))["state"] == "active"
    drain(forwarder, lambda: len(receiver.events()) >= 6)
    assert [e["log_entry"] for e in receiver.events()] == [f"event {i}" for i in range(6)]
    assert all(verify_signature(SECRET, d) for d in receiver.received)
    head = shown(streams(cli, "show", "--org", org, "siem"))
    assert head["lag_events"] == 0 and head["last_delivery_at"] is not None

    replayed = shown(streams(cli, "replay", "--org", org, "siem", "--from-seq", "1"))
    assert replayed["delivered_seq"] == 0 and replayed["lag_events"] > 0
    drain(forwarder, lambda: len(receiver.events()) >= 12)
    assert [e["log_entry"] for e in receiver.events()[6:]] == [f"event {i}" for i in range(6)]

    updated = shown(streams(cli, "update", "--org", org, "siem", "--config", "-", stdin='{"batch_size": 50}'))
    assert updated["config"]["batch_size"] == 50 and updated["secrets_set"] == ["secret"]
    assert streams(cli, "test", "--org", org, "siem") == "test event delivered\n"
    assert receiver.received[-1].json["events"][0]["test"] is True
    assert verify_signature(SECRET, receiver.received[-1])

    assert streams(cli, "delete", "--org", org, "siem") == "deleted stream siem\n"
    assert streams(cli, "list", "--org", org) == ""
    ingest(app_client, tenant, 2, action="report.view", start=10)
    assert not forwarder.run_once()
    assert len(receiver.events()) == 13  # the 12 delivered and the test record

    rows = audit_rows(storage, tenant)
    assert [r["action"] for r in rows] == ["stream.create"] + ["stream.update"] * 4 + ["stream.test",
                                                                                       "stream.delete"]
    assert all(r["source"] == "cli" and r["object_type"] == "stream" for r in rows)
    assert not any(SECRET in str(r) for r in rows)
    payloads = [r["payload"] if isinstance(r["payload"], dict) else orjson.loads(r["payload"]) for r in rows]
    assert {p["stream_id"] for p in payloads} == {made["id"]}
    assert [p["changed"] for p in payloads[1:5]] == [["state"], ["state"], ["replay_from_seq"], ["config"]]


def test_ocsf_format_and_the_next_event_by_default(
    cli: CliRunner, org: str, tenant: Tenant, app_client: TestClient, forwarder: Forwarder,
    receiver: WebhookReceiver,
) -> None:
    """Without --start-seq a stream starts at the next event stored (its own stream.create record is the
    first); --format ocsf delivers OCSF records."""
    ingest(app_client, tenant, 3)
    config = orjson.dumps({"url": receiver.url, "secret": SECRET}).decode()
    made = shown(streams(cli, "create", "--org", org, "--name", "lake", "--kind", "webhook", "--format", "ocsf",
                         "--config", config))
    assert made["format"] == "ocsf" and made["lag_events"] == 1
    ingest(app_client, tenant, 2, start=3)
    drain(forwarder, lambda: len(receiver.events()) >= 3)
    records = receiver.events()
    assert [r["class_uid"] for r in records] == [6003] * 3
    assert [r["api"]["operation"] for r in records] == ["stream.create", "report.view", "report.view"]
    assert [r["message"] for r in records[1:]] == ["event 3", "event 4"]


@pytest.mark.parametrize(("args", "message"), [
    (["create", "--name", "x", "--kind", "nope", "--config", "{}"],
     "error: stream: kind must be one of: webhook, nats, s3, splunk_hec, syslog"),
    (["create", "--name", "x", "--kind", "webhook", "--config", "{bad"], "error: --config is not JSON: "),
    (["create", "--name", "x", "--kind", "webhook", "--config", "[1]"], "error: --config must be a JSON object"),
    (["create", "--name", "x", "--kind", "webhook", "--config", '{"url": "not a url", "secret": "' + SECRET + '"}'],
     "error: --config.url: Input should be a valid URL"),
    (["create", "--name", "x", "--kind", "webhook", "--format", "cef", "--config", "{}"], "error: --format: "),
    (["show", "nope"], "error: no stream 'nope' in organization "),
    (["replay", "nope", "--from-seq", "0"], "--from-seq"),
])
def test_mistakes_are_one_line_naming_the_option(cli: CliRunner, org: str, args: list[str], message: str) -> None:
    out = streams(cli, args[0], "--org", org, *args[1:], code=2 if "--from-seq" in message else 1)
    assert message in out and "Traceback" not in out
    assert streams(cli, "list", "--org", org) == ""


def test_an_unknown_organization_is_named(cli: CliRunner) -> None:
    assert "error: unknown organization 'no-such-org'" in streams(cli, "list", "--org", "no-such-org", code=1)


def test_the_audit_record_never_repeats_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config may hold a secret: the command's origin shows it as <config>, whichever way it is given."""
    from auditkeep.cli.streams import _origin

    monkeypatch.setattr(sys, "argv", ["auditkeep", "streams", "create", "--config", SECRET, f"--config={SECRET}"])
    assert _origin().url == "cli:auditkeep streams create --config <config> --config=<config>"
