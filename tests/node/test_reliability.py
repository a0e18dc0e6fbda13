"""Losing machines costs a repair, not availability, and no path loses an acknowledged page:
degraded mode, a paused holder, a holder that reclaimed an owner, a second process under a
live node id, hostile heartbeat answers. Real node processes on loopback (and one in-process
node facing a fake peer)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Identity, RpcConfig, RpcServer, Secret
from ramster.testing import corpus
from ramster.testing.cluster import free_port
from ramster.testing.wait import wait_until
from tests.conftest import ClusterFactory
from tests.node.test_node import load_all, store_all


async def store_range(client: Any, pages: list[bytes], first: int, batch: int = 128) -> int:
    """Store pages at offsets first.. ; how many were refused."""
    refused = 0
    for i in range(0, len(pages), batch):
        chunk = pages[i : i + batch]
        ok = await client.store_many(0, list(range(first + i, first + i + len(chunk))), chunk)
        refused += ok.count(False)
    return refused


@pytest.mark.asyncio
async def test_a_dead_holder_costs_a_repair_not_a_refused_store(
    cluster_factory: ClusterFactory,
) -> None:
    """3 nodes, R=2: with one node dead only one holder is left; stores keep being accepted
    (one copy each, counted under-replicated) and get their second copy when it returns."""
    c = cluster_factory(3, local_budget="2MiB", lent_budget="48MiB")
    await c.start_all()
    before = corpus.pages(1500, seed=41)
    after = corpus.pages(3000, seed=42)
    async with c.client(0) as client:
        assert all(await store_all(client, before))
        c.kill(2)
        await c.wait_stats(0, lambda st: st["gone_peers"] == ["n2"])
        assert await store_range(client, after, len(before)) == 0  # nothing refused
        st = await c.stats(0)
        assert st["under_replicated_pages"] > 0
        assert st["remote"]["under_replicated_stores"] > 0
        assert await load_all(client, len(before) + len(after)) == before + after
        c.start(2)
        await c.wait_ready()
        st = await c.wait_stats(0, lambda st: st["under_replicated_pages"] == 0, within=30)
        assert st["under_replicated_pages"] == 0
        held, remote = await c.settle_copies(0, [1, 2])
        assert held == 2 * remote  # every spilled page has its two copies again
        c.kill(1)  # and now either holder alone suffices
        await c.wait_stats(0, lambda st: "n1" in st["gone_peers"])
        assert await load_all(client, len(before) + len(after)) == before + after


@pytest.mark.asyncio
async def test_a_paused_holder_never_holds_up_a_writer(cluster_factory: ClusterFactory) -> None:
    """A holder stopped with SIGSTOP: overwrites go on without waiting out its timeout."""
    c = cluster_factory(4, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    pages = corpus.pages(2000, seed=43)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        proc = c.nodes[2].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        try:
            worst = 0.0
            for rnd in range(4):
                for i in range(0, len(pages), 128):
                    t0 = time.perf_counter()
                    chunk = pages[i : i + 128][::-1] if rnd % 2 == 0 else pages[i : i + 128]
                    ok = await client.store_many(0, list(range(i, i + len(chunk))), chunk)
                    worst = max(worst, time.perf_counter() - t0)
                    assert all(ok)
            # Before, every overwrite batch waited for its drops on the paused holder (2.5 s).
            assert worst < 1.0, f"a batch took {worst:.2f} s"
        finally:
            proc.send_signal(signal.SIGCONT)
        assert await load_all(client, len(pages)) == pages


@pytest.mark.asyncio
async def test_a_holder_that_reclaimed_a_live_owner_is_repaired_around(
    cluster_factory: ClusterFactory,
) -> None:
    """A holder paused longer than the owner grace reclaims the owner's pages when it runs
    again; the owner learns it from the next heartbeat and gives those pages new copies."""
    c = cluster_factory(3, local_budget="2MiB", lent_budget="48MiB", extra=["--owner-grace=3"])
    await c.start_all()
    pages = corpus.pages(2000, seed=44)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        held_before = (await c.stats(1))["lent"]["stored_pages"]
        assert held_before > 0
        proc = c.nodes[1].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(4.0)  # longer than the grace: n1 will find n0 silent
        proc.send_signal(signal.SIGCONT)
        st = await c.wait_stats(0, lambda st: st["remote"]["holders_reclaimed"] >= 1, within=20)
        assert st["remote"]["holders_reclaimed"] >= 1, st["remote"]
        assert (await c.stats(1))["lent"]["reclaimed_pages"] >= held_before
        st = await c.wait_stats(0, lambda st: st["under_replicated_pages"] == 0, within=30)
        assert st["under_replicated_pages"] == 0
        held, remote = await c.settle_copies(0, [1, 2])
        assert held == 2 * remote
        c.kill(2)  # n2 gone: n1's new copies must carry everything
        await c.wait_stats(0, lambda st: "n2" in st["gone_peers"])
        assert await load_all(client, len(pages)) == pages


@pytest.mark.asyncio
async def test_a_second_process_under_a_live_node_id_stops_and_harms_nothing(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    c = cluster_factory(3, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    pages = corpus.pages(1500, seed=45)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        held = (await c.stats(1))["lent"]["stored_pages"]
        twin = c.nodes[1]
        args = [a for a in twin.args if not a.startswith(("--listen=", "--state-dir=", "--admin="))]
        port = free_port()
        log = tmp_path / "twin.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ramster",
                "node",
                *args,
                f"--listen=127.0.0.1:{port}",
                f"--state-dir={tmp_path / 'twin'}",
                "--admin=off",
                f"--peer={twin.address}",
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            async with asyncio.timeout(30):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = log.read_text()
        assert code == 2, text[-2000:]
        assert "in use" in text and "Traceback" not in text
        st1 = await c.stats(1)
        assert st1["lent"]["stored_pages"] == held  # the live n1 kept every copy
        assert await load_all(client, len(pages)) == pages


# -- a node facing a hostile peer's heartbeat answers ------------------------------------------

GOOD = {
    "node": "peer",
    "incarnation": "00000001-x",
    "lent_free": 1 << 20,
    "lent_budget": 1 << 20,
    "coordinator": "peer",
    "term": 3,
}


NODE_SECRET = Secret(b"reliability-test-secret-0123456789")


@pytest_asyncio.fixture
async def node_with_fake_peer(tmp_path: Path) -> AsyncIterator[tuple[Node, dict[str, Any]]]:
    answer: dict[str, Any] = {}
    fake = RpcServer(
        NODE_SECRET,
        RpcConfig(),
        host="127.0.0.1",
        port=0,
        identity=Identity.node(str(GOOD["node"]), str(GOOD["incarnation"])),
    )
    fake.register("node.hello", lambda params: answer.get("value"))
    await fake.start()
    node = Node(
        NodeConfig(
            node_id="target",
            listen="127.0.0.1:0",
            state_dir=tmp_path,
            peers=(f"127.0.0.1:{fake.port}",),
            heartbeat=0.1,
            dead_after=1.0,
            admin_listen=None,
        ),
        NODE_SECRET,
    )
    await node.start()
    yield node, answer
    await node.close()
    await fake.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad",
    [
        {"term": (1 << 64) - 1},
        {"term": "7"},
        {"lent_free": -1},
        {"inventory": {"x": "many"}},
        {"inventory": {f"h{i}": 1 for i in range(5000)}},
        {"node": ""},
        {"orders_done": [1, 2]},
        {"draining": "yes"},
    ],
    ids=[
        "term-2^64",
        "term-text",
        "negative",
        "inventory-text",
        "inventory-huge",
        "no-id",
        "orders",
        "draining",
    ],
)
async def test_a_malformed_heartbeat_answer_is_dropped_never_fatal(
    node_with_fake_peer: tuple[Node, dict[str, Any]], bad: dict[str, Any]
) -> None:
    node, answer = node_with_fake_peer
    answer["value"] = {**GOOD, **bad}
    await wait_until(lambda: node.peers.bad_answers >= 3, 5, "bad answers counted")
    assert node.ready  # the node's tasks are all still running
    assert node.election.view.coordinator == "target"
    answer["value"] = GOOD
    await wait_until(lambda: "peer" in node.peers.alive(), 5, "the peer, well-behaved now")
    await wait_until(lambda: node.election.view == type(node.election.view)("peer", 3), 5, "view")
    assert node.ready


@pytest.mark.asyncio
async def test_an_absurd_term_jump_does_not_drag_the_cluster(
    node_with_fake_peer: tuple[Node, dict[str, Any]],
) -> None:
    node, answer = node_with_fake_peer
    answer["value"] = {**GOOD, "coordinator": "zz", "term": 1 << 40}
    await wait_until(lambda: node.election.refused_views > 0, 5, "the view refused")
    assert node.election.view.term < 1 << 20
    assert node.ready
