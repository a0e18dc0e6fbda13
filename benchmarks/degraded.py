"""Benchmark: what a slow or lost machine costs a writer.

    python benchmarks/degraded.py [--quick]

Two phases with real node processes on loopback (`ramster.testing.cluster`):
1. Five nodes, R=3, a writer on n0 overwriting a working set three times its local pool in
   batches of 128 pages. The anchor is the same writer in the same run with every holder
   healthy (the steady p99); then one holder is stopped with SIGSTOP and the writer goes on.
   Before issue 15 every overwrite batch waited out the drops to the paused holder (2.5 s).
2. Three nodes, R=2: one is killed -9, and the writer stores new pages beyond its local pool:
   every store must be accepted (one copy each, under-replicated), and after the node returns
   the copies are repaired.
The last line is one JSON object: `writer_p99_steady_ms`, `writer_p99_paused_ms`,
`writer_p99_paused_vs_steady` (goal <= 2), `refused_after_kill` (goal 0), `repair_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ramster.cli.report import table
from ramster.testing import corpus
from ramster.testing.cluster import Cluster, make_cluster

BATCH = 128


def p99(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(0.99 * len(s)))] if s else 0.0


async def overwrite(client: Any, pages: list[bytes], rounds: int) -> list[float]:
    """Seconds per batch, overwriting every page `rounds` times."""
    out = []
    for r in range(rounds):
        for i in range(0, len(pages), BATCH):
            chunk = pages[i : i + BATCH]
            if r % 2:
                chunk = chunk[::-1]
            t0 = time.perf_counter()
            ok = await client.store_many(0, list(range(i, i + len(chunk))), chunk)
            out.append(time.perf_counter() - t0)
            if not all(ok):
                raise RuntimeError("a store was refused")
    return out


async def paused_holder(tmp: Path, quick: bool) -> dict[str, float]:
    c = make_cluster(tmp / "paused", 5, local_budget="4MiB", lent_budget="64MiB", replicas=3)
    await c.start_all()
    try:
        # Three times what the 4 MiB local pool holds compressed: most overwrites go out.
        pages = corpus.pages(8192 if quick else 16384, seed=51)
        rounds = 2 if quick else 4
        async with c.client(0) as client:
            await client.init(0)
            await overwrite(client, pages, 1)  # place everything once
            steady = await overwrite(client, pages, rounds)
            stragglers_steady = (await c.stats(0))["remote"]["stragglers"]
            proc = c.nodes[2].proc
            assert proc is not None
            proc.send_signal(signal.SIGSTOP)
            try:
                paused = await overwrite(client, pages, rounds)
            finally:
                proc.send_signal(signal.SIGCONT)
            stragglers = (await c.stats(0))["remote"]["stragglers"] - stragglers_steady
        return {
            "stragglers_steady": stragglers_steady,
            "stragglers_paused": stragglers,
            "steady_p50_ms": statistics.median(steady) * 1e3,
            "steady_p99_ms": p99(steady) * 1e3,
            "paused_p50_ms": statistics.median(paused) * 1e3,
            "paused_p99_ms": p99(paused) * 1e3,
            "paused_max_ms": max(paused) * 1e3,
            "batches": len(paused),
        }
    finally:
        c.stop_all()


async def wait_repaired(c: Cluster, within: float) -> None:
    st = await c.wait_stats(0, lambda st: st["under_replicated_pages"] == 0, within=within)
    if st["under_replicated_pages"]:
        raise RuntimeError(f"not repaired within {within} s: {st['under_replicated_pages']}")


async def killed_node(tmp: Path, quick: bool) -> dict[str, float]:
    c = make_cluster(tmp / "killed", 3, local_budget="4MiB", lent_budget="128MiB")
    await c.start_all()
    try:
        n = 4096 if quick else 12288
        before = corpus.pages(n // 4, seed=52)
        after = corpus.pages(n, seed=53)
        async with c.client(0) as client:
            await client.init(0)
            for i in range(0, len(before), BATCH):
                await client.store_many(0, list(range(i, i + BATCH)), before[i : i + BATCH])
            c.kill(2)
            await c.wait_stats(0, lambda st: st["gone_peers"] == ["n2"])
            refused = 0
            t0 = time.perf_counter()
            for i in range(0, len(after), BATCH):
                offs = list(range(len(before) + i, len(before) + i + BATCH))
                ok = await client.store_many(0, offs, after[i : i + BATCH])
                refused += ok.count(False)
            store_s = time.perf_counter() - t0
            under = (await c.stats(0))["under_replicated_pages"]
            started = time.monotonic()
            c.start(2)
            await c.wait_ready()
            await wait_repaired(c, 60)
            repair_s = time.monotonic() - started  # from the restart: process start-up too
            got = []
            for i in range(0, len(before) + len(after), BATCH):
                got += await client.load_many(0, list(range(i, i + BATCH)))
            bad = sum(1 for a, b in zip(got, before + after, strict=True) if a != b)
        return {
            "refused": refused,
            "stored": len(after),
            "store_pages_per_s": len(after) / store_s,
            "under_replicated": under,
            "repair_s": repair_s,
            "bad": bad,
        }
    finally:
        c.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller working sets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ramster-degraded-") as tmp:
        paused = asyncio.run(paused_holder(Path(tmp), args.quick))
        killed = asyncio.run(killed_node(Path(tmp), args.quick))
    ratio = paused["paused_p99_ms"] / max(paused["steady_p99_ms"], 1e-9)
    print("1. a writer overwriting while one of five holders is stopped (R=3)")
    print(
        table(
            ["writer batch (128 pages)", "p50 ms", "p99 ms"],
            [
                [
                    "steady (anchor)",
                    f"{paused['steady_p50_ms']:.1f}",
                    f"{paused['steady_p99_ms']:.1f}",
                ],
                [
                    "one holder paused",
                    f"{paused['paused_p50_ms']:.1f}",
                    f"{paused['paused_p99_ms']:.1f}",
                ],
            ],
        )
    )
    print()
    print("2. three nodes, R=2, one killed -9, new pages stored beyond the local pool")
    print(
        table(
            ["", "value"],
            [
                ["pages stored / refused", f"{killed['stored']:,} / {killed['refused']:,}"],
                ["store rate", f"{killed['store_pages_per_s']:,.0f} pages/s"],
                ["under-replicated after", f"{killed['under_replicated']:,} pages"],
                ["repaired, from the restart", f"{killed['repair_s']:.2f} s"],
                ["pages loaded back wrong", str(killed["bad"])],
            ],
        )
    )
    print(
        json.dumps(
            {
                "writer_p99_steady_ms": round(paused["steady_p99_ms"], 1),
                "writer_p99_paused_ms": round(paused["paused_p99_ms"], 1),
                "writer_p99_paused_vs_steady": round(ratio, 2),
                "writer_max_paused_ms": round(paused["paused_max_ms"], 1),
                "stragglers_steady": paused["stragglers_steady"],
                "stragglers_paused": paused["stragglers_paused"],
                "refused_after_kill": killed["refused"],
                "under_replicated_after_kill": killed["under_replicated"],
                "repair_s": round(killed["repair_s"], 2),
                "bad_pages": killed["bad"],
            }
        )
    )


if __name__ == "__main__":
    main()
