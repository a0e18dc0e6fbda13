"""The command line against real nodes: store, load, invalidate, stats, bench, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ramster.testing.cluster import SECRET, free_port
from tests.conftest import ClusterFactory, run_ramster_bytes


def ramster(
    *args: str, secret: Path | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    if secret is not None:
        env["RAMSTER_SECRET_FILE"] = str(secret)
    return run_ramster_bytes(*args, env=env, stdin=stdin)


@pytest.mark.asyncio
async def test_store_load_invalidate_stats_bench(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    c = cluster_factory(3, local_budget="1MiB", lent_budget="16MiB")
    await c.start_all()
    secret = c.tmp / "secret"
    node = ["--node", c.nodes[0].address]
    page = bytes(range(256)) * 16
    (tmp_path / "page").write_bytes(page)
    out = ramster("store", *node, "0", "5", str(tmp_path / "page"), secret=secret)
    assert out.returncode == 0, out.stderr
    out = ramster("load", *node, "0", "5", secret=secret)
    assert out.returncode == 0
    assert out.stdout == page
    assert ramster("invalidate", *node, "0", "5", secret=secret).returncode == 0
    out = ramster("load", *node, "0", "5", secret=secret)
    assert out.returncode == 1
    assert b"not stored" in out.stderr
    out = ramster("bench", *node, "--mib", "4", secret=secret)
    assert out.returncode == 0, out.stderr
    assert b"0 wrong, 0 missing" in out.stdout
    assert b"node CPU per stored page" in out.stdout
    # The progress line's store rate is the table's: both time the stores alone.
    table_rate = re.search(rb"\nstore +([\d,]+) pages/s", out.stdout)
    line_rate = re.search(rb"store: 100% ([\d,]+) pages/s", out.stderr)
    assert table_rate is not None and line_rate is not None, (out.stdout, out.stderr)
    assert table_rate.group(1) == line_rate.group(1)
    out = ramster("stats", *node, "--json", secret=secret)
    stats = json.loads(out.stdout)
    assert stats["node"] == "n0"
    assert stats["pool"]["remote_pages"] > 0
    assert {p["node"] for p in stats["peers"]} == {"n1", "n2"}
    out = ramster("stats", *node, secret=secret)
    assert b"remote pages" in out.stdout


@pytest.mark.asyncio
async def test_bench_ephemeral_fills_past_the_cluster_and_shows_evictions(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(2, local_budget="2MiB", lent_budget="2MiB")
    await c.start_all()
    await c.wait_ready()
    out = ramster("bench", "--node", c.nodes[0].address, "--ephemeral", secret=c.tmp / "secret")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    fields = dict(re.findall(r"^(\S.*?)  +(\S.*)$", text, re.M))
    assert fields["wrong bytes"] == "0"
    assert int(fields["misses"].replace(",", "")) > 0
    assert int(fields["hits (verified)"].split()[0].replace(",", "")) > 0
    assert int(fields["evicted here"].split()[0].replace(",", "")) > 0
    assert int(fields["spilled to peers (one copy)"].split()[0].replace(",", "")) > 0


def test_unreachable_node_is_one_clear_line(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    out = ramster("stats", "--node", f"127.0.0.1:{free_port()}", secret=secret)
    assert out.returncode == 3
    assert out.stderr.count(b"\n") == 1
    assert b"cannot reach the node" in out.stderr
    assert b"Traceback" not in out.stderr


def test_missing_secret_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMSTER_")}
    out = subprocess.run(
        [sys.executable, "-m", "ramster", "stats"],
        capture_output=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert out.returncode == 2
    assert b"RAMSTER_CLUSTER_SECRET" in out.stderr


def test_node_help_explains_units() -> None:
    out = ramster("node", "--help")
    text = out.stdout.decode()
    for word in ("--local-budget", "--lent-budget", "--replicas", "--peer", "MiB", "seconds"):
        assert word in text


@pytest.mark.asyncio
async def test_drain_moves_everything_off_a_node(cluster_factory: ClusterFactory) -> None:
    from ramster.testing import corpus
    from tests.node.test_node import load_all, store_all

    c = cluster_factory(4, local_budget="2MiB", lent_budget="32MiB")
    await c.start_all()
    pages = corpus.pages(3000, seed=17)
    async with c.client(0) as client:
        assert all(await store_all(client, pages))
        assert (await c.stats(1))["lent"]["stored_pages"] > 0
        admin = await c.admin_url(0)  # any node's admin API can drain any member
        out = ramster("drain", "n1", "--admin", admin, "--timeout", "60")
        assert out.returncode == 2  # no token: refused
        assert b"unauthorized" in out.stderr
        token = ["--token-file", str(c.tmp / "admin.token")]
        out = ramster("drain", "n1", "--admin", admin, *token, "--timeout", "60")
        assert out.returncode == 0, out.stderr
        assert b"holds nothing" in out.stdout
        assert (await c.stats(1))["lent"]["stored_pages"] == 0
        held, remote = await c.settle_copies(0, [2, 3])
        assert held == 2 * remote
        assert await load_all(client, len(pages)) == pages
