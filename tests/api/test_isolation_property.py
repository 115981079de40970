"""Isolation as a property (issue #11): no key or console session of organization A reads organization B's
data through any read endpoint or parameter, including B's cursors (as issued and edited by hand), B's
proof requests and B's console URLs; every refusal is a 4xx.

B's secrets are what only B's data holds: its event_uuids, emails, payload markers, hashes, checkpoint
root and signature, stream ids and names, and its organization's name. A request of A may name some of
them (B's event_uuid in a proof request, B's email in a filter); A's own audit log then records that
query, so a later answer may show it back. A secret therefore counts as leaked only if A never sent it
(in a URL, a body or inside a cursor it presented), which still leaves most of B's events untold.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditkeep.auth.passwords import hash_password
from auditkeep.auth.principals import Role, Scope
from auditkeep.storage import Storage, identity
from tests.conftest import Tenant, make_tenant
from tests.web.conftest import PASSWORD, Browser, random_ip

LOGS = "/api/v1/audit_logs"
HEX = re.compile(r"[0-9a-f]{16,}")


@dataclass
class Side:
    """One organization: its API callers (each its own client address) and console sessions."""

    tenant: Tenant
    callers: dict[str, TestClient] = field(default_factory=dict)
    sessions: dict[str, Browser] = field(default_factory=dict)


@dataclass
class Minted:
    """What B owns or minted, for A to try."""

    probe_uuids: list[str]
    emails: list[str]
    user_ids: list[int]
    actions: list[str]
    markers: list[str]
    seqs: list[int]
    tree_sizes: list[int]
    stream_ids: list[str]
    key_ids: list[int]
    api_urls: list[str]  # B's Link next URLs, as issued
    cursors: list[str]  # from those and from B's console pages
    console_urls: list[str]  # every href on B's console pages
    secrets: set[str]  # everything only B's data holds
    stream_states: dict[str, dict[str, Any]]


@dataclass
class World:
    a: Side
    b: Side
    minted: Minted
    told: set[str] = field(default_factory=set)  # B's secrets A has itself sent


def _client(app_client: TestClient, key: str | None = None) -> TestClient:
    client = TestClient(app_client.app, client=(random_ip(), 50000))
    if key is not None:
        client.headers["Authorization"] = f"Key {key}"
    return client


def _browser(app_client: TestClient, storage: Storage, tenant: Tenant, role: Role, pw_hash: str) -> Browser:
    with storage.write() as conn:
        user = identity.create_user(conn, tenant.org, f"{secrets.token_hex(4)}@{tenant.org.name}.test", role)
        identity.set_password_hash(conn, user.id, pw_hash)
    browser = Browser(_client(app_client), "")
    assert browser.sign_in(user.name).status_code == 303
    return browser


def _side(app_client: TestClient, storage: Storage, pw_hash: str) -> Side:
    tenant = make_tenant(storage)
    side = Side(tenant)
    side.callers["admin"] = _client(app_client, tenant.admin_key)
    side.callers["viewonly"] = _client(app_client, tenant.user(Role.VIEWONLY)[1])
    side.callers["default"] = _client(app_client, tenant.user(Role.DEFAULT)[1])
    side.callers["reader"] = _client(app_client, tenant.service_account(Scope.READ)[1])
    side.callers["writer"] = _client(app_client, tenant.service_account(Scope.WRITE)[1])
    side.sessions["admin"] = _browser(app_client, storage, tenant, Role.ADMIN, pw_hash)
    side.sessions["viewonly"] = _browser(app_client, storage, tenant, Role.VIEWONLY, pw_hash)
    return side


def _events(org: str, n: int, *, days_ago: int) -> list[dict[str, Any]]:
    when = datetime.now(UTC) - timedelta(days=days_ago)
    made = []
    for i in range(n):
        mark = f"mark{secrets.token_hex(8)}"
        made.append({
            "event_uuid": str(uuid.uuid4()), "client_ip": f"203.0.113.{i + 1}",
            "url": f"https://{org}.test/{mark}/u", "action": f"{org}.{mark}.update",
            "user_email": f"{secrets.token_hex(6)}@{org}.test", "user_id": 10**12 + secrets.randbelow(10**9),
            "object_type": f"ot{secrets.token_hex(6)}", "object_id": 10**12 + secrets.randbelow(10**9),
            "log_entry": f"entry {mark}", "payload": {"marker": mark, "nested": [mark.upper()]},
            "timestamp": (when + timedelta(seconds=i)).isoformat(),
        })
    return made


def _ingest(side: Side, events: list[dict[str, Any]]) -> None:
    r = side.callers["writer"].post(LOGS, json=events)
    assert r.status_code == 201, r.text


def _next(r: Response) -> str | None:
    match = re.search(r'<([^>]+)>;\s*rel="next"', r.headers.get("link", ""))
    return match.group(1) if match else None


def _cursor_of(url: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get("cursor")
    return values[0] if values else None


def _mint_b(b: Side) -> Minted:
    """B's events (8 recent probes, 30 older ones), checkpoint, streams, cursors and console pages."""
    org = b.tenant.org.name
    probes, older = _events(org, 8, days_ago=0), _events(org, 30, days_ago=3)
    _ingest(b, older + probes)
    admin, reader = b.callers["admin"], b.callers["reader"]
    full = admin.get(LOGS, params={"include": "integrity", "start_date": "2000-01-01T00:00:00Z"}).json()["logs"]
    checkpoint = admin.post("/api/v1/integrity/checkpoints").json()
    streams = []
    for name in ("probe", "hidden"):
        mark = f"mark{secrets.token_hex(8)}"
        r = admin.post("/api/v1/streams", json={
            "name": f"{name}-{mark}", "kind": "webhook",
            # Port 9 (discard) on loopback: nothing listens, and no forwarder runs in the test app anyway.
            "config": {"url": f"http://127.0.0.1:9/{mark}", "secret": secrets.token_hex(16)}})
        assert r.status_code == 201, r.text
        streams.append(r.json())
    api_urls = []
    for params in ({"limit": 2}, {"limit": 3, "order": "desc"}, {"limit": 2, "include": "integrity"},
                   {"limit": 1, "action": f"{org}.*", "format": "ndjson"}):
        r = reader.get(LOGS, params={**params, "start_date": "2000-01-01T00:00:00Z"})
        for _ in range(3):
            url = _next(r)
            assert url is not None, "B's walk has more pages"
            api_urls.append(url)
            r = reader.get(url)
    hrefs: list[str] = []
    for page in ("/audit-logs?range=all&limit=25", "/streams", "/api-keys",
                 f"/audit-logs/{probes[0]['event_uuid']}"):
        r = b.sessions["admin"].get(page)
        assert r.status_code == 200, r.text
        hrefs += [html.unescape(h) for h in re.findall(r'href="(/[^"]*)"', r.text)]
    console_urls = sorted({h for h in hrefs if not h.startswith("/static")})
    cursors = [c for c in (_cursor_of(u) for u in api_urls + console_urls) if c]
    assert any(_cursor_of(u) for u in console_urls), "B's console page has a next link"
    with b.tenant.storage.read() as conn:
        key_ids = [k.id for k in identity.list_keys(conn, b.tenant.org)]
    hashes = {log["hash"] for log in full}
    secret_values = ({log["event_uuid"] for log in full} | {log["user_email"] for log in full if log["user_email"]}
                     | set(HEX.findall(" ".join(e["payload"]["marker"] for e in probes + older)))
                     | {e["object_type"] for e in probes + older} | hashes
                     | {checkpoint["root_hash"], checkpoint["signature"], org}
                     | {s["id"] for s in streams} | {s["name"] for s in streams})
    return Minted(
        probe_uuids=[e["event_uuid"] for e in probes], emails=[e["user_email"] for e in probes],
        user_ids=[e["user_id"] for e in probes], actions=[e["action"] for e in probes],
        markers=[e["payload"]["marker"] for e in probes], seqs=sorted(log["seq"] for log in full),
        tree_sizes=[checkpoint["tree_size"], 1, len(full) // 2], stream_ids=[s["id"] for s in streams],
        key_ids=key_ids, api_urls=api_urls, cursors=cursors, console_urls=console_urls,
        secrets={s for s in secret_values if s}, stream_states={s["id"]: s for s in streams},
    )


@pytest.fixture(scope="session")
def pw_hash() -> str:
    return hash_password(PASSWORD)  # argon2 is slow on purpose: once per session


@pytest.fixture
def world(app_client: TestClient, storage: Storage, pw_hash: str) -> Iterator[World]:
    a, b = _side(app_client, storage, pw_hash), _side(app_client, storage, pw_hash)
    _ingest(a, _events(a.tenant.org.name, 10, days_ago=0))
    a.callers["admin"].post("/api/v1/integrity/checkpoints")
    yield World(a, b, _mint_b(b))
    for side in (a, b):
        for client in [*side.callers.values(), *(s.client for s in side.sessions.values())]:
            client.close()


# --- requests A makes from what B minted -------------------------------------------------------------


def _edit(cursor: str, how: str, at: int) -> str:
    """A hand-edited cursor: a bit flipped in its body, fields swapped, re-versioned unsigned, or its HMAC
    cut or moved."""
    body, dot, tag = cursor.partition(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    if how == "flip":
        raw[at % len(raw)] ^= 1 << (at % 8)
        return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode() + dot + tag
    data = json.loads(raw)
    if how == "swap":
        data["s"], data["m"] = data["m"], data["s"]
    elif how == "unsigned":  # the same position as a cursor of no walk, which needs no HMAC
        data = {k: data[k] for k in ("t", "s", "m", "o")} | {"v": 1}
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    elif how == "order":
        data["o"] = "asc" if data["o"] == "desc" else "desc"
    elif how == "untagged":
        return body
    new = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return new + dot + tag


EDITS = ["flip", "swap", "unsigned", "order", "untagged"]


@dataclass(frozen=True)
class Probe:
    """One request of A: who (an API caller or a console session), method, URL, JSON body; `refused`
    when it names something of B's that A must not reach (the answer must be a 4xx)."""

    who: str
    method: str
    url: str
    body: Any = None
    refused: bool = False


def _url(path: str, params: dict[str, Any]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


@st.composite
def probes(draw: st.DrawFn, m: Minted) -> Probe:
    caller = st.sampled_from(["admin", "viewonly", "default", "reader", "writer"])
    session = st.sampled_from(["session:admin", "session:viewonly"])
    cursor = st.sampled_from(m.cursors) | st.builds(_edit, st.sampled_from(m.cursors), st.sampled_from(EDITS),
                                                     st.integers(0, 200))
    filters = {
        "user_email": st.sampled_from(m.emails + [e.upper() for e in m.emails]),
        "user_id": st.sampled_from(m.user_ids), "object_id": st.sampled_from(m.user_ids),
        "action": st.sampled_from(m.actions) | st.sampled_from(m.actions).map(lambda a: a.split(".")[0] + ".*"),
        "q": st.sampled_from(m.markers), "after_seq": st.sampled_from([0, *m.seqs]), "cursor": cursor,
        "include": st.just("integrity"), "format": st.sampled_from(["json", "ndjson", "csv", "ocsf"]),
        "order": st.sampled_from(["asc", "desc"]), "limit": st.sampled_from([1, 2, 3, 100]),
        "start_date": st.just("2000-01-01T00:00:00Z"),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(filters)), min_size=1, max_size=4, unique=True))
    params = {name: draw(filters[name]) for name in chosen}
    size = st.sampled_from([0, *m.tree_sizes])
    stream = st.sampled_from(m.stream_ids)
    kind = draw(st.sampled_from(["logs", "link", "inclusion", "consistency", "checkpoints", "verify", "streams",
                                 "stream", "stream_write", "console", "console_href", "console_named"]))
    if kind == "logs":
        return Probe(draw(caller), "GET", _url(LOGS, params))
    if kind == "link":
        return Probe(draw(caller), "GET", draw(st.sampled_from(m.api_urls)))
    if kind == "inclusion":
        query = {"event_uuid": draw(st.sampled_from(m.probe_uuids))}
        if draw(st.booleans()):
            query["tree_size"] = draw(size)
        return Probe(draw(caller), "GET", _url("/api/v1/integrity/proofs/inclusion", query), refused=True)
    if kind == "consistency":
        return Probe(draw(caller), "GET", _url("/api/v1/integrity/proofs/consistency",
                                               {"first": draw(size), "second": draw(size)}))
    if kind == "checkpoints":
        return Probe(draw(caller), "GET", _url("/api/v1/integrity/checkpoints",
                                               {"min_tree_size": draw(size), "max_tree_size": draw(size)}))
    if kind == "verify":
        return Probe(draw(caller), "GET", "/api/v1/integrity/verify")
    if kind == "streams":
        return Probe(draw(caller), "GET", "/api/v1/streams")
    if kind == "stream":
        return Probe(draw(caller), "GET", f"/api/v1/streams/{draw(stream)}", refused=True)
    if kind == "stream_write":
        method, suffix, body = draw(st.sampled_from([("PATCH", "", {"state": "paused"}),
                                                     ("PATCH", "", {"replay_from_seq": 1}),
                                                     ("DELETE", "", None), ("POST", "/test", None)]))
        return Probe(draw(caller), method, f"/api/v1/streams/{draw(stream)}{suffix}", body, refused=True)
    if kind == "console_href":
        return Probe(draw(session), "GET", draw(st.sampled_from(m.console_urls)))
    if kind == "console_named":
        path = draw(st.sampled_from([f"/audit-logs/{draw(st.sampled_from(m.probe_uuids))}",
                                     f"/streams/{draw(stream)}/delete",
                                     f"/api-keys/{draw(st.sampled_from(m.key_ids))}/revoke"]))
        return Probe(draw(session), "GET", path, refused=True)
    console = {k: v for k, v in params.items() if k in {"user_email", "action", "q", "cursor", "limit", "order"}}
    path = draw(st.sampled_from(["/audit-logs", "/audit-logs/export", "/streams"]))
    extra = {"range": "all", "format": draw(st.sampled_from(["json", "ndjson", "csv"]))} if path != "/streams" else (
        {"done": "created", "stream": draw(stream)})
    return Probe(draw(session), "GET", _url(path, console | extra))


# --- the property ----------------------------------------------------------------------------------------


def _told(probe: Probe, secrets_: set[str]) -> set[str]:
    """B's secrets this request names: in its URL, its body, or inside a cursor it carries."""
    text = unquote(probe.url) + json.dumps(probe.body)
    for cursor in parse_qs(urlsplit(probe.url).query).get("cursor", []):
        body = cursor.partition(".")[0]
        text += base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8", "replace")
    low = text.lower()
    return {s for s in secrets_ if s.lower() in low}


def _send(world: World, probe: Probe) -> Response:
    if probe.who.startswith("session:"):
        return world.a.sessions[probe.who.split(":")[1]].client.request(probe.method, probe.url,
                                                                       follow_redirects=False)
    return world.a.callers[probe.who].request(probe.method, probe.url, json=probe.body)


@pytest.fixture
def checked(world: World) -> Iterator[World]:
    """The world, and afterwards: B's streams are as B left them, and most of B's secrets were never told
    (so the property kept its teeth)."""
    yield world
    admin = world.b.callers["admin"]
    for stream_id, before in world.minted.stream_states.items():
        r = admin.get(f"/api/v1/streams/{stream_id}")
        assert r.status_code == 200, r.text
        assert {k: r.json()[k] for k in ("name", "state", "delivered_seq", "config")} == {
            k: before[k] for k in ("name", "state", "delivered_seq", "config")}
    untold = world.minted.secrets - world.told
    assert len(untold) >= len(world.minted.secrets) // 2, (len(untold), len(world.minted.secrets))


def test_isolation_holds_for_every_probe(checked: World) -> None:
    """Run below with the minted values: every answer to A is 2xx/3xx or 4xx (a refusal when it names B's
    things), and no answer carries a secret of B's that A did not send."""
    world = checked
    status_seen: dict[str, set[int]] = {}

    @settings(max_examples=300, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(probe=probes(world.minted))
    def run(probe: Probe) -> None:
        world.told |= _told(probe, world.minted.secrets)
        r = _send(world, probe)
        status_seen.setdefault(probe.who, set()).add(r.status_code)
        assert r.status_code < 500 and r.status_code != 429, (probe, r.status_code, r.text[:500])
        if probe.refused:
            assert 400 <= r.status_code < 500, (probe, r.status_code, r.text[:500])
        answer = html.unescape(r.text).lower() + " " + str(r.headers).lower()
        leaked = {s for s in world.minted.secrets - world.told if s.lower() in answer}
        assert not leaked, (probe, leaked, r.text[:2000])

    run()
    # Not vacuous: A's admin key and admin session got answers, not only refusals.
    assert 200 in status_seen.get("admin", set()) and 200 in status_seen.get("session:admin", set()), status_seen


def test_a_sees_its_own_events_where_b_sees_its_own(world: World) -> None:
    """The baseline the property stands on: the same unfiltered read gives each organization its own events."""
    mine = world.a.callers["admin"].get(LOGS, params={"start_date": "2000-01-01T00:00:00Z"}).json()["logs"]
    theirs = world.b.callers["admin"].get(LOGS, params={"start_date": "2000-01-01T00:00:00Z"}).json()["logs"]
    assert {log["event_uuid"] for log in mine}.isdisjoint({log["event_uuid"] for log in theirs})
    assert sum(1 for log in mine if log["action"].startswith(world.a.tenant.org.name)) == 10
    assert sum(1 for log in theirs if log["action"].startswith(world.b.tenant.org.name)) == 38
