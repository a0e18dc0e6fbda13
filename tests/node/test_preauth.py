"""Unauthenticated peers spend almost nothing: 200 connections announcing 8 MiB frames, or
hanging in their handshake, cost a node no memory to speak of, and its authenticated peers
(and new ones from elsewhere) are served as before, never told Busy."""

from __future__ import annotations

import asyncio
import socket
import statistics
import struct
import time

import psutil
import pytest

from ramster.client import Client
from ramster.errors import Busy
from ramster.rpc import RpcConfig
from ramster.rpc.auth import ClientHandshake
from ramster.rpc.const import PREAUTH_MAX_FRAME
from tests.conftest import ClusterFactory
from tests.rpc.rawpeer import frame

ATTACKERS = 200
ATTACKER_HOST = "127.0.0.2"
"""Attackers come from another loopback address than the real clients (127.0.0.1), as they
would from another host: per-source limits then apply to them only."""


def attacker(i: int, spread: bool) -> str:
    """One source address for all attackers, or one each (127.0.0.2 ... 127.0.0.201)."""
    return f"127.0.0.{2 + i}" if spread else ATTACKER_HOST


async def _latencies(client: Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.load(0, 1)
        out.append(time.perf_counter() - t0)
    return out


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(0.99 * (len(samples) - 1))]


async def _open(host: str, port: int, data: bytes, source: str = ATTACKER_HOST) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await loop.sock_connect(sock, (host, port))
    if data:
        await loop.sock_sendall(sock, data)
    return sock


@pytest.mark.asyncio
@pytest.mark.parametrize("spread", [False, True], ids=["one-source", "200-sources"])
@pytest.mark.parametrize(
    "junk",
    [struct.pack(">I", 8 << 20), frame([2, "ramster.hello", ["x" * 900]])[:-10], b""],
    ids=["8MiB-header", "unfinished-frame", "silent"],
)
async def test_unauthenticated_junk_costs_nothing_and_starves_no_one(
    cluster_factory: ClusterFactory, junk: bytes, spread: bool
) -> None:
    c = cluster_factory(1, local_budget="8MiB", lent_budget="8MiB")
    await c.start_all()
    proc = c.nodes[0].proc
    assert proc is not None
    node = psutil.Process(proc.pid)
    host, port = c.nodes[0].host, c.nodes[0].port
    page = bytes(range(256)) * 16
    async with c.client(0) as client:
        await client.init(0)
        assert await client.store(0, 1, page)
        before = await _latencies(client, 200)
        rss_before = node.memory_info().rss
        socks = await asyncio.gather(
            *(_open(host, port, junk, attacker(i, spread)) for i in range(ATTACKERS))
        )
        try:
            during = await _latencies(client, 200)
            # A new peer from another address is let in at once, never told Busy.
            t0 = time.perf_counter()
            async with Client(c.nodes[0].address, c.secret, RpcConfig(cluster=c.name)) as new:
                assert await new.load(0, 1) == page
            assert time.perf_counter() - t0 < 1.0
            rss_during = node.memory_info().rss
            st = await client.stats()
        finally:
            for sock in socks:
                sock.close()
    assert rss_during - rss_before < 16 << 20, (rss_before, rss_during)
    rpc = st["rpc"]
    assert rpc["unauthenticated"] <= 64
    # Normal latency: the median is what it was, give or take a busy machine.
    assert statistics.median(during) < max(5 * statistics.median(before), 0.02)
    assert _p99(during) < max(10 * _p99(before), 0.1)
    if junk:
        turned_away = rpc["handshake_failures"] + rpc["refused_connections"]
        assert turned_away + rpc["preauth_evicted"] >= ATTACKERS - 64
    assert rpc["busy_replies"] == 0


@pytest.mark.asyncio
async def test_one_source_gets_only_its_share_of_handshakes(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(1)
    await c.start_all()
    host, port = c.nodes[0].host, c.nodes[0].port
    hello = frame([2, "ramster.hello", ClientHandshake(c.secret, c.name).hello()])
    assert len(hello) < PREAUTH_MAX_FRAME
    # Half a hello each, then silence: each one holds a handshake open.
    socks = await asyncio.gather(*(_open(host, port, hello[:20]) for _ in range(40)))
    try:
        await asyncio.sleep(0.3)
        st = await c.stats(0)  # from 127.0.0.1: a source of its own, not refused
        assert st["rpc"]["unauthenticated"] <= 16
        assert st["rpc"]["refused_connections"] >= 40 - 16
    finally:
        for sock in socks:
            sock.close()


def test_busy_is_still_an_rpc_error() -> None:
    assert Busy.retriable
