"""An mDNS flood on the cluster's link (network namespaces: the host's own interfaces never see
a packet): thousands of announcements with random names and ports, all of the victims' cluster.
Memory stays bounded, at most max_dials of them are dialled at once, none becomes a peer, and
the cluster keeps working through it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ramster.testing import corpus
from ramster.testing.cluster import Cluster, make_cluster
from ramster.testing.netns import NetnsLab
from tests.conftest import need_netns
from tests.node.test_node import load_all, store_all

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REPO = Path(__file__).parents[2]
FLOOD = 4000
FLOOD_HOST = 3


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    need_netns()
    with NetnsLab(4, net=8) as built:
        yield built


@pytest.fixture
def cluster(lab: NetnsLab, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(
        tmp_path, 3, local_budget="2MiB", lent_budget="32MiB", static_peers=False, lab=lab
    )
    yield c
    c.stop_all()


def _flood(lab: NetnsLab, seconds: float, seed: int) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.chaos.mdns_flood", "--interface",
            lab.addr(FLOOD_HOST), "--count", str(FLOOD), "--seconds", str(seconds),
            "--seed", str(seed)]  # fmt: skip
    return subprocess.Popen(
        lab.exec_args(FLOOD_HOST, argv), cwd=REPO, stdout=subprocess.PIPE, text=True
    )


@pytest.mark.asyncio
async def test_an_mdns_flood_costs_bounded_memory_and_dials(
    cluster: Cluster, lab: NetnsLab
) -> None:
    for i in range(3):
        cluster.start(i)
    await cluster.wait_ready(within=20)
    procs = [psutil.Process(n.proc.pid) for n in cluster.nodes if n.proc is not None]
    pages = corpus.pages(3000, seed=41)
    growth: list[list[int]] = []
    async with cluster.client(0) as client:
        assert all(await store_all(client, pages))
        assert await load_all(client, len(pages)) == pages
        rss_before = [p.memory_info().rss for p in procs]
        for seed in (1, 2):  # two floods of different names: the second must cost no more
            flood = _flood(lab, seconds=5.0, seed=seed)
            try:
                # The cluster keeps working while the flood goes on: pages come back.
                started = time.monotonic()
                while time.monotonic() - started < 4.0:
                    assert await load_all(client, len(pages)) == pages
                out, _ = flood.communicate(timeout=60)
            finally:
                if flood.poll() is None:
                    flood.kill()
                    flood.wait()
            assert f"sent {FLOOD}" in out
            growth.append([p.memory_info().rss - b for p, b in zip(procs, rss_before, strict=True)])
        more = corpus.pages(200, seed=42)
        assert all(await store_all(client, more, area=1))
        assert await load_all(client, len(more), area=1) == more
    stats = [await cluster.stats(i) for i in range(3)]
    for i, st in enumerate(stats):
        d = st["discovery"]
        mdns = d["mdns"]
        # The node saw the flood...
        assert mdns["announcements"] > FLOOD // 2, (i, d)
        # ...dialled at most max_dials of its hints at once, kept bounded tables...
        assert d["most_dialling"] <= d["max_dials"] == 4, (i, d)
        assert d["hints_pending"] <= 64 and mdns["announcers"] <= 64, (i, d)
        assert mdns["queued"] <= 256 + 4, (i, d)
        # ...and took none of the fakes for a peer.
        assert {p["node"] for p in st["peers"] if p["node"]} == {f"n{j}" for j in range(3)} - {
            f"n{i}"
        }, st["peers"]
        assert {p["node"] for p in st["peers"] if p["alive"]} == {
            f"n{j}" for j in range(3) if j != i
        }
    # Bounded: a few MiB for the first flood (allocator high-water), the second adds ~nothing.
    first, second = growth
    assert max(second) < 8 << 20, growth
    assert max(b - a for a, b in zip(first, second, strict=True)) < 2 << 20, growth
    print(f"mDNS floods of {FLOOD}: RSS growth {[[g >> 10 for g in r] for r in growth]} KiB; "
          f"dials {[s['discovery']['dials'] for s in stats]}")  # fmt: skip
