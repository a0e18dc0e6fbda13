"""Benchmark: pages spilled to peers' RAM and loaded back, against a local-only pool and Redis.

    python benchmarks/spill.py [--quick]

Three local node processes (loopback). A client stores a corpus through node A, whose local
pool holds about a quarter of it (compressed), so the rest spills to B and C (R=2); then it
loads every page back in random order, in batches, and verifies every byte. In the same run:
the local-only pool (LocalFrontswap in this process, as in benchmarks/pagestore.py) over the
same corpus, and `redis-benchmark -d 4096 -P 64` GET against a redis-server on a free loopback
port (persistence off). The last line is one JSON object with the figures issue 4 names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ramster.cli.report import human_bytes, table
from ramster.cli.up import start_nodes, stop_nodes, wait_ready
from ramster.client import Client
from ramster.frontswap import LocalFrontswap
from ramster.pagestore import PoolConfig
from ramster.rpc import load_secret
from ramster.testing import corpus
from ramster.testing.cpu import cpu_of

BATCH = 256
PAGE = 4096
DEPTH = 4
"""Calls in flight from the client, like a block device's queue depth (redis uses -P 64)."""


async def in_flight(starts: list[int], call: Callable[[int], Awaitable[int]]) -> list[int]:
    """Run call(start) for every start, DEPTH calls outstanding at a time."""
    results: list[int] = []
    queue = list(reversed(starts))

    async def worker() -> None:
        while queue:
            results.append(await call(queue.pop()))

    async with asyncio.TaskGroup() as tg:
        for _ in range(DEPTH):
            tg.create_task(worker())
    return results


