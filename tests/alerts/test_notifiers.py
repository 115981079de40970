"""Notifications (issue #13) against real receivers on loopback: a signed webhook and Slack's incoming
webhook (an HTTP server), email (aiosmtpd's SMTP server); failures retried and shown on the rule."""

from __future__ import annotations

import email
import email.policy
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from auditkeep.alerts.evaluator import Evaluator
from auditkeep.storage import Storage
from tests.alerts.conftest import RULES, fired, ingest, make_rule, settle
from tests.conftest import Tenant
from tests.streams.receivers import WebhookReceiver, verify_signature, webhook_receiver

SECRET = "alert-secret-0123456789abcdef"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


class Mailbox:
    """aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, str]]:
    box = Mailbox()
    with socket.socket() as probe:  # aiosmtpd's start() connects to its port, so it needs a real one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


def show(client: TestClient, tenant: Tenant, rule_id: str) -> dict[str, Any]:
    r = client.get(f"{RULES}/{rule_id}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_webhook_gets_the_alert_signed_like_a_stream(app_client: TestClient, tenant: Tenant, evaluator: Evaluator,
                                                     receiver: WebhookReceiver) -> None:
    """The body is `{"alert": {...}}` with the alert.fired event's uuid; Auditkeep-Signature verifies."""
    make_rule(app_client, tenant, name="hook", notify=[{"kind": "webhook", "url": receiver.url, "secret": SECRET}])
    (seq,) = ingest(app_client, tenant)
    settle(evaluator)
    (delivery,) = receiver.received
    assert verify_signature(SECRET, delivery)
    alert = delivery.json["alert"]
    assert alert["rule"]["name"] == "hook" and alert["first_seq"] == alert["last_seq"] == seq
    assert alert["organization"] == tenant.org.name
    (recorded,) = fired(app_client, tenant)
    assert recorded["last_seq"] == seq


def test_slack_gets_incoming_webhook_text(app_client: TestClient, tenant: Tenant, evaluator: Evaluator,
                                          receiver: WebhookReceiver) -> None:
    """Slack's incoming webhook takes `{"text": ...}`; the URL, its credential, is never shown."""
    rule = make_rule(app_client, tenant, name="slack", group_by=["user_email"],
                     notify=[{"kind": "slack", "url": receiver.url}])
    assert rule["notify"] == [{"kind": "slack"}]
    ingest(app_client, tenant, user_email="ann@example.com")
    settle(evaluator)
    (delivery,) = receiver.received
    assert delivery.json == {"text": f"auditkeep alert 'slack' ({tenant.org.name}): 1 matching event, seq "
                                     f"{fired(app_client, tenant)[0]['last_seq']}-"
                                     f"{fired(app_client, tenant)[0]['last_seq']}, user_email=ann@example.com"}


def test_email_goes_through_smtp(app_client: TestClient, tenant: Tenant, storage: Storage,
                                 mailbox: tuple[Mailbox, str]) -> None:
    """With AUDITKEEP_SMTP_URL, each address in `to` gets a message naming the rule and the seqs."""
    box, url = mailbox
    evaluator = Evaluator(storage, storage.settings.model_copy(update={"smtp_url": url, "smtp_from": "ak@test"}))
    try:
        make_rule(app_client, tenant, name="mail", notify=[{"kind": "email", "to": ["sec@example.com",
                                                                                     "ops@example.com"]}])
        (seq,) = ingest(app_client, tenant)
        settle(evaluator)
    finally:
        evaluator.stop()
    (message,) = box.messages
    assert message["To"] == "sec@example.com, ops@example.com" and message["From"] == "ak@test"
    assert message["Subject"].startswith("auditkeep alert 'mail'") and f"seq {seq}-{seq}" in message["Subject"]
    body = message.get_body().get_content()  # type: ignore[union-attr]
    assert f'"last_seq": {seq}' in body


def test_a_failed_notification_is_retried_and_shown_on_the_rule(
        app_client: TestClient, tenant: Tenant, evaluator: Evaluator, receiver: WebhookReceiver) -> None:
    """A receiver that answers 503 leaves the rule failing with the error; once it answers 200 the retry
    delivers the same alert (same Auditkeep-Delivery), the error clears, and alert.fired is recorded once."""
    rule = make_rule(app_client, tenant, notify=[{"kind": "webhook", "url": receiver.url, "secret": SECRET}])
    receiver.answer = lambda d: (503, {})
    ingest(app_client, tenant)
    settle(evaluator, 1)
    shown = show(app_client, tenant, rule["id"])
    assert shown["state"] == "failing" and "answered 503" in (shown["last_error"] or "")
    assert shown["pending_notifications"] == 1 and shown["last_fired_at"] is not None
    receiver.answer = lambda d: (200, {})
    deadline = time.monotonic() + 10
    while not receiver.received:
        assert time.monotonic() < deadline, "the notification was not retried"
        settle(evaluator, 1)
    shown = show(app_client, tenant, rule["id"])
    assert shown["state"] == "enabled" and shown["last_error"] is None and shown["pending_notifications"] == 0
    assert {a.headers["auditkeep-delivery"] for a in receiver.attempts} == {
        receiver.received[0].headers["auditkeep-delivery"]}
    assert len(receiver.attempts) >= 2 and len(fired(app_client, tenant)) == 1


