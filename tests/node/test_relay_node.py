"""The issue's attack, between two real nodes: node a's peer address is a relay (a host with no
secret) that forwards to node b. The relay can carry the traffic, but it reads no page, cannot
slip a call in, and its address is not taken for b's once b is known directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ramster.client import Client
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Secret
from ramster.testing import corpus
from ramster.testing.wait import wait_until
from tests.node.test_node import load_all, store_all
from tests.rpc.rawpeer import frame
from tests.rpc.relay import Relay

SECRET = Secret(b"relay-test-secret-0123456789")


def _config(tmp: Path, name: str, peers: tuple[str, ...] = (), **kw: object) -> NodeConfig:
    return NodeConfig(
        node_id=name,
        listen="127.0.0.1:0",
        state_dir=tmp / name,
        local_budget=1 << 20,
        lent_budget=32 << 20,
        replicas=1,
        heartbeat=0.1,
        dead_after=1.0,
        admin_listen=None,
        peers=peers,
        **kw,  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture
async def b(tmp_path: Path) -> AsyncIterator[Node]:
    node = Node(_config(tmp_path, "b"), SECRET)
    await node.start()
    yield node
    await node.close()


@pytest_asyncio.fixture
async def relay(b: Node) -> AsyncIterator[Relay]:
    r = Relay("127.0.0.1", b.server.port)
    await r.start()
    yield r
    await r.close()


async def _a(tmp_path: Path, peers: tuple[str, ...]) -> Node:
    node = Node(_config(tmp_path, "a", peers), SECRET)
    await node.start()
    await wait_until(lambda: "b" in node.peers.alive(), 10, "a sees b")
    return node


@pytest.mark.asyncio
async def test_pages_spilled_through_a_relay_are_not_readable_there(
    tmp_path: Path, b: Node, relay: Relay
) -> None:
    # Made before a starts: a second of corpus work in this loop would starve a's heartbeats.
    pages = [p for p in corpus.pages(1200, seed=31) if len(set(p)) > 8][:600]
    a = await _a(tmp_path, (relay.address,))
    try:
        async with Client(a.address, SECRET) as client:
            assert all(await store_all(client, pages))
            await wait_until(
                lambda: a.frontswap.pool.statistics().remote_pages > 0, 10, "a spilled"
            )
            assert await load_all(client, len(pages)) == pages
        remote = a.frontswap.pool.statistics().remote_pages
        assert b.lent.statistics().pool.stored_pages == remote > 0
        captured = bytes(relay.captured)
        assert len(captured) > remote * 100
        # The spilled pages crossed the relay; not 32 bytes of any of them are in the clear.
        leaked = [i for i, p in enumerate(pages) if p[1000:1032] in captured]
        assert leaked == []
    finally:
        await a.close()


@pytest.mark.asyncio
async def test_a_call_injected_by_the_relay_is_refused_and_counted(
    tmp_path: Path, b: Node, relay: Relay
) -> None:
    stats_call = frame([0, 4242, "node.stats", []])
    injected = {"done": False}

    def inject(i: int, f: bytes) -> list[bytes]:
        if i == 3 and not injected["done"]:
            injected["done"] = True
            return [stats_call, f]
        return [f]

    relay.upstream = inject
    a = await _a(tmp_path, (relay.address,))
    try:
        await wait_until(lambda: injected["done"], 5, "the relay injected its call")
        await wait_until(lambda: b.server.statistics().integrity_failures >= 1, 5, "b noticed")
        # b never served the relay's call (a itself never asks for node.stats), closed that
        # connection, and a reconnected with fresh keys.
        assert b.server.method_latencies()["node.stats"].total == 0
        await wait_until(lambda: "b" in a.peers.alive(), 5, "a is with b again")
        assert a.peers.statistics()[0]["node"] == "b"
    finally:
        await a.close()


@pytest.mark.asyncio
async def test_a_relayed_address_is_not_taken_for_a_node_known_directly(
    tmp_path: Path, b: Node, relay: Relay
) -> None:
    pages = corpus.pages(800, seed=32)
    a = await _a(tmp_path, (b.address, relay.address))
    try:
        await wait_until(
            lambda: any(p["alias_of"] == "b" for p in a.peers.statistics()), 5, "the alias seen"
        )
        rows = {p["address"]: p for p in a.peers.statistics()}
        assert rows[b.address]["node"] == "b" and rows[b.address]["alias_of"] is None
        assert rows[relay.address]["alias_of"] == "b"
        # Every holder call goes to b's own address: the relay carries heartbeats only.
        assert a.peers._client("b").address == b.address
        assert [c.node for c in a.peers.candidates()] == ["b"]
        assert [m.node for m in a.members()] == ["a", "b"]
        before = len(relay.captured)
        async with Client(a.address, SECRET) as client:
            assert all(await store_all(client, pages))
            await wait_until(
                lambda: a.frontswap.pool.statistics().remote_pages > 0, 10, "a spilled"
            )
        await asyncio.sleep(0.3)
        relayed = len(relay.captured) - before
        assert relayed < 64 * 1024  # heartbeats, not pages
    finally:
        await a.close()
