"""The search index behind `q` (issue #13), on both backends: results equal a brute-force scan whatever
part of the log is indexed (events ingested a moment ago included), pages are full, a purge takes the
index entries with the events, organizations never see each other's, and the indexer thread catches up.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.search.indexer import Indexer
from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage, pages, search, trigrams
from auditkeep.storage.pages import plan_page
from auditkeep.storage.queries import LogFilters, LogQuery, ascii_lower
from auditkeep.storage.retention import purge_org
from auditkeep.storage.tables import chain_heads
from tests.conftest import Tenant, make_tenant

URL = "/api/v1/audit_logs"
# Letters in both cases, non-ASCII letters whose case A-Z folding leaves apart, LIKE's wildcards and
# escape, a quote (FTS5's phrase delimiter) and a newline (the index joins log_entry and url with one).
ALPHABET = ["a", "b", "A", "B", "é", "É", "%", "_", "\\", '"', " ", "\n"]
texts = st.lists(st.sampled_from(ALPHABET), min_size=0, max_size=8).map("".join)
events = st.lists(st.fixed_dictionaries({
    "log_entry": st.one_of(st.none(), texts),
    "path": texts,
    "second": st.integers(0, 5),  # few distinct timestamps: ties are broken by seq
}), min_size=0, max_size=12)


def _post(client: TestClient, tenant: Tenant, batch: list[dict[str, Any]]) -> list[str]:
    body = [{"action": "search.t", "client_ip": "10.0.0.1", "log_entry": e["log_entry"],
             "url": "https://x.test/" + e["path"], "timestamp": f"2024-03-01T00:00:0{e['second']}Z"}
            for e in batch]
    if not body:
        return []
    r = client.post(URL, json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return list(r.json()["event_uuids"])


def _walk(client: TestClient, tenant: Tenant, params: dict[str, Any]) -> tuple[list[str], list[int]]:
    uuids: list[str] = []
    sizes: list[int] = []
    r = client.get(URL, params=params, headers=tenant.headers)
    while True:
        assert r.status_code == 200, r.text
        page = [log["event_uuid"] for log in r.json()["logs"]]
        uuids.extend(page)
        sizes.append(len(page))
        url = r.links.get("next", {}).get("url")
        if url is None:
            return uuids, sizes
        r = client.get(url, headers=tenant.headers)


def _matches(q: str, entry: str | None, url: str) -> bool:
    """The matching rule, by brute force: a substring of log_entry or url, A-Z folded."""
    needle = ascii_lower(q)
    return needle in ascii_lower(entry or "") or needle in ascii_lower(url)


@pytest.mark.parametrize("cap", [1, search.CANDIDATE_CAP])  # 1: every term walks; default: the index serves
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=events, later=events, indexed=st.integers(0, 15), limit=st.integers(1, 5),
       descending=st.booleans(), q=st.one_of(st.lists(st.sampled_from(ALPHABET), min_size=3, max_size=8).map("".join),
                                             st.sampled_from(["aab", "AbA", "%_\\", "b\nh", "ttps", "X.TEST/a"])))
def test_q_equals_a_brute_force_scan(
    app_client: TestClient, storage: Storage, monkeypatch: pytest.MonkeyPatch, cap: int,
    first: list[dict[str, Any]], later: list[dict[str, Any]], indexed: int, limit: int, descending: bool, q: str,
) -> None:
    """Some events indexed, then more ingested and not indexed yet: every walk of `q` returns exactly the
    events the rule matches, each once, in (timestamp, seq) order, in full pages."""
    monkeypatch.setattr(search, "CANDIDATE_CAP", cap)
    if cap == 1:  # and on SQLite no trigram counts as rare, which would send a term to the index unasked
        monkeypatch.setattr(search, "TRIGRAM_PROBE_CAP", 1)
    tenant = make_tenant(storage)
    uuids = _post(app_client, tenant, first)
    search.index_batch(storage, tenant.org.id, batch=indexed)
    uuids += _post(app_client, tenant, later)
    stored = [(f"{e['second']}", i, uuid, e) for i, (uuid, e) in enumerate(zip(uuids, first + later, strict=True))]
    stored.sort(key=lambda s: (s[0], s[1]), reverse=descending)
    expected = [uuid for _, _, uuid, e in stored if _matches(q, e["log_entry"], "https://x.test/" + e["path"])]
    got, sizes = _walk(app_client, tenant, {"q": q, "action": "search.t", "limit": limit,
                                            "order": "desc" if descending else "asc"})
    assert got == expected
    full, rest = divmod(len(expected), limit)
    assert sizes == ([limit] * full + ([rest] if rest else [])) or (sizes == [0] and not expected)


def _record(storage: Storage, tenant: Tenant, entries: list[str], received: datetime) -> None:
    body = [{"action": "search.p", "client_ip": "10.0.0.1", "log_entry": e, "url": "https://x.test/"}
            for e in entries]
    record_events(storage, tenant.org.id, parse_events(orjson.dumps(body), received), received_at=received)


def test_a_term_is_walked_only_when_common_and_its_page_lies_near_and_read_from_the_index_otherwise(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan walks a term that is found often at the start of the walk and fills a page soon after; a term
    found in the first events but too seldom after them to fill a page within DENSE_WALK_PER_ROW * limit
    events is served from the index (a walk would have run on to the end of the log); a rare one too."""
    # Every term is probed here. PostgreSQL: no trigram sample (as before the first is in); a sample calling
    # a term rare sends it to the index unprobed (tests/storage/test_trigrams.py). SQLite: no trigram counts
    # as rare (this log is small enough for every one to be); a rare one skips the probe (test below).
    monkeypatch.setattr(trigrams, "sample_for", lambda _storage: None)
    monkeypatch.setattr(search, "TRIGRAM_PROBE_CAP", 1)
    tenant = make_tenant(storage)
    limit = 4  # probe: 80 events, 1 match needed; a full page (5 matches) must lie within 400 events
    now = datetime.now(UTC)
    # In walk order (newest first): "burst" 3 times among the first 80 events, then not for 500 more.
    common = [f"common {i}" for i in range(50)]
    walk = ["burst then none", *common[:20], "burst then none", *common[20:40], "burst then none", *common[40:]]
    walk += [f"plain {i}" for i in range(500)] + ["burst then none"] * 2
    for at in (5, 30, 60, 140, 200):  # twice in the first 80, five times in the first 400: not a page in 80
        walk[at] += " sparse"
    _record(storage, tenant, list(reversed(walk)), now)  # one timestamp: the last recorded is walked first
    while search.index_batch(storage, tenant.org.id):
        pass

    def walked(text: str) -> bool:
        page = plan_page(storage, LogQuery(tenant.org.id, descending=True, limit=limit,
                                           filters=LogFilters(q=text)))
        return page.query.keys is None

    assert walked("common")
    assert walked("sparse")  # found often enough at the start, and its page lies near
    assert not walked("burst then")
    assert not walked("plain 49")


