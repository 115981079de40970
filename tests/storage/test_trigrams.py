"""The trigram sample behind `q` on PostgreSQL (storage/trigrams.py, issue #13): what it counts, which
trigrams it picks, that it is taken in the background, and that `q` asking the index for a text's rarest
trigrams alone still returns exactly the events the matching rule selects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditkeep.api.app import create_app
from auditkeep.ingest.service import record_events
from auditkeep.ingest.validation import parse_events
from auditkeep.settings import Settings
from auditkeep.storage import Storage, open_storage, pages, search, trigrams
from auditkeep.storage.queries import LogFilters, LogQuery, ascii_lower
from auditkeep.storage.trigrams import Sample
from tests.conftest import make_tenant, own_database

pytestmark = pytest.mark.postgres

URL = "/api/v1/audit_logs"


@pytest.fixture
def pg_own(postgres_url: str, settings: Settings, tmp_path: Path) -> Iterator[Storage]:
    """A PostgreSQL database of this test's own: the sample covers every organization's documents."""
    with own_database(postgres_url, tmp_path) as url:
        storage = open_storage(url, settings=settings.model_copy(update={"database_url": url}))
        yield storage
        storage.dispose()


def _record(storage: Storage, org_id: int, entries: list[str]) -> None:
    body = [{"action": "t", "client_ip": "10.0.0.1", "log_entry": e, "url": "https://x.test/"} for e in entries]
    record_events(storage, org_id, parse_events(orjson.dumps(body), datetime.now(UTC)))
    while search.index_batch(storage, org_id):
        pass


def test_a_sample_counts_the_documents_holding_each_trigram(pg_own: Storage) -> None:
    """Under SAMPLE_DOCS documents the sample is the whole index: exact counts, a document counted once."""
    org_id = make_tenant(pg_own).org.id
    _record(pg_own, org_id, ["alpha 31337 31337", "alpha beta", "gamma"])
    with pg_own.write() as conn:
        conn.exec_driver_sql("ANALYZE search_docs")
    taken = trigrams.sample(pg_own)
    assert taken.docs == 3
    assert taken.counts["313"] == 1 and taken.counts["alp"] == 2 and taken.counts["amm"] == 1


def test_a_sample_of_an_index_the_statistics_do_not_know_stays_small(
    pg_own: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never analyzed (reltuples -1), the index is sized from its pages, and the LIMIT bounds the sample
    whatever the share: it is never the whole table."""
    org_id = make_tenant(pg_own).org.id
    _record(pg_own, org_id, [f"entry {i} " + "x" * 150 for i in range(3_000)])
    with pg_own.write() as conn:  # as before the first ANALYZE, whether or not autovacuum got there meanwhile
        conn.exec_driver_sql("UPDATE pg_class SET reltuples = -1 WHERE oid = 'search_docs'::regclass")
    monkeypatch.setattr(trigrams, "SAMPLE_DOCS", 100)
    taken = trigrams.sample(pg_own)
    assert 0 < taken.docs <= 100 * trigrams.SAMPLE_SLACK


def test_the_rarest_letter_and_digit_trigrams_are_picked_only_when_rare() -> None:
    common = dict.fromkeys(["das", "ash", "shb", "hbo", "boa", "oar", "ard", "rds"], 500)
    letters = dict.fromkeys(["dat", "ata", "tas", "aso", "sou", "our", "urc", "rce", "ces"], 900)
    sample = Sample(1000, {**common, **letters, "313": 3, "337": 1, "133": 9})
    assert sample.rarest("datasources/31337", 3) == ["337", "313", "133"]
    assert Sample(1000, {}).rarest("datasources/31337", 2) == ["133", "313"]  # unseen: 0, ties in order
    assert sample.rarest("DataSources/31337", 3) == sample.rarest("datasources/31337", 3)  # A-Z folded
    assert sample.rarest("dashboards/42", 3) == []  # the rarest is in half the documents: not rare
    assert sample.rarest("user-9@x", 3) == []  # "use", "ser": no more than k, the whole text is as good
    assert sample.rarest("ééé été 313", 1) == []  # one letter-and-digit trigram only
    assert sample.share("337") == 0.001 and sample.share("zzz") == 0.0


def test_the_sample_is_taken_in_the_background_and_kept(pg_own: Storage) -> None:
    """The first read finds no sample (it goes on without one), a thread takes it; later reads get it."""
    org_id = make_tenant(pg_own).org.id
    _record(pg_own, org_id, [f"entry {i}" for i in range(20)])
    assert trigrams.sample_for(pg_own) is None
    deadline = time.monotonic() + 30
    while (taken := trigrams.sample_for(pg_own)) is None:
        assert time.monotonic() < deadline, "no sample taken"
        time.sleep(0.05)
    assert taken.docs >= 20 and taken.counts["ent"] >= 20
    assert trigrams.sample_for(pg_own) is taken


