"""Faults: a call cancelled while its answer is delayed, a peer killed mid-call and restarted."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ramster.errors import PeerLost, PeerTimeout
from ramster.rpc import Keys, PageBatch, RpcClient
from ramster.rpc.auth import SECRET_ENV
from ramster.rpc.session import ANYONE
from tests.rpc.conftest import FAST, SECRET, Harness
from tests.rpc.proxy import DelayProxy

PEER_SERVER = Path(__file__).with_name("peer_server.py")


@pytest_asyncio.fixture
async def proxied(harness: Harness) -> AsyncIterator[tuple[Harness, DelayProxy]]:
    proxy = DelayProxy(harness.server.port)
    await proxy.start()
    try:
        yield harness, proxy
    finally:
        await proxy.close()


@pytest.mark.asyncio
async def test_cancelled_call_does_not_leak_its_answer_into_the_next(
    proxied: tuple[Harness, DelayProxy],
) -> None:
    # Modelled on redis-py's regression test for CVE-2023-28858 (tests/test_asyncio/test_cwe_404).
    harness, proxy = proxied
    harness.server.register("echo", lambda params: params, roles=ANYONE)
    client = RpcClient("127.0.0.1", proxy.port, SECRET, FAST)
    harness.clients.append(client)
    await client.put_pages(PageBatch.of([(0, 1, 1, 11, b"one"), (0, 2, 1, 22, b"two")]))

    proxy.delay = 0.1
    for attempt in range(5):
        task = asyncio.ensure_future(client.get_pages(Keys.of([(0, 1)])))
        await asyncio.sleep(0.02 * (attempt + 1) / 2)  # cancel while the answer is in the proxy
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        got = await client.get_pages(Keys.of([(0, 2)]))
        assert [bytes(p) for p in got.payloads] == [b"two"]
        assert await client.call("echo", [attempt]) == [attempt]

    proxy.delay = 0.0
    for i in range(20):
        assert await client.call("echo", [i]) == [i]
    stats = client.statistics()
    assert stats.connects == 1
    assert stats.late_replies >= 1  # the cancelled calls' answers arrived and were dropped


@pytest.mark.asyncio
async def test_timed_out_call_does_not_leak_its_answer(
    proxied: tuple[Harness, DelayProxy],
) -> None:
    harness, proxy = proxied
    harness.server.register("echo", lambda params: params, roles=ANYONE)
    client = RpcClient("127.0.0.1", proxy.port, SECRET, FAST)
    harness.clients.append(client)
    await client.ping()
    proxy.delay = 0.2
    with pytest.raises(PeerTimeout):
        await client.call("echo", ["first"], timeout=0.05)
    assert await client.call("echo", ["second"]) == ["second"]


@pytest.mark.asyncio
async def test_cancel_while_a_large_frame_is_being_sent_aborts_the_connection(
    harness: Harness,
) -> None:
    # Handshake through a proxy, then stall it: the client's big frames back up half-sent.
    proxy = DelayProxy(harness.server.port)
    await proxy.start()
    client = RpcClient(
        "127.0.0.1", proxy.port, SECRET, dataclasses.replace(FAST, max_message_bytes=8 << 20)
    )
    harness.clients.append(client)
    try:
        await client.ping()
        conn = client._conns[0]
        proxy.delay = 60.0  # answers never come back; the server stops reading, writes back up
        big = PageBatch.of((0, i, 1, 0, b"\x00" * 4096) for i in range(1500))
        tasks = [asyncio.ensure_future(client.put_pages(big)) for _ in range(10)]
        await asyncio.sleep(0.3)
        assert conn._write_paused, "the transport never filled up"
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        await asyncio.sleep(0.01)
        assert not conn.is_open  # poisoned: aborted, never reused
    finally:
        await proxy.close()


def _start_peer(port: int) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, **{SECRET_ENV: SECRET.value.decode()})
    proc = subprocess.Popen(
        [sys.executable, str(PEER_SERVER), str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        proc.wait()
        pytest.fail("the peer process did not start")
    return proc, int(line)


@pytest.mark.asyncio
async def test_peer_killed_mid_call_then_restarted() -> None:
    proc, port = await asyncio.to_thread(_start_peer, 0)
    client = RpcClient("127.0.0.1", port, SECRET, FAST)
    try:
        await client.put_pages(PageBatch.of([(0, 1, 1, 1, b"before")]))
        calls = [asyncio.ensure_future(client.call("sleep", [30])) for _ in range(10)]
        await asyncio.sleep(0.2)
        assert client.statistics().in_flight == 10
        proc.send_signal(signal.SIGKILL)
        started = time.monotonic()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert time.monotonic() - started < 1.0  # all at once, not one timeout each
        assert all(isinstance(r, PeerLost) for r in results), results
        assert all(r.retriable for r in results if isinstance(r, PeerLost))
        await asyncio.to_thread(proc.wait)
        assert proc.stdout is not None
        proc.stdout.close()

        with pytest.raises(PeerLost):
            await client.ping()  # nobody listens now

        proc, again = await asyncio.to_thread(_start_peer, port)
        assert again == port
        deadline = time.monotonic() + 5
        while True:
            try:
                await client.ping()
                break
            except PeerLost:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
        # A new incarnation: the old pages are gone, but calls work.
        assert len(await client.get_pages(Keys.of([(0, 1)]))) == 0
        assert await client.put_pages(PageBatch.of([(0, 1, 2, 1, b"after")])) == [True]
    finally:
        await client.close()
        proc.kill()
        await asyncio.to_thread(proc.wait)
        assert proc.stdout is not None
        proc.stdout.close()
