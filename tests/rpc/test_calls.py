"""Calls over real sockets on 127.0.0.1: round trips, pipelining, errors, limits, timeouts."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random

import pytest

from ramster.errors import (
    Busy,
    CapacityError,
    NoSuchMethod,
    PeerLost,
    PeerTimeout,
    ProtocolError,
    RemoteError,
    RpcError,
)
from ramster.rpc import Keys, PageBatch, RpcClient, RpcServer
from ramster.rpc.session import ANYONE
from ramster.testing.wait import wait_until
from tests.rpc.conftest import FAST, SECRET, Harness


def pages(n: int, size: int = 4096, version: int = 1) -> PageBatch:
    return PageBatch.of((0, i, version, i * 7, os.urandom(size)) for i in range(n))


@pytest.mark.asyncio
async def test_page_round_trip(harness: Harness) -> None:
    client = harness.client()
    batch = pages(64)
    assert await client.put_pages(batch) == [True] * 64
    got = await client.get_pages(Keys.of((0, i) for i in range(70)))
    assert len(got) == 64
    for sent, back in zip(batch, got, strict=True):
        assert (back.area, back.offset, back.version, back.checksum) == sent[:4]
        assert bytes(back.payload) == sent.payload
    assert await client.drop_pages(Keys.of([(0, 0), (0, 99)])) == [True, False]
    await client.ping()


@pytest.mark.asyncio
async def test_pipelined_calls_with_out_of_order_replies(harness: Harness) -> None:
    order: list[int] = []

    async def slow_echo(params: list[object]) -> object:
        delay = params[0]
        assert isinstance(delay, float)
        await asyncio.sleep(delay)
        order.append(int(delay * 100))
        return params

    harness.server.register("slow_echo", slow_echo, roles=ANYONE)
    client = harness.client()
    delays = [0.2, 0.15, 0.1, 0.05, 0.0]
    results = await asyncio.gather(
        *(client.call("slow_echo", [d, i]) for i, d in enumerate(delays))
    )
    assert results == [[d, i] for i, d in enumerate(delays)]
    assert order == [0, 5, 10, 15, 20]  # answered in the reverse of the order sent
    assert client.statistics().connects == 1  # all over one connection


@pytest.mark.asyncio
async def test_many_concurrent_callers_each_get_their_answer(harness: Harness) -> None:
    harness.server.register("echo", lambda params: params, roles=ANYONE)
    client = harness.client()
    results = await asyncio.gather(*(client.call("echo", [i, "x" * i]) for i in range(500)))
    assert results == [[i, "x" * i] for i in range(500)]


@pytest.mark.asyncio
async def test_batch_near_the_size_limit(harness: Harness) -> None:
    client = harness.client()
    limit = FAST.max_message_bytes
    # 255 pages of 4 KiB fit in 1 MiB with their metadata; one more page does not.
    near = pages(255)
    assert await client.put_pages(near) == [True] * 255
    got = await client.get_pages(near.keys)
    assert [bytes(p) for p in got.payloads] == [bytes(p) for p in near.payloads]
    with pytest.raises(ProtocolError):
        await client.put_pages(pages(256))
    assert await client.call("rpc.ping", []) is None  # refused locally; connection intact
    # A reply that would exceed the limit becomes an error reply, not a dead connection.
    harness.server.register("big", lambda params: b"x" * limit, roles=ANYONE)
    with pytest.raises(ProtocolError):
        await client.call("big", [])
    await client.ping()


@pytest.mark.asyncio
async def test_errors_map_to_classes(harness: Harness) -> None:
    def full(params: list[object]) -> None:
        raise CapacityError("no room")

    def broken(params: list[object]) -> None:
        raise KeyError("secret detail")

    harness.server.register("full", full, roles=ANYONE)
    harness.server.register("broken", broken, roles=ANYONE)
    client = harness.client()
    with pytest.raises(NoSuchMethod):
        await client.call("nope", [])
    with pytest.raises(CapacityError, match="no room") as info:
        await client.call("full", [])
    assert info.value.retriable
    with pytest.raises(RemoteError) as remote:
        await client.call("broken", [])
    assert "secret detail" not in str(remote.value)
    with pytest.raises(ProtocolError):
        await client.call("pages.get", [[1], "not a list"])
    with pytest.raises(ProtocolError):
        await client.call("rpc.ping", [1])
    await client.ping()


@pytest.mark.asyncio
async def test_server_answers_busy_past_its_in_flight_limit() -> None:
    config = dataclasses.replace(FAST, max_in_flight=4)
    release = asyncio.Event()

    async def wait(params: list[object]) -> None:
        await release.wait()

    server = RpcServer(SECRET, config)
    server.register("wait", wait, roles=ANYONE)
    await server.start()
    # The client allows more in flight than the server: the surplus gets Busy.
    client = RpcClient("127.0.0.1", server.port, SECRET, dataclasses.replace(FAST, max_in_flight=8))
    try:
        calls = [asyncio.ensure_future(client.call("wait", [])) for _ in range(6)]
        finished = asyncio.as_completed(calls, timeout=2)
        for _ in range(2):
            with pytest.raises(Busy) as info:
                await next(finished)
            assert info.value.retriable
        await asyncio.sleep(0.05)  # nothing else finishes while the handlers wait
        assert sum(c.done() for c in calls) == 2
        assert server.statistics().busy_replies == 2
        release.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert sum(r is None for r in results) == 4
    finally:
        await client.close()
        await server.close()


@pytest.mark.asyncio
async def test_client_waits_for_a_slot_then_times_out(harness: Harness) -> None:
    release = asyncio.Event()

    async def wait(params: list[object]) -> None:
        await release.wait()

    harness.server.register("wait", wait, roles=ANYONE)
    client = harness.client(dataclasses.replace(FAST, max_in_flight=2))
    first = [asyncio.ensure_future(client.call("wait", [])) for _ in range(2)]
    await wait_until(lambda: harness.server.statistics().in_flight == 2, 2, "two calls in flight")
    with pytest.raises(PeerTimeout) as info:
        await client.call("wait", [], timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert info.value.retriable
    release.set()
    assert await asyncio.gather(*first) == [None, None]


@pytest.mark.asyncio
async def test_call_timeout_keeps_the_connection_usable(harness: Harness) -> None:
    async def sleepy(params: list[object]) -> str:
        await asyncio.sleep(0.3)
        return "late"

    harness.server.register("sleepy", sleepy, roles=ANYONE)
    harness.server.register("echo", lambda params: params, roles=ANYONE)
    client = harness.client()
    with pytest.raises(PeerTimeout):
        await client.call("sleepy", [], timeout=0.05)
    assert await client.call("echo", ["right"]) == ["right"]
    await wait_until(lambda: client.statistics().late_replies == 1, 2, "the late reply")
    assert await client.call("echo", ["still right"]) == ["still right"]


@pytest.mark.asyncio
async def test_connection_limit_answers_busy() -> None:
    server = RpcServer(SECRET, dataclasses.replace(FAST, max_connections=2))
    await server.start()
    clients = [RpcClient("127.0.0.1", server.port, SECRET, FAST) for _ in range(3)]
    try:
        await clients[0].ping()
        await clients[1].ping()
        with pytest.raises(Busy):
            await clients[2].ping()
        assert server.statistics().refused_connections == 1
        await clients[0].close()

        async def reconnects() -> bool:
            try:
                await clients[2].ping()
            except PeerLost:
                return False  # the server has not noticed the close yet, or backoff
            return True

        await wait_until(reconnects, 2, "a freed connection slot reused")
    finally:
        for client in clients:
            await client.close()
        await server.close()


@pytest.mark.asyncio
async def test_pending_calls_fail_when_the_server_closes(harness: Harness) -> None:
    async def forever(params: list[object]) -> None:
        await asyncio.Event().wait()

    harness.server.register("forever", forever, roles=ANYONE)
    client = harness.client()
    calls = [asyncio.ensure_future(client.call("forever", [])) for _ in range(5)]
    await wait_until(lambda: harness.server.statistics().in_flight == 5, 2, "five calls in flight")
    await harness.server.close(grace=0.05)
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, PeerLost) and isinstance(r, ConnectionError) for r in results)
    with pytest.raises(RpcError):
        await client.ping()


@pytest.mark.asyncio
async def test_close_is_idempotent_and_start_reports_the_port() -> None:
    server = RpcServer(SECRET, FAST)
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.close()  # before start
    server = RpcServer(SECRET, FAST)
    async with server:
        assert server.port > 0
        async with RpcClient("127.0.0.1", server.port, SECRET, FAST) as client:
            await client.ping()
    await server.close()
    with pytest.raises(RuntimeError):
        await server.start()


@pytest.mark.asyncio
async def test_closed_client_refuses_calls(harness: Harness) -> None:
    client = harness.client()
    await client.ping()
    await client.close()
    await client.close()
    with pytest.raises(PeerLost):
        await client.ping()


@pytest.mark.asyncio
async def test_unreachable_peer_fails_fast_with_backoff() -> None:
    server = RpcServer(SECRET, FAST)
    await server.start()
    port = server.port
    await server.close()
    client = RpcClient("127.0.0.1", port, SECRET, FAST)
    with pytest.raises(PeerLost):
        await client.ping()
    with pytest.raises(PeerLost, match="next attempt"):
        await client.ping()
    assert client.statistics().connect_failures == 1
    await client.close()


@pytest.mark.asyncio
async def test_pool_spreads_calls_over_connections() -> None:
    release = asyncio.Event()

    async def wait(params: list[object]) -> None:
        await release.wait()

    server = RpcServer(SECRET, FAST)
    server.register("wait", wait, roles=ANYONE)
    await server.start()
    config = dataclasses.replace(FAST, pool_size=2, max_in_flight=2)
    client = RpcClient("127.0.0.1", server.port, SECRET, config)
    try:
        calls = [asyncio.ensure_future(client.call("wait", [])) for _ in range(4)]
        await wait_until(lambda: server.statistics().in_flight == 4, 2, "four calls in flight")
        assert client.statistics().connections == 2
        release.set()
        await asyncio.gather(*calls)
    finally:
        await client.close()
        await server.close()


@pytest.mark.asyncio
async def test_notifications_reach_sync_and_async_handlers(harness: Harness) -> None:
    seen: list[object] = []
    arrived = asyncio.Event()

    async def heard(params: list[object]) -> None:
        seen.append(("async", params))
        arrived.set()

    harness.server.register("beat", lambda params: seen.append(("sync", params)), roles=ANYONE)
    harness.server.register("beat_async", heard, roles=ANYONE)
    client = harness.client()
    with pytest.raises(PeerLost):
        client.notify("beat", [0])  # no connection yet
    await client.ping()
    client.notify("beat", [1])
    client.notify("beat_async", [2])
    client.notify("unknown", [3])
    await asyncio.wait_for(arrived.wait(), 2)
    await client.ping()
    assert seen == [("sync", [1]), ("async", [2])]


@pytest.mark.asyncio
async def test_cancellations_and_timeouts_leak_no_slots(harness: Harness) -> None:
    async def maybe_slow(params: list[object]) -> object:
        delay = params[0]
        assert isinstance(delay, float)
        await asyncio.sleep(delay)
        return params

    harness.server.register("maybe_slow", maybe_slow, roles=ANYONE)
    config = dataclasses.replace(FAST, max_in_flight=4)
    client = harness.client(config)
    rng = random.Random(7)
    tasks = []
    for i in range(120):
        delay = rng.choice([0.0, 0.001, 0.02, 0.05])
        timeout = rng.choice([None, 0.01, 0.03])
        tasks.append(asyncio.ensure_future(client.call("maybe_slow", [delay, i], timeout=timeout)))
        if rng.random() < 0.2:
            await asyncio.sleep(0)
            rng.choice(tasks).cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        assert isinstance(result, PeerTimeout | asyncio.CancelledError) or result[1] == i  # type: ignore[index]
    assert client.statistics().in_flight == 0
    # Every slot came back: max_in_flight calls run at once again.
    again = await asyncio.gather(*(client.call("maybe_slow", [0.01, n]) for n in range(4)))
    assert [r[1] for r in again] == [0, 1, 2, 3]  # type: ignore[index]
    assert client.statistics().connects == 1


@pytest.mark.asyncio
async def test_a_call_timing_out_on_a_silent_connection_drops_it(harness: Harness) -> None:
    """Nothing came back for longer than SILENT_ABORT since the call went out: the path or
    the peer is gone, and what the connection still holds must not be delivered later (a
    healed partition would retransmit it). The next call dials afresh."""
    from ramster.rpc.const import SILENT_ABORT

    async def forever(params: list[object]) -> None:
        await asyncio.Event().wait()

    harness.server.register("forever", forever, roles=ANYONE)
    harness.server.register("echo", lambda params: params, roles=ANYONE)
    client = harness.client()
    assert await client.call("echo", [1]) == [1]
    with pytest.raises(PeerTimeout):
        await client.call("forever", [], timeout=SILENT_ABORT + 0.2)
    assert await client.call("echo", [2]) == [2]
    assert client.statistics().connects == 2


@pytest.mark.asyncio
async def test_a_slot_handed_over_as_its_waiter_times_out_comes_back(harness: Harness) -> None:
    """A slot freed in the same loop iteration as a waiter's deadline is not lost (it was: a
    connection whose slots all leaked stayed open and timed out every call, heartbeats too)."""
    client = harness.client(dataclasses.replace(FAST, max_in_flight=1))
    await client.ping()
    (conn,) = client._conns
    loop = asyncio.get_running_loop()
    for _ in range(3):
        conn._free_slots = 0  # the one slot is busy with a call
        deadline = loop.time() + 0.05
        # Scheduled before the waiter's own deadline timer: it runs first in that iteration.
        loop.call_at(deadline, conn._release_slot)
        with pytest.raises(PeerTimeout):
            await conn.call("ping", [], deadline)
        assert conn._free_slots == 1, "the slot handed over at the deadline leaked"
    await client.ping()
    assert client.statistics().in_flight == 0
