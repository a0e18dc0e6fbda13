"""Benchmark: how long the event loop stalls while a node does its heaviest housekeeping.

    python benchmarks/stalls.py [--quick]

A node's loop serves heartbeats; a pause longer than `dead_after` reads as a death to its peers
and starts a repair storm. This measures the loop's lag (a probe that sleeps 5 ms and records
how late it woke) while, at once:
- a lent pool of 2 GiB (512 MiB with --quick), half of one owner's pages dropped, takes new
  pages (so that it compacts on the store path),
- another owner of half the pool (1 GiB) is forgotten (as after its owner grace), and
- a local pool stores 64 MiB (16 MiB) in one batch, as an NBD write of that size does.
The anchor is the same work the way it was done before issue 15, in the same run: compaction
unbounded, the owner freed in one call, the batch compressed on the loop. The last line is one
JSON object with `loop_lag_p99_ms` (goal: under 50) and the anchor's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ramster.cli.report import table
from ramster.frontswap import LocalFrontswap
from ramster.frontswap import local as local_module
from ramster.pagestore import PoolConfig
from ramster.pagestore import pool as pool_module
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import RECLAIM_STEP_PAGES
from ramster.rpc.pages import PageBatch
from ramster.testing import corpus

PROBE = 0.005
BATCH = 4096
PAGE = 4096


@dataclass
class Lag:
    """Observed lateness of the probe, in seconds."""

    samples: list[float]

    def q(self, quantile: float) -> float:
        if not self.samples:
            return 0.0
        s = sorted(self.samples)
        return s[min(len(s) - 1, int(quantile * len(s)))]


async def probe(samples: list[float]) -> None:
    """Record how late each 5 ms sleep wakes, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(PROBE)
        samples.append(max(0.0, loop.time() - before - PROBE))


def payloads(n: int, seed: int) -> Iterator[memoryview]:
    """Stored-form payloads (lz4 blob lengths, 1.2-2.8 KiB), views into one random buffer."""
    rng = random.Random(seed)
    buf = memoryview(np.random.default_rng(seed).bytes(32 << 20))
    for _ in range(n):
        length = rng.randrange(1200, 2800)
        start = rng.randrange(0, len(buf) - length)
        yield buf[start : start + length]


def fill(lent: LentPool, owner: str, pages: int, seed: int) -> None:
    source = payloads(pages, seed)
    for first in range(0, pages, BATCH):
        n = min(BATCH, pages - first)
        ok = lent.put(
            owner,
            "00000001-bench",
            PageBatch(
                [0] * n,
                list(range(first, first + n)),
                [1] * n,
                [7] * n,
                [next(source) for _ in range(n)],
            ),
        )
        if not all(ok):
            raise RuntimeError(f"the lent pool refused pages of {owner} at {first}")


async def one_run(
    lent_bytes: int, local_batch: int, bounded: bool, duration: float
) -> dict[str, float]:
    per_owner = int(lent_bytes * 0.47) // 2048  # pages of ~2 KiB: two owners fill ~94%
    lent = LentPool(PoolConfig(budget_bytes=lent_bytes))
    fill(lent, "forgotten", per_owner, 1)
    fill(lent, "sparse", per_owner, 2)
    # Every other page of "sparse" goes: the slabs are half empty, worth compacting.
    lent.drop("sparse", "00000001-bench", [0] * (per_owner // 2), list(range(0, per_owner, 2)))
    pages = corpus.pages(local_batch, seed=3)
    fs = LocalFrontswap(PoolConfig(budget_bytes=local_batch * PAGE))
    await fs.init(0)
    gc.collect()

    saved = (getattr(pool_module, "COMPACT_STEP"), local_module.THREAD_BATCH)  # noqa: B009
    if not bounded:
        setattr(pool_module, "COMPACT_STEP", None)  # noqa: B010
        local_module.THREAD_BATCH = 1 << 30
    samples: list[float] = []
    task = asyncio.create_task(probe(samples))
    try:
        await asyncio.sleep(0.05)
        started = time.perf_counter()

        async def writer() -> None:
            # New pages as fast as the loop allows, for `duration`: the pool compacts on the
            # way (its slabs are half empty) while the other work goes on.
            source = payloads(1 << 40, 4)
            deadline = time.perf_counter() + duration
            first = 0
            while time.perf_counter() < deadline:
                # Overwrites once the key space is used: old copies go, slabs fragment.
                offsets = [(first + i) % per_owner for i in range(256)]
                first += 256
                lent.put(
                    "new",
                    "00000001-bench",
                    PageBatch(
                        [0] * 256,
                        offsets,
                        [first] * 256,
                        [7] * 256,
                        [next(source) for _ in range(256)],
                    ),
                )
                await asyncio.sleep(0)

        async def forget() -> None:
            lent.forget("forgotten")
            while lent.reclaim_pending():
                lent.reclaim_step(RECLAIM_STEP_PAGES if bounded else 1 << 40)
                await asyncio.sleep(0.005 if bounded else 0)

        async def nbd_write() -> None:
            await asyncio.sleep(0.1)
            await fs.store_many(0, list(range(local_batch)), pages)

        await asyncio.gather(writer(), forget(), nbd_write())
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        setattr(pool_module, "COMPACT_STEP", saved[0])  # noqa: B010
        local_module.THREAD_BATCH = saved[1]
    lag = Lag(samples)
    st = lent.statistics()
    return {
        "p50_ms": round(lag.q(0.5) * 1e3, 2),
        "p99_ms": round(lag.q(0.99) * 1e3, 2),
        "max_ms": round(max(samples, default=0.0) * 1e3, 2),
        "seconds": round(elapsed, 2),
        "compacted": st.pool.pages_compacted,
        "reclaimed": st.reclaimed_pages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="512 MiB lent pool, 16 MiB write")
    args = parser.parse_args()
    lent_bytes = (512 << 20) if args.quick else (2 << 30)
    local_batch = (16 << 20 if args.quick else 64 << 20) // PAGE
    duration = 3.0 if args.quick else 8.0
    results = {}
    for name, bounded in (("issue 15", True), ("before (anchor)", False)):
        results[name] = asyncio.run(one_run(lent_bytes, local_batch, bounded, duration))
        gc.collect()
    rows = [
        [
            name,
            r["p50_ms"],
            r["p99_ms"],
            r["max_ms"],
            r["seconds"],
            f"{r['compacted']:,}",
            f"{r['reclaimed']:,}",
        ]
        for name, r in results.items()
    ]
    print(
        f"loop lag while a {lent_bytes >> 20} MiB lent pool compacts, half of it is forgotten "
        f"and {local_batch * PAGE >> 20} MiB are stored in one batch"
    )
    print(table(["", "lag p50 ms", "p99 ms", "max ms", "seconds", "moved", "reclaimed"], rows))
    now, before = results["issue 15"], results["before (anchor)"]
    print(
        json.dumps(
            {
                "loop_lag_p50_ms": now["p50_ms"],
                "loop_lag_p99_ms": now["p99_ms"],
                "loop_lag_max_ms": now["max_ms"],
                "anchor_loop_lag_p99_ms": before["p99_ms"],
                "anchor_loop_lag_max_ms": before["max_ms"],
                "lent_pool_mib": lent_bytes >> 20,
                "forgotten_mib": int(lent_bytes * 0.47) >> 20,
                "batch_mib": local_batch * PAGE >> 20,
                "pages_compacted": now["compacted"],
            }
        )
    )


if __name__ == "__main__":
    main()
