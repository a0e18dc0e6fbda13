"""Replicated exports on a cluster of real node processes: the export outlives the process that
serves it (kill -9 and restart), a stale server is fenced after a move, and blocks whose every
copy is gone read as I/O errors, never as zeros or stale bytes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ramster.testing.cluster import Cluster, free_port, make_cluster
from ramster.testing.wait import wait_until
from tests.nbd.tools import fio_json, need, tool

pytestmark = pytest.mark.asyncio


async def _qemu_io(url: str, *commands: str) -> str:
    args = [need("qemu-io"), "-f", "raw"]
    for command in commands:
        args += ["-c", command]
    return (await tool(*args, url)).output


async def _serving(url: str, within: float = 20.0) -> float:
    start = time.monotonic()

    async def up() -> bool:
        out = await _qemu_io(url, "read 0 4k")
        return "read 4096/4096" in out or "Input/output error" in out  # served, block lost

    await wait_until(up, within, f"{url} serving")
    return time.monotonic() - start


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Cluster, str, int]]:
    """Four nodes, R=2: n0 serves swap0 (replicated), n1 listens for NBD with no export of its
    own (it can adopt one); the third item is n1's NBD port."""
    port, port1 = free_port(), free_port()
    c = make_cluster(tmp_path, 4, local_budget="16MiB", lent_budget="128MiB")
    c.nodes[0].args += [f"--nbd=127.0.0.1:{port}", "--export=swap0:32MiB", "--no-swap-safety"]
    c.nodes[1].args += [f"--nbd=127.0.0.1:{port1}", "--no-swap-safety"]
    for i in range(4):
        c.start(i)
    try:
        await c.wait_ready()
        url = f"nbd://127.0.0.1:{port}/swap0"
        await _serving(url)
        yield c, url, port1
    finally:
        c.stop_all()


async def test_kill_9_the_server_and_every_acknowledged_block_survives(
    cluster: tuple[Cluster, str, int],
) -> None:
    c, url, _ = cluster
    fio = [
        need("fio"),
        "--name=verify",
        "--ioengine=nbd",
        f"--uri={url}",
        "--bs=4k",
        "--iodepth=8",
        "--size=8M",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--verify_state_save=0",
        "--randseed=7",
        "--output-format=json",
    ]
    wrote = await tool(*fio, "--rw=randwrite", "--do_verify=0")
    assert wrote.returncode == 0, wrote.output
    out = await _qemu_io(url, "write -P 0x5a 12M 2M", "write -z 12M 1M")
    assert "wrote 2097152/2097152" in out and "wrote 1048576/1048576" in out, out
    c.kill(0)
    c.start(0)
    stalled = await _serving(url)
    assert stalled < 10
    checked = await tool(*fio, "--rw=randwrite", "--verify_only")
    assert checked.returncode == 0, checked.output
    (job,) = fio_json(checked.output)["jobs"]
    assert job["error"] == 0
    out = await _qemu_io(url, "read -P 0 12M 1M", "read -P 0x5a 13M 1M", "read -P 0 20M 1M")
    assert "verification failed" not in out and out.count("read 1048576/1048576") == 3, out
    log = c.nodes[0].log.read_text()
    assert "export swap0: serving (term 2)" in log, log[-3000:]


async def test_a_stale_server_is_fenced_after_the_export_moves(
    cluster: tuple[Cluster, str, int],
) -> None:
    c, url, port1 = cluster
    assert "wrote" in await _qemu_io(url, "write -P 0x11 0 1M")
    old = c.nodes[0].proc
    assert old is not None
    os.kill(old.pid, signal.SIGSTOP)
    try:
        # Asked of a third node's admin API, as an operator would: n2 tells n1 to adopt. n1
        # cannot hear the current server (paused): refused unless the operator forces it.
        refused = await _ramster(c, 2, "export", "move", "swap0", "--to", "n1", ok=False)
        assert "cannot hear n0" in refused and "--force" in refused, refused
        moved = await _ramster(c, 2, "export", "move", "swap0", "--to", "n1", "--force", "--json")
        assert json.loads(moved)["term"] == 2 and json.loads(moved)["server"] == "n1"
        url1 = f"nbd://127.0.0.1:{port1}/swap0"
        out = await _qemu_io(url1, "read -P 0x11 0 1M", "write -P 0x22 0 1M")
        assert "verification failed" not in out and "wrote 1048576/1048576" in out, out
    finally:
        os.kill(old.pid, signal.SIGCONT)
    # The old server, resumed, hears its peers again and tries to write: the holders refuse
    # it (it has not noticed the move yet: its next keepalive would tell it), nothing lands.

    async def hears_peers() -> bool:
        st = await c.stats(0)
        return {"n1", "n2", "n3"} <= {p["node"] for p in st["peers"] if p["alive"]}

    await wait_until(hears_peers, 10, "n0 hears its peers again")
    out = await _qemu_io(url, "write -P 0x33 0 1M")
    assert "wrote 1048576/1048576" not in out, out
    out = await _qemu_io(f"nbd://127.0.0.1:{port1}/swap0", "read -P 0x22 0 1M")
    assert "verification failed" not in out and "read 1048576/1048576" in out, out
    fenced = 0
    for i in (2, 3):
        fenced += (await c.stats(i))["lent"]["fenced_requests"]
    assert fenced > 0
    listed = json.loads(await _ramster(c, 3, "export", "list", "--json"))
    assert listed["servers"]["swap0"] == {"server": "n1", "term": 2}
    assert "fenced" in c.nodes[0].log.read_text()
    # Deleted for good: the server is fenced, every copy dropped.
    deleted = json.loads(await _ramster(c, 0, "export", "delete", "swap0", "--json"))
    assert deleted["dropped_pages"] > 0
    for i in range(4):
        assert not [e for e in (await c.stats(i))["held_exports"] if e["pages_here"]]


async def _ramster(c: Cluster, via: int, *args: str, ok: bool = True) -> str:
    """Run the ramster CLI against node `via`'s admin API; its output (it must succeed, or
    fail when not `ok`)."""
    ran = await tool(
        sys.executable,
        "-m",
        "ramster",
        *args,
        "--admin",
        await c.admin_url(via),
        "--token-file",
        str(c.tmp / "admin.token"),
        within=180,
    )
    assert (ran.returncode == 0) == ok, ran.output
    return ran.output


async def test_blocks_whose_copies_are_all_gone_read_as_io_errors(
    cluster: tuple[Cluster, str, int],
) -> None:
    c, url, _ = cluster
    # 64 writes, one batch each: each batch's copies go to one pair of the three holders.
    chunks = [f"{i * 128}k" for i in range(64)]
    out = await _qemu_io(url, *(f"write -P 0x77 {at} 128k" for at in chunks))
    assert out.count("wrote 131072/131072") == 64, out
    c.kill(1)
    c.kill(2)  # with R=2, the chunks whose both copies were on n1 and n2 are gone
    c.kill(0)
    # n1 and n2 come back empty: the restarted server hears every node that may hold copies
    # (a silent one might hold the newest), so it serves once they answer, with nothing.
    c.start(1)
    c.start(2)
    c.start(0)
    await _serving(url)
    out = await _qemu_io(url, *(f"read -P 0x77 {at} 128k" for at in chunks))
    assert "verification failed" not in out, out  # never zeros, never other bytes
    good = out.count("read 131072/131072")
    bad = out.count("Input/output error")
    assert good + bad == 64 and bad > 0 and good > 0, out
    st = await c.stats(0)
    (export,) = st["exports"]
    assert export["pages_lost"] > 0
