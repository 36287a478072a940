"""GET /v1/endpoints/{id}/logs on a real gateway over the real redis-server: JSON (tail, filters,
`since`, paging, the dropped count), errors, and Server-Sent Events (the tail, then new lines;
Last-Event-ID resumes exactly)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from serverless import keys
from serverless.client.events import SSEDecoder, SSEEvent
from serverless.store import JobStore
from tests.conftest import register
from tests.gateway.conftest import ADMIN_KEY, Gateway, GatewayFactory
from tests.logs.conftest import logs_of, send_all, ship
from worker.log_shipper import LogShipper

LINES = [("w1", "job-a", "a0"), ("w1", "", "runtime line"), ("w2", "job-b", "b0"),
         ("w1", "job-a", "a1"), ("w2", "job-b", "b1"), ("w2", "", "w2 idle")]


def texts(body: dict) -> list[str]:
    return [line["line"] for line in body["lines"]]


async def test_json_tail_is_the_newest_lines_oldest_first(gateway: Gateway, store: JobStore,
                                                          registered: str) -> None:
    await ship(store, registered, [("w1", "", f"line {i}") for i in range(150)])
    body = await logs_of(gateway, registered)
    assert texts(body) == [f"line {i}" for i in range(50, 150)]  # the default tail: 100
    assert body["dropped"] == 0 and body["next"] == body["lines"][-1]["id"]
    first = body["lines"][0]
    assert set(first) == {"id", "time", "worker", "job", "stream", "level", "line"}
    assert (first["worker"], first["job"], first["stream"], first["level"]) == ("w1", "", "stdout", "")
    assert texts(await logs_of(gateway, registered, "tail=3")) == ["line 147", "line 148", "line 149"]


async def test_worker_and_job_filters_apply_on_the_server(gateway: Gateway, store: JobStore,
                                                          registered: str) -> None:
    await ship(store, registered, LINES)
    assert texts(await logs_of(gateway, registered, "job=job-a")) == ["a0", "a1"]
    assert texts(await logs_of(gateway, registered, "worker=w2")) == ["b0", "b1", "w2 idle"]
    assert texts(await logs_of(gateway, registered, "worker=w2&job=job-b&tail=1")) == ["b1"]
    assert texts(await logs_of(gateway, registered, "job=nobody")) == []


async def test_a_filtered_tail_pages_through_the_other_lines(gateway: Gateway, store: JobStore,
                                                             registered: str) -> None:
    await ship(store, registered, [("w1", "rare", "rare 0"), ("w1", "rare", "rare 1")])
    await ship(store, registered, [("w1", "busy", f"busy {i}") for i in range(2_500)])
    body = await logs_of(gateway, registered, "job=rare&tail=10")
    assert texts(body) == ["rare 0", "rare 1"]
    newest = await store.redis.xrevrange(keys.logs(registered), count=1)
    assert body["next"] == newest[0][0].decode()  # what comes next is after every line seen


async def test_since_an_id_gives_the_lines_after_it_and_next_pages_on(gateway: Gateway, store: JobStore,
                                                                      registered: str) -> None:
    await ship(store, registered, [("w1", "j", f"line {i}") for i in range(10)])
    ids = [line["id"] for line in (await logs_of(gateway, registered))["lines"]]
    page = await logs_of(gateway, registered, f"since={ids[3]}&tail=4")
    assert texts(page) == ["line 4", "line 5", "line 6", "line 7"]
    rest = await logs_of(gateway, registered, f"since={page['next']}")
    assert texts(rest) == ["line 8", "line 9"]
    after_all = await logs_of(gateway, registered, f"since={rest['next']}")
    assert after_all["lines"] == [] and after_all["next"] == rest["next"]
    await ship(store, registered, [("w1", "j", "line 10")])
    assert texts(await logs_of(gateway, registered, f"since={after_all['next']}")) == ["line 10"]


async def test_since_epoch_ms_gives_the_lines_written_from_then_on(gateway: Gateway, store: JobStore,
                                                                   registered: str) -> None:
    await ship(store, registered, [("w1", "", "old")])
    await asyncio.sleep(0.01)
    ms = await store.redis.time()
    boundary = ms[0] * 1000 + ms[1] // 1000 + 1
    while (now := await store.redis.time()) and now[0] * 1000 + now[1] // 1000 < boundary:
        await asyncio.sleep(0.001)
    await ship(store, registered, [("w1", "", "new")])
    assert texts(await logs_of(gateway, registered, f"since={boundary}")) == ["new"]
    assert texts(await logs_of(gateway, registered, "since=0")) == ["old", "new"]


async def test_the_dropped_count_is_the_endpoints(gateway: Gateway, store: JobStore, registered: str) -> None:
    shipper = LogShipper(capacity=100)
    for i in range(130):
        shipper.add("stdout", "", f"line {i}")
    await send_all(shipper, store, registered, "w1")
    body = await logs_of(gateway, registered, "tail=1")
    assert body["dropped"] == 30 and texts(body) == ["line 99"]


async def test_an_endpoint_known_only_by_its_lines_is_served(gateway: Gateway, store: JobStore,
                                                            endpoint: str) -> None:
    unknown = await gateway.call("GET", f"/v1/endpoints/{endpoint}/logs")
    assert unknown.status == 404 and f"endpoint '{endpoint}' not found" in unknown.body["error"]
    await ship(store, endpoint, [("w1", "", "a worker that has gone since")])  # podq dev, stopped
    assert texts(await logs_of(gateway, endpoint)) == ["a worker that has gone since"]


async def test_bad_parameters_are_refused_naming_them(gateway: Gateway, registered: str) -> None:
    for query, message in [("tail=0", "tail=0 is out of range"), ("tail=x", "tail='x' is not a whole"),
                           ("since=yesterday", "since='yesterday' is neither an entry id")]:
        answer = await gateway.call("GET", f"/v1/endpoints/{registered}/logs?{query}")
        assert (answer.status, answer.body["error"][:len(message)]) == (400, message)
    answer = await gateway.call("GET", f"/v1/endpoints/{registered}/logs",
                                headers={"Accept": "text/event-stream", "Last-Event-ID": "oops"})
    assert answer.status == 400 and answer.body["error"].startswith("invalid Last-Event-ID 'oops'")


async def test_logs_need_the_admin_key(make_gateway: GatewayFactory, store: JobStore) -> None:
    gateway = await make_gateway(api_keys=("user-key",))
    await register(store, "ep-keys")
    answer = await gateway.call("GET", "/v1/endpoints/ep-keys/logs", auth=False,
                                headers={"Authorization": "Bearer user-key"})
    assert answer.status == 403
    assert (await gateway.call("GET", "/v1/endpoints/ep-keys/logs", auth=False)).status == 401


# ---- Server-Sent Events -------------------------------------------------------------------


class Events:
    """An open SSE response of /logs, read event by event."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response, self.decoder, self.ready = response, SSEDecoder(), []

    async def take(self, n: int, timeout: float = 10) -> list[SSEEvent]:
        async with asyncio.timeout(timeout):
            while len(self.ready) < n:
                self.ready += self.decoder.feed(await self.response.content.readany())
        taken, self.ready = self.ready[:n], self.ready[n:]
        return taken


