"""A restarted export server serves only once it heard every node that may hold copies (never
zeros, never a reused term), and a node resumes the exports it served when it stopped, wherever
they came from; the old server's command line does not take a moved export back."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ramster.testing.cluster import Cluster, free_port, make_cluster
from ramster.testing.wait import wait_until
from tests.nbd.test_replicated import _qemu_io, _ramster, _serving
from tests.nbd.tools import tool

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def three(tmp_path: Path) -> AsyncIterator[tuple[Cluster, int, int]]:
    """n0 serves swap0 (replicated, R=2); n1 listens for NBD with no export; n2 holds."""
    port, port1 = free_port(), free_port()
    c = make_cluster(tmp_path, 3, local_budget="16MiB", lent_budget="64MiB")
    c.nodes[0].args += [f"--nbd=127.0.0.1:{port}", "--export=swap0:8MiB", "--no-swap-safety"]
    c.nodes[1].args += [f"--nbd=127.0.0.1:{port1}", "--no-swap-safety"]
    for i in range(3):
        c.start(i)
    try:
        await c.wait_ready()
        await _serving(f"nbd://127.0.0.1:{port}/swap0")
        yield c, port, port1
    finally:
        for node in c.nodes:
            if node.proc is not None and node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)
        c.stop_all()


async def test_a_restarted_server_waits_for_paused_holders_and_never_serves_zeros(
    three: tuple[Cluster, int, int],
) -> None:
    c, port, _ = three
    url = f"nbd://127.0.0.1:{port}/swap0"
    out = await _qemu_io(url, "write -P 0x3c 0 1M", "write -P 0x4d 4M 512k")
    assert out.count("wrote") == 2, out
    paused = [c.nodes[i].proc for i in (1, 2)]
    for proc in paused:
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)  # alive, every copy intact, silent
    try:
        c.kill(0)
        c.start(0)
        await asyncio.sleep(4.0)  # well past dead_after (1.5 s): the holders look dead
        out = await _qemu_io(url, "read -P 0x3c 0 4k")
        # Not served: the connection is refused (never zeros, never a blank manifest).
        assert "read 4096/4096" not in out, out
        assert "verification failed" not in out, out
        # While it waits, a stop signal still stops it (and it comes back waiting again).
        waiting = c.nodes[0].proc
        assert waiting is not None
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(15) == 0
        c.start(0)
    finally:
        for proc in paused:
            assert proc is not None
            os.kill(proc.pid, signal.SIGCONT)
    await _serving(url, within=20)
    out = await _qemu_io(url, "read -P 0x3c 0 1M", "read -P 0x4d 4M 512k", "read -P 0 2M 1M")
    assert "verification failed" not in out and out.count("read") == 3, out
    assert "Input/output error" not in out, out
    log = c.nodes[0].log.read_text()
    assert "export swap0: serving (term 2)" in log, log[-3000:]  # never term 1 again
    assert "not served yet" in log or "cannot hear" in log, log[-3000:]


async def _logged(c: Cluster, i: int, text: str) -> bool:
    return text in c.nodes[i].log.read_text()


async def _move(c: Cluster, via: int, name: str, to: str) -> None:
    ran = await tool(
        sys.executable,
        "-m",
        "ramster",
        "export",
        "move",
        name,
        "--to",
        to,
        "--json",
        "--admin",
        await c.admin_url(via),
        "--token-file",
        str(c.tmp / "admin.token"),
        within=120,
    )
    assert ran.returncode == 0, ran.output


async def test_a_node_resumes_an_export_moved_to_it_and_the_old_server_does_not_fight(
    three: tuple[Cluster, int, int],
) -> None:
    c, port, port1 = three
    url0, url1 = f"nbd://127.0.0.1:{port}/swap0", f"nbd://127.0.0.1:{port1}/swap0"
    assert "wrote" in await _qemu_io(url0, "write -P 0x61 0 1M")
    await _move(c, 2, "swap0", "n1")
    assert "wrote" in await _qemu_io(url1, "write -P 0x62 1M 1M")
    c.kill(1)
    c.start(1)  # its command line names no export: it resumes swap0 all the same
    await _serving(url1, within=20)
    out = await _qemu_io(url1, "read -P 0x61 0 1M", "read -P 0x62 1M 1M")
    assert "verification failed" not in out and out.count("read 1048576/1048576") == 2, out
    assert "export swap0: serving (term 3)" in c.nodes[1].log.read_text()
    # n0's command line names swap0; restarted, it does not take the export back.
    c.kill(0)
    c.start(0)
    await c.wait_ready()
    await wait_until(lambda: _logged(c, 0, "not served here"), 20, "n0 leaves swap0 to n1")
    out = await _qemu_io(url0, "read 0 4k")
    assert "read 4096/4096" not in out, out
    out = await _qemu_io(url1, "read -P 0x61 0 1M")
    assert "verification failed" not in out and "read 1048576/1048576" in out, out


async def test_a_forced_move_off_a_dead_server_on_two_nodes_keeps_every_copy(
    tmp_path: Path,
) -> None:
    """n0 serves, n1 holds the only copies. n0 dies: a move to n1 must be forced (n0 may hold
    newer state); n1 then cannot store its own copies elsewhere, so it keeps them and serves
    them itself (up to HELD_PAGES: the 1 MiB written), never zeros and never an I/O error for a
    block it holds; moved back to n0 once it returns, all is there."""
    port, port1 = free_port(), free_port()
    c = make_cluster(tmp_path, 2, local_budget="16MiB", lent_budget="64MiB")
    c.nodes[0].args += [f"--nbd=127.0.0.1:{port}", "--export=swap0:8MiB", "--no-swap-safety"]
    c.nodes[1].args += [f"--nbd=127.0.0.1:{port1}", "--no-swap-safety"]
    url0, url1 = f"nbd://127.0.0.1:{port}/swap0", f"nbd://127.0.0.1:{port1}/swap0"
    for i in range(2):
        c.start(i)
    try:
        await c.wait_ready()
        await _serving(url0)
        assert "wrote" in await _qemu_io(url0, "write -P 0x71 0 1M")
        c.kill(0)
        refused = await _ramster(c, 1, "export", "move", "swap0", "--to", "n1", ok=False)
        assert "cannot hear n0" in refused, refused
        await _ramster(c, 1, "export", "move", "swap0", "--to", "n1", "--force")
        # Its manifest too is held only on n1: read from there, so which blocks were written
        # is known, and the written ones are served from the copies n1 keeps.
        out = await _qemu_io(url1, "read -P 0x71 0 1M", "read -P 0 4M 4k")
        assert "verification failed" not in out and "Input/output error" not in out, out
        assert "read 1048576/1048576" in out, out
        c.start(0)  # its command line names swap0, moved away: it does not take it back
        await c.wait_ready()
        await wait_until(lambda: _logged(c, 0, "not served here"), 20, "n0 leaves swap0 to n1")
        await _ramster(c, 1, "export", "move", "swap0", "--to", "n0")
        out = await _qemu_io(url0, "read -P 0x71 0 1M")
        assert "verification failed" not in out and "read 1048576/1048576" in out, out
    finally:
        c.stop_all()
