"""Discovered addresses are hints: at most max_dials are dialled at once, one that does not
complete a handshake never joins the peer table, and a real node among them does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Secret
from ramster.testing.wait import wait_until

SECRET = Secret(b"hints-test-secret-0123456789")


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # accept, never answer: a dial to it hangs until its timeout
    writer.close()


@pytest.mark.asyncio
async def test_hints_are_dialled_a_few_at_a_time(tmp_path: Path) -> None:
    silent = [await asyncio.start_server(_silent, "127.0.0.1", 0) for _ in range(40)]

    def config(name: str) -> NodeConfig:
        return NodeConfig(
            node_id=name,
            listen="127.0.0.1:0",
            state_dir=tmp_path / name,
            admin_listen=None,
            heartbeat=0.2,
            dead_after=1.0,
            max_dials=3,
        )

    a, b = Node(config("a"), SECRET), Node(config("b"), SECRET)
    await a.start()
    await b.start()
    try:
        for server in silent:
            a._found(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        a._found(b.address)  # one real node among junk
        await wait_until(lambda: "b" in a.peers.alive(), 15, "the real hint joined")
        await wait_until(lambda: a.peers.hints.statistics().pending == 0, 15, "hints drained")
        d = a.peers.discovery_statistics()
        assert 0 < d["most_dialling"] <= 3
        assert d["dials"] == 41
        assert [p["node"] for p in a.peers.statistics()] == ["b"]
        # A failed hint is not dialled again at once.
        assert not a.peers.add_peer(f"127.0.0.1:{silent[0].sockets[0].getsockname()[1]}")
    finally:
        await a.close()
        await b.close()
        for server in silent:
            server.close()