def test_a_term_the_sample_calls_sparse_goes_to_the_index_unprobed(
    pg_own: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A term in every event of this organization but whose rarest trigram is in few sampled documents (the
    sample is of the whole index) is read from the index's candidates without the probe of the walk; one
    the sample calls common, or with no sample yet, is probed, and walked."""
    org_id = make_tenant(pg_own).org.id
    _record(pg_own, org_id, [f"widget {i}" for i in range(300)])
    probes: list[str] = []
    dense = pages._dense

    def probed(*args: Any) -> bool:
        probes.append(args[3])
        return dense(*args)

    monkeypatch.setattr(pages, "_dense", probed)

    def walked(sample: Sample | None) -> bool:
        monkeypatch.setattr(trigrams, "sample_for", lambda _storage: sample)
        planned = pages.plan_page(pg_own, LogQuery(org_id, limit=10, filters=LogFilters(q="widget")))
        return planned.query.keys is None

    assert not walked(Sample(10_000, {"wid": 3})) and probes == []
    assert walked(Sample(10_000, dict.fromkeys(["wid", "idg", "dge", "get"], 9_000))) and probes == ["widget"]
    assert walked(None) and probes == ["widget", "widget"]


def test_a_sample_of_a_small_index_is_retaken_sooner(pg_own: Storage) -> None:
    """A sample of fewer than SAMPLE_DOCS documents (the whole of a new, growing index) is retaken after
    SMALL_REFRESH_S; a full-sized one only after REFRESH_S."""
    counts = trigrams.TrigramCounts()
    for docs, age, retaken in ((10, trigrams.SMALL_REFRESH_S + 1, True),
                               (trigrams.SAMPLE_DOCS, trigrams.SMALL_REFRESH_S + 1, False),
                               (trigrams.SAMPLE_DOCS, trigrams.REFRESH_S + 1, True)):
        old = Sample(docs, {})
        counts._sample, counts._taken = old, time.monotonic() - age
        assert counts.current(pg_own) is old  # the old one serves meanwhile
        if not retaken:
            assert not counts._refreshing  # no sample is being taken
        deadline = time.monotonic() + 30
        while retaken and counts._sample is old:
            assert time.monotonic() < deadline, "not retaken"
            time.sleep(0.02)
        assert (counts._sample is not old) is retaken


# Mostly letters and digits, so that most texts have several trigrams to choose from; LIKE's wildcards and
# escape, a space and a slash (pg_trgm's word breaks) and a letter A-Z folding leaves apart.
ALPHABET = ["a", "b", "1", "A", "B", "a", "b", "1", "é", "%", "_", "\\", " ", "/"]
texts = st.lists(st.sampled_from(ALPHABET), min_size=0, max_size=12).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), indexed=st.integers(0, 15), limit=st.integers(1, 5),
       q=st.one_of(st.lists(st.sampled_from(["a", "b", "1", "A", "B"]), min_size=4, max_size=7).map("".join),
                   st.lists(st.sampled_from(ALPHABET), min_size=3, max_size=7).map("".join)))
def test_q_through_the_rarest_trigrams_equals_a_brute_force_scan(
    pg_client: tuple[TestClient, Storage], monkeypatch: pytest.MonkeyPatch, data: st.DataObject,
    indexed: int, limit: int, q: str,
) -> None:
    """Every text with a letter-and-digit trigram is looked up by its rarest one alone (a sample that calls
    every trigram rare), some events indexed and some not: each walk of `q` returns exactly the events the
    rule matches, in order, in full pages."""
    # Texts around q itself (its case changed at random) as well as any texts: matches, near misses, none.
    around = st.tuples(texts, st.sampled_from([q, q.upper(), q.lower()]), texts).map("".join)
    entries = data.draw(st.lists(st.tuples(st.one_of(texts, around), st.one_of(texts, around)), max_size=15))
    client, storage = pg_client
    monkeypatch.setattr(trigrams, "sample_for", lambda _storage: Sample(1, {}))
    monkeypatch.setattr(search, "RAREST_TRIGRAMS", 1)
    tenant = make_tenant(storage)
    body = [{"action": "t", "client_ip": "10.0.0.1", "log_entry": e, "url": "https://x.test/" + u}
            for e, u in entries]
    uuids: list[str] = []
    for part, index in ((body[:indexed], True), (body[indexed:], False)):  # the rest is the unindexed tail
        if part:
            r = client.post(URL, json=part, headers=tenant.headers)
            assert r.status_code == 201, r.text
            uuids += r.json()["event_uuids"]
        while index and search.index_batch(storage, tenant.org.id):
            pass
    needle = ascii_lower(q)
    expected = [u for u, e in zip(uuids, body, strict=True)
                if needle in ascii_lower(e["log_entry"] or "") or needle in ascii_lower(e["url"])]
    got: list[str] = []
    sizes: list[int] = []
    r = client.get(URL, params={"q": q, "action": "t", "limit": limit}, headers=tenant.headers)
    while True:
        assert r.status_code == 200, r.text
        page: list[dict[str, Any]] = r.json()["logs"]
        got += [log["event_uuid"] for log in page]
        sizes.append(len(page))
        if (url := r.links.get("next", {}).get("url")) is None:
            break
        r = client.get(url, headers=tenant.headers)
    assert got == expected
    full, rest = divmod(len(expected), limit)
    assert sizes == ([limit] * full + ([rest] if rest else [])) or (sizes == [0] and not expected)


@pytest.fixture(scope="module")
def pg_client(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Storage]]:
    keys = tmp_path_factory.mktemp("trigram-keys")
    config = Settings(database_url=postgres_url, signing_key_path=keys / "signing-key.pem",
                      secrets_key_path=keys / "secrets-key", log_level="WARNING", rate_limit="100000/second",
                      auth_failure_limit="100000/minute")
    storage = open_storage(postgres_url, settings=config)
    with TestClient(create_app(config, storage=storage)) as client:
        yield client, storage
    storage.dispose()
