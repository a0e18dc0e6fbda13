"""`ramster nbd` and `ramster node --nbd` as users run them: real processes, real clients."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from ramster.testing import corpus
from ramster.testing.cluster import free_port, make_cluster
from tests.conftest import run_ramster
from tests.nbd.conftest import LISTENING
from tests.nbd.tools import need, tool


@asynccontextmanager
async def ramster_nbd(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`ramster nbd ARGS` started; (process, address it listens on). SIGTERM at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ramster",
        "nbd",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError("ramster nbd ended: " + "".join(seen))
                seen.append(line)
                if found := LISTENING.search(line):
                    address = found.group(1)
                    break
        yield proc, address
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()


async def lines_until(proc: asyncio.subprocess.Process, pattern: str) -> str:
    """stderr lines of a running process up to the first that matches."""
    assert proc.stderr is not None
    out = ""
    async with asyncio.timeout(30):
        while not re.search(pattern, out):
            line = (await proc.stderr.readline()).decode()
            if not line:
                break
            out += line
    return out


@pytest.mark.asyncio
async def test_ramster_nbd_serves_until_sigterm(tmp_path: Path) -> None:
    qemu_io, nbdinfo = need("qemu-io"), need("nbdinfo")
    async with ramster_nbd(
        "--listen", "127.0.0.1:0", "--export", "swap0:64MiB", "--export", "b:1GiB:5"
    ) as (proc, address):
        port = address.rsplit(":", 1)[1]
        ran = await tool(nbdinfo, "--list", "--json", f"nbd://127.0.0.1:{port}")
        assert ran.returncode == 0, ran.output
        sizes = {e["export-name"]: e["export-size"] for e in json.loads(ran.output)["exports"]}
        assert sizes == {"swap0": 64 << 20, "b": 1 << 30}
        ran = await tool(
            qemu_io,
            "-f",
            "raw",
            "-c",
            "write -P 0x42 0 256k",
            "-c",
            "read -P 0x42 0 256k",
            f"nbd://127.0.0.1:{port}/swap0",
        )
        assert ran.returncode == 0, ran.output
        proc.send_signal(signal.SIGUSR1)
        stats = await lines_until(proc, "nbd statistics")
        assert "swap0[stored=64 mapped=64 refused=0]" in stats
        proc.send_signal(signal.SIGTERM)
        rest = await lines_until(proc, "nbd statistics")
        assert "stop signal received" in rest
        async with asyncio.timeout(30):
            assert await proc.wait() == 0


def ramster(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ramster(*args, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nbd", "--export", "swap0:1000"], "multiple of 4096"),
        (["nbd", "--export", "swap0:32TiB"], "16TiB"),
        (["nbd", "--export", "bad/name:1GiB"], "export name"),
        (["nbd", "--export", "swap0"], "NAME:SIZE"),
        (["nbd", "--export", "a:1G", "--export", "a:2G"], "distinct"),
        (["nbd", "--export", "a:1G:40"], "area"),
        (["nbd", "--export", "a:1G", "--allow", "300.1.1.1"], "not an address"),
        (["nbd", "--export", "a:1G", "--listen", "nowhere"], "host:port"),
        (["node", "--export", "a:1G"], "--nbd HOST:PORT"),
        (["nbd", "--export", "a:1G:replicated"], "needs a cluster node"),
        (["node", "--nbd", "127.0.0.1:10809", "--export", "a:1G:safe"], "durability"),
    ],
)
def test_bad_nbd_settings_are_refused_clearly(args: list[str], message: str) -> None:
    out = ramster(*args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_help_explains_units() -> None:
    out = ramster("nbd", "--help")
    assert out.returncode == 0
    assert "powers of 1024" in out.stdout and "4 KiB" in out.stdout
    out = ramster("node", "--help")
    assert "--nbd-allow" in out.stdout and "NAME:SIZE" in out.stdout


@pytest.mark.asyncio
async def test_a_node_export_spills_its_pages_to_peers(tmp_path: Path) -> None:
    nbdcopy, qemu_img = need("nbdcopy"), need("qemu-img")
    cluster = make_cluster(tmp_path, 3, local_budget="4MiB", lent_budget="64MiB")
    nbd_port = free_port()
    cluster.nodes[0].args += [f"--nbd=127.0.0.1:{nbd_port}", "--export=swap0:32MiB:local"]
    try:
        await cluster.start_all()
        image = tmp_path / "corpus.img"
        image.write_bytes(b"".join(corpus.generate(6144, seed=11)))  # 24 MiB
        target = f"nbd://127.0.0.1:{nbd_port}/swap0"
        ran = await tool(nbdcopy, str(image), target)
        assert ran.returncode == 0, ran.output
        ran = await tool(qemu_img, "compare", "-f", "raw", "-F", "raw", str(image), target)
        assert ran.returncode == 0, ran.output
        st = await cluster.stats(0)
        assert st["pool"]["remote_pages"] > 0, st["pool"]
        assert st["pool"]["stored_pages"] + st["pool"]["remote_pages"] > 4096
        assert st["nbd"]["bytes_written"] > 8 << 20  # nbdcopy sends zero runs as WRITE_ZEROES
        # Operators see the exports' counters in /metrics too.
        admin = await cluster.admin_url(0)
        async with aiohttp.ClientSession() as http, http.get(f"{admin}/metrics") as r:
            metrics = await r.text()
        assert "ramster_nbd_requests_total{command=" in metrics, metrics[-3000:]
    finally:
        cluster.stop_all()
    log = cluster.nodes[0].log.read_text()
    assert "nbd statistics" in log and "internal_errors=0" in log