def open_events(gateway: Gateway, endpoint: str, query: str = "", last_id: str | None = None) -> Any:
    """The /logs request as SSE (`async with` it for the response)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    return gateway.session.get(f"{gateway.url}/v1/endpoints/{endpoint}/logs?{query}", headers=headers)


def lines_of(events: list[SSEEvent]) -> list[str]:
    return [json.loads(e.data)["line"] for e in events]


async def test_sse_sends_the_tail_then_new_lines_as_they_come(gateway: Gateway, store: JobStore,
                                                              registered: str) -> None:
    await ship(store, registered, [("w1", "j1", f"old {i}") for i in range(5)])
    async with open_events(gateway, registered, "tail=2&job=j1") as response:
        assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
        events = Events(response)
        tail = await events.take(2)
        assert lines_of(tail) == ["old 3", "old 4"]
        await ship(store, registered, [("w1", "j2", "another job's"), ("w1", "j1", "new 0"),
                                       ("w2", "j1", "new 1")])
        live = await events.take(2)
        assert lines_of(live) == ["new 0", "new 1"]
        ids = [e.id for e in tail + live]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))  # entry ids, in order


async def test_last_event_id_resumes_with_exactly_the_lines_after_it(gateway: Gateway, store: JobStore,
                                                                     registered: str) -> None:
    await ship(store, registered, [("w1", "", f"line {i}") for i in range(8)])
    async with open_events(gateway, registered, "tail=8") as response:
        first = await Events(response).take(8)
    resume_after = first[4].id
    async with open_events(gateway, registered, last_id=resume_after) as response:
        events = Events(response)
        assert lines_of(await events.take(3)) == ["line 5", "line 6", "line 7"]
        await ship(store, registered, [("w1", "", "line 8")])
        assert lines_of(await events.take(1)) == ["line 8"]  # no line twice, none skipped


async def test_sse_since_sends_every_line_after_it(gateway: Gateway, store: JobStore, registered: str) -> None:
    await ship(store, registered, [("w1", "", f"line {i}") for i in range(300)])
    ids = [line["id"] for line in (await logs_of(gateway, registered, "tail=300"))["lines"]]
    async with open_events(gateway, registered, f"since={ids[9]}&tail=1") as response:
        events = await Events(response).take(290)  # `tail` caps a tail, not a resume
    assert lines_of(events) == [f"line {i}" for i in range(10, 300)]