def test_sqlite_reads_a_text_with_a_rare_trigram_from_the_index_without_probing(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: a text whose rarest trigram has fewer than TRIGRAM_PROBE_CAP index entries has at most that
    many candidates, so the page neither probes the walk nor counts them: it reads the index, even for a
    term that fills the walk's first events (the answer is the same either way). PostgreSQL chooses by its
    trigram sample instead (tests/storage/test_trigrams.py)."""
    url = f"sqlite:///{tmp_path / 'rare.db'}"
    storage = open_storage(url, settings=settings.model_copy(update={"database_url": url}))
    try:
        tenant = make_tenant(storage)
        _record(storage, tenant, [f"widget {i}" for i in range(300)], datetime.now(UTC))
        while search.index_batch(storage, tenant.org.id):
            pass
        asked: list[str] = []
        dense, count = pages._dense, search.count_candidates

        def traced_dense(*args: Any) -> bool:
            asked.append("probe")
            return dense(*args)

        def traced_count(*args: Any, cap: int = search.CANDIDATE_CAP) -> int:
            if cap == search.CANDIDATE_CAP:  # not match_expression's per-trigram counts
                asked.append("count")
            return count(*args, cap=cap)

        monkeypatch.setattr(pages, "_dense", traced_dense)
        monkeypatch.setattr(search, "count_candidates", traced_count)
        query = LogQuery(tenant.org.id, limit=10, filters=LogFilters(q="widget"))
        assert plan_page(storage, query).query.keys is not None and asked == []
        monkeypatch.setattr(search, "TRIGRAM_PROBE_CAP", 300)  # "wid" has 300 entries: not known to be rare
        assert plan_page(storage, query).query.keys is None and asked == ["probe"]
    finally:
        storage.dispose()


def test_purge_removes_index_entries_and_the_indexer_never_brings_them_back(storage: Storage) -> None:
    """Events received 100 days ago are purged with their index entries; what is kept stays indexed."""
    tenant = make_tenant(storage)
    now = datetime.now(UTC)
    _record(storage, tenant, [f"old needle {i}" for i in range(5)], now - timedelta(days=100))
    search.index_batch(storage, tenant.org.id, batch=3)  # seqs 1-3 indexed, 4-5 not yet
    _record(storage, tenant, [f"new needle {i}" for i in range(4)], now)
    assert search.index_entries(storage, tenant.org.id) == [1, 2, 3]
    result = purge_org(storage, tenant.org.id, (now - timedelta(days=50)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert (result.first_seq, result.last_seq) == (1, 5)
    assert search.index_entries(storage, tenant.org.id) == []
    while search.index_batch(storage, tenant.org.id):
        pass
    assert search.index_entries(storage, tenant.org.id) == [6, 7, 8, 9]


def test_organizations_see_only_their_own_matches_and_entries(app_client: TestClient, storage: Storage) -> None:
    """Two organizations log the same text: each one's q, indexed or not, finds only its own events."""
    a, b = make_tenant(storage), make_tenant(storage)
    one = [{"log_entry": "shared secret", "path": "", "second": 1}]
    a_uuids, b_uuids = _post(app_client, a, one * 3), _post(app_client, b, one * 2)
    search.index_batch(storage, a.org.id)
    for tenant, mine in ((a, a_uuids), (b, b_uuids)):
        assert _walk(app_client, tenant, {"q": "SECRET", "action": "search.t", "limit": 10})[0] == mine
    search.index_batch(storage, b.org.id)
    assert _walk(app_client, b, {"q": "secret", "action": "search.t", "limit": 10})[0] == b_uuids
    # Each organization's entries are its own seqs, 1..N (the ingest above and the reads' records).
    for tenant in (a, b):
        entries = search.index_entries(storage, tenant.org.id)
        with storage.read() as conn:
            assert entries == list(range(1, search.indexed_seq(conn, storage, tenant.org.id) + 1))


def test_the_indexer_thread_catches_up_and_moves_its_position_with_its_entries(own_storage: Storage) -> None:
    """A running indexer indexes what is ingested within a few poll intervals; its position is always the
    last seq it has entries for, so nothing is skipped or indexed twice. (A database of its own: the
    indexer works through every organization, and the session's holds every other test's events.)"""
    storage = own_storage
    tenant = make_tenant(storage)
    _record(storage, tenant, [f"entry {i}" for i in range(7)], datetime.now(UTC))
    indexer = Indexer(storage, storage.settings.model_copy(update={"search_poll_seconds": 0.05}))
    indexer.start()
    try:
        deadline = time.monotonic() + 10
        while search.index_entries(storage, tenant.org.id) != list(range(1, 8)):
            assert time.monotonic() < deadline, "the indexer did not catch up within 10 s"
            time.sleep(0.05)
        _record(storage, tenant, ["one more"], datetime.now(UTC))
        while search.index_entries(storage, tenant.org.id) != list(range(1, 9)):
            assert time.monotonic() < deadline, "the indexer did not index a new event within 10 s"
            time.sleep(0.05)
    finally:
        indexer.stop()
    with storage.read() as conn:
        assert search.indexed_seq(conn, storage, tenant.org.id) == 8


def test_the_indexer_thread_goes_on_at_once_only_while_a_whole_batch_was_waiting(own_storage: Storage) -> None:
    """A backlog of more than a batch is indexed batch after batch without resting; a pass that caught up
    rests a poll interval even though it indexed something, so under steady ingest each pass takes a poll
    interval's events (issue #11)."""
    storage = own_storage
    tenant = make_tenant(storage)
    _record(storage, tenant, [f"entry {i}" for i in range(search.INDEX_BATCH + 500)], datetime.now(UTC))
    with storage.read() as conn:
        head = conn.execute(sa.select(chain_heads.c.seq).where(chain_heads.c.org_id == tenant.org.id)).scalar_one()
    indexer = Indexer(storage, storage.settings.model_copy(update={"search_poll_seconds": 60}))
    indexer.start()
    try:
        deadline = time.monotonic() + 20
        while search.index_entries(storage, tenant.org.id) != list(range(1, head + 1)):
            assert time.monotonic() < deadline, "the indexer rested between the batches of a backlog"
            time.sleep(0.05)
        _record(storage, tenant, ["one more"], datetime.now(UTC))
        time.sleep(0.5)
        with storage.read() as conn:
            assert search.indexed_seq(conn, storage, tenant.org.id) == head  # resting its poll interval
    finally:
        indexer.stop()


def test_reindex_rewrites_entries_from_the_rows_and_leaves_unindexed_seqs_to_the_indexer(
    app_client: TestClient, storage: Storage
) -> None:
    """reindex (for an erasure) keeps one entry per indexed seq, still finding the event by its text, and
    adds none for a seq the indexer has not reached."""
    tenant = make_tenant(storage)
    uuids = _post(app_client, tenant, [{"log_entry": f"refresh me {i}", "path": "", "second": i} for i in range(3)])
    search.index_batch(storage, tenant.org.id, batch=2)
    with storage.write() as conn:
        assert search.reindex(conn, storage, tenant.org.id, [1, 2, 3]) == 2
    assert search.index_entries(storage, tenant.org.id) == [1, 2]
    assert _walk(app_client, tenant, {"q": "refresh me 1", "action": "search.t", "limit": 5})[0] == [uuids[1]]


def test_a_killed_indexer_loses_nothing_and_indexes_nothing_twice(storage: Storage) -> None:
    """An indexer process SIGKILLed mid-way leaves entries for exactly seqs 1..its position; the next
    indexer goes on from there to the head."""
    tenant = make_tenant(storage)
    _record(storage, tenant, [f"crash {i}" for i in range(3000)], datetime.now(UTC))
    code = ("from auditkeep.storage import open_storage, search\n"
            f"s = open_storage({storage.url!r}, migrate=False)\n"
            f"while search.index_batch(s, {tenant.org.id}, batch=25):\n    pass\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while True:
            with storage.read() as conn:
                position = search.indexed_seq(conn, storage, tenant.org.id)
            if position >= 100:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "the indexer never got going"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    with storage.read() as conn:
        position = search.indexed_seq(conn, storage, tenant.org.id)
    assert position < 3000, "the indexer finished before it was killed: nothing was tested"
    assert search.index_entries(storage, tenant.org.id) == list(range(1, position + 1))
    while search.index_batch(storage, tenant.org.id):
        pass
    assert search.index_entries(storage, tenant.org.id) == list(range(1, 3001))


@pytest.mark.postgres
def test_an_indexer_finding_an_organization_being_indexed_goes_on_without_waiting(
        postgres_url: str, settings: Settings) -> None:
    """PostgreSQL: every serve worker runs an indexer. While one holds an organization's position row, another's
    batch for that organization returns at once with nothing indexed (SKIP LOCKED) instead of queueing to
    index the same events after it; once the row is free the batch indexes as usual. (SQLite has one writer:
    indexers there take turns on its lock.)"""
    storage = open_storage(postgres_url, settings=settings.model_copy(update={"database_url": postgres_url}))
    try:
        _indexer_skips_a_held_organization(storage)
    finally:
        storage.dispose()


def _indexer_skips_a_held_organization(storage: Storage) -> None:
    tenant = make_tenant(storage)
    _record(storage, tenant, [f"needle {i}" for i in range(4)], datetime.now(UTC))
    with storage.engine.connect() as holder:
        holder.exec_driver_sql("INSERT INTO search_positions (org_id, indexed_seq) VALUES (%s, 0) "
                               "ON CONFLICT DO NOTHING", (tenant.org.id,))
        holder.commit()
        holder.exec_driver_sql("SELECT 1 FROM search_positions WHERE org_id = %s FOR UPDATE", (tenant.org.id,))
        started = time.monotonic()
        assert search.index_batch(storage, tenant.org.id) == 0
        assert time.monotonic() - started < 5  # did not wait for the holder
        holder.rollback()
    assert search.index_batch(storage, tenant.org.id) == 4
    assert search.index_entries(storage, tenant.org.id) == [1, 2, 3, 4]
