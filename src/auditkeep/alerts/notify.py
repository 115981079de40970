"""Telling people a rule fired: the outbox of firings (storage/alerts.py) worked off under the rule's lease.

Each firing is first recorded as an `alert.fired` event in the organization's log, under the uuid the
firing was queued with, so a crash between recording and marking it recorded never records it twice.
Then each channel gets the notification: a webhook signed as streams sign theirs, Slack's incoming
webhook (`{"text": ...}`), or an email through AUDITKEEP_SMTP_URL. A channel that fails is retried with
the streams' backoff (1 s doubling to 5 minutes, with jitter) up to MAX_ATTEMPTS, and its error shows on
the rule (`last_error`) until a notification goes through.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from auditkeep import __version__
from auditkeep.ingest.selfaudit import Origin, self_audit_event
from auditkeep.ingest.service import record_events
from auditkeep.settings import Settings
from auditkeep.storage import Storage
from auditkeep.storage import alerts as store
from auditkeep.streams.forwarder import backoff
from auditkeep.streams.sinks.webhook import sign

MAX_ATTEMPTS = 10
# The evaluator acts on its own, not for a request or a shell: its records say so.
ORIGIN = Origin(source="auditkeep", client_ip="127.0.0.1", url="auditkeep:alerts", request_type="ALERT")


class NotifyError(Exception):
    """A channel did not take the notification."""


def text(body: dict[str, Any]) -> str:
    """The notification as one line people read (Slack's text, an email's subject)."""
    group = ", ".join(f"{k}={v}" for k, v in body["group"].items())
    prefix = "[test] " if body.get("test") else ""
    line = (f"{prefix}auditkeep alert {body['rule']['name']!r} ({body['organization']}): {body['count']} matching "
            f"event{'s' if body['count'] != 1 else ''}, seq {body['first_seq']}-{body['last_seq']}"
            + (f", {group}" if group else ""))
    # One line whatever a rule's name or a grouped value holds: an email header may not break (and a line
    # break in one would be a header injection).
    return " ".join(line.split())


def send(channel: dict[str, Any], body: dict[str, Any], settings: Settings, *, delivery_id: str) -> None:
    """Deliver `body` (the alert) to one channel (secrets included); NotifyError when it is not taken."""
    kind = channel["kind"]
    if kind in ("webhook", "slack"):
        if kind == "webhook":
            content = orjson.dumps({"alert": body})
            headers = {"Content-Type": "application/json", "Auditkeep-Delivery": delivery_id,
                       "Auditkeep-Signature": sign(str(channel["secret"]), int(time.time()), content)}
        else:
            content, headers = orjson.dumps({"text": text(body)}), {"Content-Type": "application/json"}
        # Slack's URL is a credential: an error names only its host.
        where = channel["url"] if kind == "webhook" else urlsplit(str(channel["url"])).netloc
        try:
            r = httpx.post(str(channel["url"]), content=content, timeout=10.0,
                           headers={**headers, "User-Agent": f"auditkeep/{__version__}"})
        except httpx.HTTPError as exc:
            raise NotifyError(f"{kind} {where}: {type(exc).__name__}: {exc}") from None
        if not 200 <= r.status_code < 300:
            raise NotifyError(f"{kind} {where} answered {r.status_code}: {r.text[:200]}")
        return
    if kind == "email":
        _email(channel["to"], body, settings)
        return
    raise NotifyError(f"unknown channel kind {kind!r}")


def _email(to: list[str], body: dict[str, Any], settings: Settings) -> None:
    """One plain-text message over SMTP: smtp://[user:password@]host[:port] (STARTTLS when the server
    offers it), or smtps:// (TLS from the start)."""
    if not settings.smtp_url:
        raise NotifyError("email: AUDITKEEP_SMTP_URL is not set")
    url = urlsplit(settings.smtp_url)
    if url.scheme not in ("smtp", "smtps") or not url.hostname:
        raise NotifyError("email: AUDITKEEP_SMTP_URL must be smtp://host:port or smtps://host:port")
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = text(body)[:200], settings.smtp_from, ", ".join(to)
    msg.set_content(text(body) + "\n\n" + orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    try:
        if url.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(url.hostname, url.port or 465, timeout=10,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(url.hostname, url.port or 25, timeout=10)
        with client:
            if url.scheme == "smtp" and client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise NotifyError(f"email via {url.hostname}:{url.port}: {type(exc).__name__}: {exc}") from None


def record_fired(storage: Storage, firings: list[store.Firing]) -> None:
    """The firings' `alert.fired` events, recorded once each (some may be there already if a crash came
    between recording and marking them), all in one append: a flood of firings is one transaction, not
    one fsync each."""
    if not firings:
        return
    with storage.read() as conn:
        stored = store.stored_events(conn, firings[0].org_id, [f.event_uuid for f in firings])
    events = []
    for firing in (f for f in firings if f.event_uuid not in stored):
        b = firing.body
        event = self_audit_event(
            "alert.fired", ORIGIN, object_type="alert_rule",
            log_entry=f"Alert {b['rule']['name']!r} fired: {b['count']} matching events, seq {b['first_seq']}-"
                      f"{b['last_seq']}",
            payload={k: b[k] for k in ("rule", "count", "first_seq", "last_seq", "group", "suppressed")})
        event.log["event_uuid"] = firing.event_uuid
        events.append(event)
    if events:
        record_events(storage, firings[0].org_id, events)


def work_off(storage: Storage, settings: Settings, rule: store.RuleRow, channels: list[dict[str, Any]], *,
             backoff_first: float) -> None:
    """Record and notify the rule's due firings (the caller holds the rule's lease)."""
    now = datetime.now(UTC)
    with storage.read() as conn:
        firings = store.due_firings(conn, rule.id, now)
    fresh = [f for f in firings if not f.recorded]
    if fresh:
        record_fired(storage, fresh)
        silent = [f.id for f in fresh if not any(i < len(channels) for i in f.pending)]
        with storage.write() as conn:
            store.mark_recorded(conn, [f.id for f in fresh], done=silent, now=datetime.now(UTC))
            store.update(conn, rule.org_id, rule.id, last_fired_at=max(f.created_at for f in fresh))
        firings = [f for f in firings if f.id not in set(silent)]
    for firing in firings:
        failed: list[int] = []
        errors: list[str] = []
        for index in firing.pending:
            if index >= len(channels):
                continue  # the channel was removed since the firing
            try:
                send(channels[index], firing.body, settings, delivery_id=f"{firing.id}.{index}")
            except NotifyError as exc:
                failed.append(index)
                errors.append(str(exc))
        attempts = firing.attempts + 1
        done = not failed or attempts >= MAX_ATTEMPTS
        error = "; ".join(errors)[:2000] or None
        if failed and done:
            error = f"gave up after {attempts} attempts: {error}"[:2000]
        with storage.write() as conn:
            store.update_firing(conn, firing.id, pending=failed, attempts=attempts, last_error=error,
                                done_at=datetime.now(UTC) if done else None,
                                next_attempt_at=None if done else datetime.now(UTC) + timedelta(
                                    seconds=backoff(firing.attempts, backoff_first)))
            store.update(conn, rule.org_id, rule.id, last_error=error)