def free_base_port(count: int) -> int:
    """A port p such that p..p+count-1 are all free on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count > 65535:
            continue
        ok = True
        for port in range(base, base + count):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free range of ports on 127.0.0.1")


async def local_only(pages: list[bytes]) -> tuple[float, float]:
    """Store and load rates (pages/s) of an in-process pool large enough for everything."""
    fs = LocalFrontswap(PoolConfig(budget_bytes=1 << 30))
    await fs.init(0)
    n = len(pages)
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        await fs.store_many(0, list(range(i, min(n, i + BATCH))), pages[i : i + BATCH])
    t_store = time.perf_counter() - t0
    order = list(range(n))
    random.Random(2).shuffle(order)
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        await fs.load_many(0, order[i : i + BATCH])
    return n / t_store, n / (time.perf_counter() - t0)


def redis_get_rate(requests: int) -> float | None:
    """GET/s of redis-benchmark -d 4096 -P 64 against a private redis-server; None if absent."""
    server = shutil.which("redis-server")
    bench = shutil.which("redis-benchmark")
    if server is None or bench is None:
        print(
            "redis-server or redis-benchmark not found: install them with "
            "`apt-get install redis-server redis-tools` to measure the Redis anchor",
            file=sys.stderr,
        )
        return None
    port = free_base_port(1)
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        out = subprocess.run(
            [
                bench,
                "-p",
                str(port),
                "-t",
                "set,get",
                "-d",
                "4096",
                "-P",
                "64",
                "-n",
                str(requests),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
    finally:
        proc.terminate()
        proc.wait(10)
    match = re.search(r"GET: ([\d.]+) requests per second", out)
    if not match:
        raise RuntimeError(f"could not read redis-benchmark output: {out!r}")
    return float(match.group(1))


async def cluster_run(pages: list[bytes], local_budget: int, lent_budget: int) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="ramster-spill-bench-"))
    # RPC ports base..base+2, admin ports base+3..base+5: free ones, so a `make run` may be up.
    base = free_base_port(6)
    cluster, procs = start_nodes(
        3, base, state, str(local_budget), str(lent_budget), admin_port=base + 3
    )
    pids = [p.pid for p in procs]
    try:
        secret = load_secret(cluster.secret_file)
        await wait_ready(cluster, secret)
        n = len(pages)
        async with Client(cluster.address(0), secret) as client:
            await client.init(0)
            starts = list(range(0, n, BATCH))

            async def store(i: int) -> int:
                chunk = list(range(i, min(n, i + BATCH)))
                ok = await client.store_many(0, chunk, pages[i : i + BATCH])
                return ok.count(False)

            cpu0 = cpu_of(pids)
            t0 = time.perf_counter()
            refused = sum(await in_flight(starts, store))
            t_store = time.perf_counter() - t0
            cpu_store = [b - a for a, b in zip(cpu0, cpu_of(pids), strict=True)]
            if refused:
                raise SystemExit(f"{refused} pages were refused: the budgets are too small")
            before = (await client.stats())["remote"]
            order = list(range(n))
            random.Random(1).shuffle(order)
            lat: list[float] = []

            async def load(i: int) -> int:
                chunk = order[i : i + BATCH]
                c0 = time.perf_counter()
                got = await client.load_many(0, chunk)
                lat.append((time.perf_counter() - c0) * 1e6)
                return sum(1 for j, page in zip(chunk, got, strict=True) if page != pages[j])

            cpu0 = cpu_of(pids)
            t0 = time.perf_counter()
            wrong = sum(await in_flight(starts, load))
            t_load = time.perf_counter() - t0
            cpu_load = [b - a for a, b in zip(cpu0, cpu_of(pids), strict=True)]
            st = await client.stats()
        if wrong:
            raise SystemExit(f"{wrong} pages came back wrong: benchmark invalid")
        remote_loaded = st["remote"]["remote_loads"] - before["remote_loads"]
        lat.sort()
        return {
            "store_pages_per_s": n / t_store,
            "load_pages_per_s": n / t_load,
            "remote_pages_per_s": remote_loaded / t_load,
            "remote_share": remote_loaded / n,
            "remote_fetch_p50_us": st["remote"]["fetch_p50_us"],
            "remote_fetch_p99_us": st["remote"]["fetch_p99_us"],
            "batch_p50_us": lat[len(lat) // 2],
            "batch_p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "local_pool": st["pool"]["pool_total_size"],
            "metadata_bytes_per_page": st["metadata_bytes_per_page"],
            # Node A (the owner) is procs[0]; per remote load counts only pages holders served.
            "owner_cpu_us_per_store": cpu_store[0] / n * 1e6,
            "cluster_cpu_us_per_store": sum(cpu_store) / n * 1e6,
            "owner_cpu_us_per_remote_load": cpu_load[0] / max(1, remote_loaded) * 1e6,
            "cluster_cpu_us_per_remote_load": sum(cpu_load) / max(1, remote_loaded) * 1e6,
        }
    finally:
        stop_nodes(procs)
        shutil.rmtree(state, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="64 MiB instead of 256 MiB (~1 minute)"
    )
    args = parser.parse_args()
    mib = 64 if args.quick else 256
    n = (mib << 20) // PAGE
    print(f"generating {mib} MiB of corpus ...", file=sys.stderr)
    pages = corpus.pages(n, seed=1)
    # The corpus compresses about 2x: a local pool of mib/8 holds about a quarter of it.
    local_budget = (mib << 20) // 8
    lent_budget = mib << 20
    print("anchor: local-only pool ...", file=sys.stderr)
    local_store, local_load = await local_only(pages)
    print("anchor: redis-benchmark ...", file=sys.stderr)
    redis_get = redis_get_rate(100_000 if args.quick else 400_000)
    print("three nodes on loopback ...", file=sys.stderr)
    r = await cluster_run(pages, local_budget, lent_budget)
    print(
        table(
            ["", "pages/s", "notes"],
            [
                [
                    "cluster store",
                    f"{r['store_pages_per_s']:,.0f}",
                    f"{mib} MiB through node A (local pool {human_bytes(local_budget)})",
                ],
                [
                    "cluster load (random order)",
                    f"{r['load_pages_per_s']:,.0f}",
                    f"{r['remote_share']:.0%} served by holders",
                ],
                [
                    "  of which remote",
                    f"{r['remote_pages_per_s']:,.0f}",
                    "remote pages / whole load time",
                ],
                ["local-only pool store", f"{local_store:,.0f}", "in-process, no network"],
                ["local-only pool load", f"{local_load:,.0f}", ""],
                [
                    "redis-benchmark GET -P 64",
                    f"{redis_get:,.0f}" if redis_get else "n/a",
                    "-d 4096, the C ceiling",
                ],
            ],
        )
    )
    print()
    print(
        table(
            ["latency", "p50 us", "p99 us"],
            [
                [
                    "remote fetch (one holder call, node A's view)",
                    f"{r['remote_fetch_p50_us']:.0f}",
                    f"{r['remote_fetch_p99_us']:.0f}",
                ],
                [
                    f"client load_many of {BATCH} pages, {DEPTH} in flight",
                    f"{r['batch_p50_us']:.0f}",
                    f"{r['batch_p99_us']:.0f}",
                ],
            ],
        )
    )
    result = {
        "store_pages_per_s": round(r["store_pages_per_s"]),
        "load_pages_per_s": round(r["load_pages_per_s"]),
        "remote_share": round(r["remote_share"], 3),
        "remote_load_p50_us": r["remote_fetch_p50_us"],
        "remote_load_p99_us": r["remote_fetch_p99_us"],
        "store_vs_local_only": round(r["store_pages_per_s"] / local_store, 3),
        "load_vs_local_only": round(r["load_pages_per_s"] / local_load, 3),
        "remote_load_vs_redis_benchmark": round(r["remote_pages_per_s"] / redis_get, 3)
        if redis_get
        else None,
        "redis_benchmark_get_per_s": round(redis_get) if redis_get else None,
        "metadata_bytes_per_page": r["metadata_bytes_per_page"],
        "owner_cpu_us_per_store": round(r["owner_cpu_us_per_store"], 1),
        "cluster_cpu_us_per_store": round(r["cluster_cpu_us_per_store"], 1),
        "owner_cpu_us_per_remote_load": round(r["owner_cpu_us_per_remote_load"], 1),
        "cluster_cpu_us_per_remote_load": round(r["cluster_cpu_us_per_remote_load"], 1),
        "mib": mib,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
