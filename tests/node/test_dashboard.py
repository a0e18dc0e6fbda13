"""The dashboard in a real headless Chromium against a 3-node cluster: what it renders as nodes
join, die and come back. Screenshots are kept in $RAMSTER_ARTIFACTS (default test-artifacts/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ramster.testing import corpus
from tests.admin.cdp import Browser
from tests.conftest import ClusterFactory, need_tool
from tests.node.test_node import store_all

ARTIFACTS = Path(os.environ.get("RAMSTER_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
ROWS = "[...document.querySelectorAll('#members tbody tr')]"


def states(expected: dict[str, str]) -> str:
    """A JS expression true when the members table shows exactly these states."""
    want = ",".join(f"{n}={s}" for n, s in sorted(expected.items()))
    return f"{ROWS}.map(r => r.dataset.node + '=' + r.dataset.state).join(',') === '{want}'"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_dashboard_follows_the_cluster(cluster_factory: ClusterFactory) -> None:
    chromium = need_tool("chromium", "apt-get install chromium")
    c = cluster_factory(3, local_budget="1MiB", lent_budget="16MiB")
    await c.start_all()
    async with c.client(0) as client:
        assert all(await store_all(client, corpus.pages(1500, seed=21)))
        await client.init(3, "ephemeral")  # the lent bars show their ephemeral share apart
        pages = corpus.pages(1500, seed=22)
        await client.store_many(3, list(range(1500)), pages)
    admin = await c.admin_url(0)
    async with Browser(chromium) as page:
        await page.goto(f"{admin}/")
        await page.wait_for(states({"n0": "alive", "n1": "alive", "n2": "alive"}))
        # Capacity bars, the coordinator, pages per owner and holder, live events.
        assert await page.evaluate(f"{ROWS}.find(r => r.dataset.node === 'n0').dataset.role") == (
            "coordinator"
        )
        await page.wait_for("document.querySelector('#matrix tr[data-owner=\"n0\"]') !== null")
        bars = await page.evaluate(
            "[...document.querySelectorAll('.bar.lent > span:not(.ephemeral)')]"
            ".map(s => s.style.width)"
        )
        assert len(bars) == 3 and any(w not in {"0%", "0.0%"} for w in bars)
        await page.wait_for(
            "[...document.querySelectorAll('.bar.lent > span.ephemeral')]"
            ".some(s => !['0%', '0.0%', ''].includes(s.style.width))"
        )
        assert "coordinator n0" in await page.evaluate(
            "document.getElementById('summary').textContent"
        )
        await page.wait_for("document.querySelectorAll('#events li').length > 0")
        await page.wait_for("document.querySelector('[data-rate=\"loads\"]') !== null")
        await page.screenshot(ARTIFACTS / "dashboard-3-nodes.png")

        c.kill(2)
        await page.wait_for(states({"n0": "alive", "n1": "alive", "n2": "dead"}))
        dead_event = "document.querySelector('#events li[data-kind=\"peer-dead\"]') !== null"
        await page.wait_for(dead_event)
        await page.screenshot(ARTIFACTS / "dashboard-node-dead.png")

        c.start(2)
        await page.wait_for(states({"n0": "alive", "n1": "alive", "n2": "alive"}), within=30)
        await page.wait_for(
            "document.getElementById('summary').textContent.includes('0 pages under-replicated')",
            within=30,
        )
        await page.screenshot(ARTIFACTS / "dashboard-recovered.png")
        assert page.console == []  # no JavaScript errors
    assert (ARTIFACTS / "dashboard-recovered.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_dashboard_shows_the_exports_and_their_rebuild(
    cluster_factory: ClusterFactory,
) -> None:
    from ramster.testing.cluster import free_port

    chromium = need_tool("chromium", "apt-get install chromium")
    c = cluster_factory(3, local_budget="4MiB", lent_budget="16MiB")
    port = free_port()
    c.nodes[0].args += [f"--nbd=127.0.0.1:{port}", "--export=swap0:16MiB", "--export=big:64MiB"]
    c.nodes[0].args += ["--no-swap-safety"]
    await c.start_all()
    await c.wait_ready()
    row = "document.querySelector('#exports tr[data-export=\"swap0\"]')"
    async with Browser(chromium) as page:
        await page.goto(f"{await c.admin_url(0)}/")
        await page.wait_for(f"{row} !== null && {row}.textContent.includes('serving')")
        text = await page.evaluate(f"{row}.textContent")
        assert "n0" in text and "replicated" in text and "pages" in text, text
        # Two holders lending 16 MiB each, R=2: the export just fits.
        assert "16.0 MiB / 16.0 MiB" in text and "does not fit" not in text, text
        big = "document.querySelector('#exports tr[data-export=\"big\"]')"
        await page.wait_for(f"{big} !== null && {big}.textContent.includes('does not fit')")
        assert "64.0 MiB / 16.0 MiB" in await page.evaluate(f"{big}.textContent")
        await page.wait_for(
            "document.querySelector('#events li[data-kind=\"export-oversized\"]') !== null"
        )
        await page.screenshot(ARTIFACTS / "dashboard-exports.png")
