"""`auditkeep alerts` (issue #13): create (or enable a template), list, disable, enable, test, delete, each
change a self-audit event from the CLI whose record never repeats --notify."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import orjson
import pytest
from typer.testing import CliRunner

from auditkeep.cli import app
from auditkeep.storage import Storage, identity
from tests.streams.receivers import WebhookReceiver, webhook_receiver

SECRET = "cli-alert-secret-0123456789"


@pytest.fixture
def org(cli: CliRunner, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AUDITKEEP_SECRETS_KEY_PATH", str(storage.settings.secrets_key_path))
    name = f"alerts-{orjson.dumps(id(cli)).decode()[-6:]}"
    with storage.write() as conn:
        identity.create_org(conn, name)
    yield name


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_rules_from_the_command_line(cli: CliRunner, org: str, storage: Storage, receiver: WebhookReceiver) -> None:
    notify = orjson.dumps([{"kind": "webhook", "url": receiver.url, "secret": SECRET}]).decode()
    rule = orjson.loads(run(cli, "alerts", "create", "--org", org, "--name", "keys", "--filter",
                            '{"action": "api_key.*"}', "--count", "3", "--window", "300", "--group-by",
                            "user_email", "--notify", notify))
    assert rule["threshold"] == {"count": 3, "window_seconds": 300} and rule["group_by"] == ["user_email"]
    assert rule["notify"] == [{"kind": "webhook", "url": receiver.url}]
    support = orjson.loads(run(cli, "alerts", "create", "--org", org, "--template", "support_access"))
    assert support["name"] == "Support staff access" and support["template"] == "support_access"
    listing = run(cli, "alerts", "list", "--org", org).splitlines()
    assert [line.split("\t")[1:3] for line in listing] == [["keys", "enabled"], ["Support staff access", "enabled"]]
    assert orjson.loads(run(cli, "alerts", "disable", "--org", org, "keys"))["state"] == "disabled"
    assert orjson.loads(run(cli, "alerts", "enable", "--org", org, "keys"))["state"] == "enabled"
    assert run(cli, "alerts", "test", "--org", org, "keys") == "0\twebhook\tdelivered\n"
    assert receiver.received[0].json["alert"]["test"] is True
    receiver.answer = lambda d: (500, {})
    out = run(cli, "alerts", "test", "--org", org, "keys", code=1)
    assert "failed: " in out and "1 of 1 channels did not take the test notification" in out
    assert run(cli, "alerts", "delete", "--org", org, "keys") == "deleted alert rule keys\n"
    assert "no alert rule 'keys'" in run(cli, "alerts", "delete", "--org", org, "keys", code=1)
    assert "no alert template 'nope'" in run(cli, "alerts", "create", "--org", org, "--template", "nope", code=1)
    with storage.read() as conn:
        org_id = identity.get_org(conn, org).id
    from auditkeep.storage.tables import events

    with storage.read() as conn:
        rows = conn.execute(events.select().where(events.c.org_id == org_id, events.c.action.like("alert_rule.%"))
                            .order_by(events.c.seq)).mappings().all()
    assert [r["action"] for r in rows] == ["alert_rule.create", "alert_rule.create", "alert_rule.update",
                                           "alert_rule.update", "alert_rule.delete"]
    assert all(r["source"] == "cli" for r in rows)
    assert not any(SECRET in str(dict(r)) for r in rows)


def test_the_audit_record_never_repeats_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    """--notify may hold a webhook secret or a Slack URL: the command's origin shows it as <notify>."""
    from auditkeep.cli.alerts import _origin

    monkeypatch.setattr(sys, "argv", ["auditkeep", "alerts", "create", "--notify", SECRET, f"--notify={SECRET}"])
    assert _origin().url == "cli:auditkeep alerts create --notify <notify> --notify=<notify>"
