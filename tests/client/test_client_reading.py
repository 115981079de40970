"""Reading: the seed's call, cursor walks through Link headers, filters, and after_seq polling."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from sdk_fakes import SOURCE, Backend, FakeAuditServer, make_event

from auditkeep.client import AuditKeepClientError, Client
from auditkeep.schemas.audit_logs import LOG_FIELDS


@pytest.fixture
def stored(backend: Backend) -> list[str]:
    """25 events published through the SDK; their uuids in timestamp order."""
    with backend.client() as client:
        return client.publish([make_event(n) for n in range(25)])


def test_get_audit_logs_sends_the_dates_as_a_json_body_like_datafold(stored: list[str], backend: Backend,
                                                                      fake: FakeAuditServer) -> None:
    with backend.client() as client:
        logs = client.get_audit_logs("2024-05-01T00:00:05", "2024-05-01T00:00:10Z")
    request = fake.requests[-1]
    assert request.method == "GET"
    assert request.url.query == b""
    assert json.loads(request.content) == {"start_date": "2024-05-01T00:00:05",
                                           "end_date": "2024-05-01T00:00:10Z"}
    assert [log["event_uuid"] for log in logs if log["source"] == SOURCE] == stored[5:10]
    assert list(logs[0]) == list(LOG_FIELDS)


def test_get_audit_logs_without_dates_returns_everything(stored: list[str], backend: Backend) -> None:
    with backend.client() as client:
        logs = client.get_audit_logs()
    assert [log["event_uuid"] for log in logs if log["source"] == SOURCE] == stored


@pytest.mark.parametrize("link_style", ["path", "query", "absolute"])
def test_iter_follows_next_links_and_sees_every_event_once(stored: list[str], backend: Backend,
                                                            fake: FakeAuditServer, link_style: str) -> None:
    """Relative and absolute Link targets (RFC 8288) are resolved against the request URL."""
    fake.link_style = link_style
    fake.requests.clear()
    with backend.client() as client:
        seen = [log["event_uuid"] for log in client.iter_audit_logs(page_size=7, source=SOURCE)]
    assert seen == stored
    assert len(fake.requests) == 4
    assert [r.url.params["limit"] for r in fake.requests] == ["7"] * 4


def test_iter_in_descending_order(stored: list[str], backend: Backend) -> None:
    with backend.client() as client:
        seen = [log["event_uuid"] for log in client.iter_audit_logs(order="desc", page_size=10, source=SOURCE)]
    assert seen == stored[::-1]


def test_iter_sends_dates_and_filters_as_query_parameters(stored: list[str], backend: Backend,
                                                          fake: FakeAuditServer) -> None:
    before = len(fake.requests)
    with backend.client() as client:
        seen = list(client.iter_audit_logs("2024-05-01T00:00:03Z", action="thing.*", user_id=1,
                                           is_support_user=None, client_ip="10.0.0.0/24", page_size=2))
    assert [log["url"] for log in seen] == [f"/things/{n}" for n in (5, 9, 13, 17, 21)]
    first = fake.requests[before]
    assert first.url.params["action"] == "thing.*"
    assert first.url.params["user_id"] == "1"
    assert first.url.params["start_date"] == "2024-05-01T00:00:03Z"
    assert "is_support_user" not in first.url.params


def test_boolean_filters_are_sent_as_true_or_false(backend: Backend, fake: FakeAuditServer) -> None:
    with backend.client() as client:
        list(client.iter_audit_logs(is_support_user=False))
    assert fake.requests[-1].url.params["is_support_user"] == "false"


def test_an_unknown_filter_is_refused_before_any_request(backend: Backend, fake: FakeAuditServer) -> None:
    with backend.client() as client, pytest.raises(TypeError, match="unknown filter"):
        list(client.iter_audit_logs(acton="user.login"))  # type: ignore[call-arg]
    assert fake.requests == []


def test_events_ingested_during_a_walk_do_not_disturb_it(stored: list[str], backend: Backend) -> None:
    with backend.client() as client:
        walk = client.iter_audit_logs(page_size=10, source=SOURCE)
        seen = [next(walk)["event_uuid"] for _ in range(12)]
        client.publish([make_event(n) for n in range(100, 105)])  # later timestamps, mid-walk
        seen += [log["event_uuid"] for log in walk]
    assert Counter(seen) == Counter(stored)


def test_a_next_link_to_another_host_is_not_followed(backend: Backend) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        link = '<http://evil.test/steal>; rel="next"'
        return httpx.Response(200, json={"logs": []}, headers={"Link": link})

    with Client("k", "http://audit.test", transport=httpx.MockTransport(handler)) as client, \
            pytest.raises(AuditKeepClientError, match="another host"):
        list(client.iter_audit_logs())


def test_poll_pulls_in_seq_order_and_reports_where_to_resume(stored: list[str], backend: Backend) -> None:
    with backend.client() as client:
        poller = client.poll(after_seq=0, page_size=10, source=SOURCE)
        assert [log["event_uuid"] for log in poller] == stored
        # A late event with an old timestamp is still picked up after last_seq, and only it.
        [late] = client.publish(make_event(0, url="/late"))
        again = client.poll(after_seq=poller.last_seq, source=SOURCE)
        assert [log["event_uuid"] for log in again] == [late]
        assert again.last_seq > poller.last_seq
        assert list(client.poll(after_seq=again.last_seq, source=SOURCE)) == []


def test_poll_last_seq_covers_a_page_once_its_last_event_is_handed_out(stored: list[str],
                                                                      backend: Backend) -> None:
    with backend.client() as client:
        poller = client.poll(page_size=10, source=SOURCE)
        positions = [poller.last_seq for _ in poller]
        # Resuming from the position seen with the tenth event repeats nothing and misses nothing.
        rest = [log["event_uuid"] for log in client.poll(after_seq=positions[9], source=SOURCE)]
    assert positions[:9] == [0] * 9
    assert positions[9:19] == [positions[9]] * 10  # pages of 10: the position moves with each 10th event
    assert positions[19:24] == [positions[19]] * 5
    assert 0 < positions[9] < positions[19] < positions[24] == poller.last_seq
    assert rest == stored[10:]


def test_poll_with_filters_covers_what_it_scanned(stored: list[str], backend: Backend) -> None:
    with backend.client() as client:
        poller = client.poll(action="thing.2", source=SOURCE)
        assert len(list(poller)) == 8
        # Nothing of ours lies beyond the reported position: it covered the non-matching events too.
        assert list(client.poll(after_seq=poller.last_seq, source=SOURCE)) == []


def test_poll_requires_the_service_to_send_x_last_seq() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"logs": []})

    with Client("k", "http://audit.test", transport=httpx.MockTransport(handler)) as client, \
            pytest.raises(AuditKeepClientError, match="X-Last-Seq"):
        list(client.poll())


def test_poll_follow_keeps_asking_after_catching_up(stored: list[str], backend: Backend) -> None:
    with backend.client() as client:
        poller = client.poll(follow=True, interval=3.0, source=SOURCE)
        seen = []
        for log in poller:
            seen.append(log["event_uuid"])
            if len(seen) == 25:
                [late] = client.publish(make_event(200))
            if len(seen) == 26:
                break
    assert seen == [*stored, late]
    assert client.retry.waits == [3.0]  # type: ignore[attr-defined]


def test_page_size_is_bounded(backend: Backend) -> None:
    with backend.client() as client, pytest.raises(ValueError, match="page_size"):
        client.poll(page_size=0)


@pytest.mark.anyio
async def test_async_reading(stored: list[str], backend: Backend) -> None:
    async with backend.async_client() as client:
        logs = await client.get_audit_logs()
        assert [log["event_uuid"] for log in logs if log["source"] == SOURCE] == stored
        seen = [log["event_uuid"] async for log in client.iter_audit_logs(page_size=4, order="desc",
                                                                           source=SOURCE)]
        assert seen == stored[::-1]
        poller = client.poll(page_size=2, source=SOURCE)
        assert [log["event_uuid"] async for log in poller] == stored
        assert poller.last_seq > 0
        assert [log async for log in client.poll(after_seq=poller.last_seq, source=SOURCE)] == []