def test_an_unreachable_smtp_server_is_an_error_on_the_rule(app_client: TestClient, tenant: Tenant,
                                                            storage: Storage) -> None:
    """Email without a server to take it fails visibly, naming the server."""
    evaluator = Evaluator(storage, storage.settings.model_copy(update={"smtp_url": "smtp://127.0.0.1:1"}))
    try:
        rule = make_rule(app_client, tenant, notify=[{"kind": "email", "to": ["sec@example.com"]}])
        ingest(app_client, tenant)
        settle(evaluator, 1)
    finally:
        evaluator.stop()
    shown = show(app_client, tenant, rule["id"])
    assert shown["state"] == "failing" and "email via 127.0.0.1:1" in (shown["last_error"] or "")


def test_test_endpoint_notifies_every_channel_now(app_client: TestClient, tenant: Tenant,
                                                  receiver: WebhookReceiver) -> None:
    """POST .../test sends an alert marked test to each channel, and records nothing as fired."""
    rule = make_rule(app_client, tenant, notify=[{"kind": "webhook", "url": receiver.url, "secret": SECRET},
                                                 {"kind": "slack", "url": receiver.url}])
    r = app_client.post(f"{RULES}/{rule['id']}/test", headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert [c["delivered"] for c in r.json()["channels"]] == [True, True]
    webhook, slack = receiver.received
    assert webhook.json["alert"]["test"] is True and verify_signature(SECRET, webhook)
    assert orjson.loads(slack.body)["text"].startswith("[test] auditkeep alert")
    assert fired(app_client, tenant) == []


def test_patch_replaces_the_channels(app_client: TestClient, tenant: Tenant, evaluator: Evaluator,
                                     receiver: WebhookReceiver) -> None:
    """A rule made without channels gets a webhook by PATCH; the next firing is signed with its secret,
    which the answer never shows."""
    rule = make_rule(app_client, tenant)
    r = app_client.patch(f"{RULES}/{rule['id']}", headers=tenant.headers,
                         json={"notify": [{"kind": "webhook", "url": receiver.url, "secret": SECRET}]})
    assert r.status_code == 200, r.text
    assert r.json()["notify"] == [{"kind": "webhook", "url": receiver.url}] and SECRET not in r.text
    (seq,) = ingest(app_client, tenant)
    settle(evaluator)
    (delivery,) = receiver.received
    assert verify_signature(SECRET, delivery) and delivery.json["alert"]["last_seq"] == seq


def test_line_breaks_in_a_grouped_value_stay_out_of_the_email_headers(
        app_client: TestClient, tenant: Tenant, storage: Storage, mailbox: tuple[Mailbox, str]) -> None:
    """A user_email sent with a line break (any client can send one) cannot add a header to the alert."""
    box, url = mailbox
    evaluator = Evaluator(storage, storage.settings.model_copy(update={"smtp_url": url}))
    try:
        make_rule(app_client, tenant, group_by=["user_email"],
                  notify=[{"kind": "email", "to": ["sec@example.com"]}])
        ingest(app_client, tenant, user_email="x@example.com\r\nBcc: evil@example.com")
        settle(evaluator)
    finally:
        evaluator.stop()
    (message,) = box.messages
    assert message["Bcc"] is None and "Bcc: evil@example.com" in message["Subject"]


def test_disabling_a_rule_stops_its_retries(app_client: TestClient, tenant: Tenant, evaluator: Evaluator,
                                            receiver: WebhookReceiver) -> None:
    rule = make_rule(app_client, tenant, notify=[{"kind": "webhook", "url": receiver.url, "secret": SECRET}])
    receiver.answer = lambda d: (503, {})
    ingest(app_client, tenant)
    settle(evaluator, 1)
    assert len(receiver.attempts) == 1
    assert app_client.patch(f"{RULES}/{rule['id']}", json={"enabled": False}, headers=tenant.headers).is_success
    time.sleep(0.1)
    settle(evaluator)
    assert len(receiver.attempts) == 1
