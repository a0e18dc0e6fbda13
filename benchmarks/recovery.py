"""Benchmark: how fast a cluster notices a dead holder and restores full redundancy.

    sudo python benchmarks/recovery.py [--quick]

Four nodes, one per network namespace (ramster/testing/netns.py), default timing (heartbeat
0.5 s, dead after 2.5 s). A client stores a corpus through node 0 (256 MiB, 64 MiB with --quick)
whose small local pool spills nearly all of it to the three others with R=2; then one holder is
killed with SIGKILL. Reported: the time until node 0 declares it dead (detect), until every page
has two live copies again (restore), and the re-replication rate. In the same run, the anchor:
batched put throughput of the RPC itself (64-page batches, 8 in flight, as in rpc.py). A second
client loads single random pages every 5 ms throughout: its p99 latency before the kill and while
repairing shows what recovery costs foreground work.
The last line is one JSON object with the figures issue 5 names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rpc import QUICK, Plan, measure_ours, start_child, stop_child

from ramster.cli.report import table
from ramster.client import Client
from ramster.testing import corpus
from ramster.testing.cluster import Cluster, make_cluster
from ramster.testing.netns import NetnsLab, available

PAGE = 4096


async def anchor(quick: bool) -> float:
    """Batched put pages/s of the bare RPC against a dict-backed server."""
    import secrets

    secret = secrets.token_hex(16)
    proc, port, _ = start_child(secret)
    try:
        plan = Plan(
            rounds=1,
            seconds=1.0 if quick else 3.0,
            single_calls=200,
            redis_requests=QUICK.redis_requests,
            redis_py_ops=QUICK.redis_py_ops,
        )
        figures = await measure_ours(port, proc.pid, secret, plan)
    finally:
        stop_child(proc)
    return figures["put_batch_pages_per_s"]


async def store_all(client: Client, pages: list[bytes]) -> bool:
    await client.init(0)
    ok = True
    for i in range(0, len(pages), 256):
        ok &= all(
            await client.store_many(
                0, list(range(i, i + len(pages[i : i + 256]))), pages[i : i + 256]
            )
        )
    return ok


async def count_bad(client: Client, pages: list[bytes]) -> int:
    bad = 0
    for i in range(0, len(pages), 256):
        got = await client.load_many(0, list(range(i, i + len(pages[i : i + 256]))))
        bad += sum(1 for a, b in zip(got, pages[i : i + 256], strict=True) if a != b)
    return bad


async def foreground(client: Client, n: int, samples: list[tuple[float, float]]) -> None:
    """Single-page loads at a steady pace, as a swapping program would issue them."""
    rng = random.Random(3)
    while True:
        t = time.monotonic()
        await client.load(0, rng.randrange(n))
        samples.append((t, time.monotonic() - t))
        await asyncio.sleep(0.005)


def p99_ms(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    window = sorted(d for t, d in samples if start <= t < end)
    return round(window[int(0.99 * (len(window) - 1))] * 1e3, 2) if window else None


async def watch(c: Cluster, t0: float) -> tuple[float, float, dict[str, Any]]:
    """Seconds after t0 until node 0 sees n1 dead, and until its pages have R copies again."""
    detect = None
    while time.monotonic() - t0 < 300:
        st = await c.stats(0)
        now = time.monotonic() - t0
        if detect is None and "n1" in st["gone_peers"]:
            detect = now
        if detect is not None and st["under_replicated_pages"] == 0:
            return detect, now, st
        await asyncio.sleep(0.05)
    raise SystemExit("redundancy was not restored within 300 s")


async def recovery(quick: bool) -> dict[str, Any]:
    mib = 64 if quick else 256
    n = (mib << 20) // PAGE
    pages = corpus.pages(n, seed=5)
    tmp = Path(tempfile.mkdtemp(prefix="ramster-recovery-"))
    with NetnsLab(4, net=9) as lab:
        c = make_cluster(
            tmp,
            4,
            local_budget="8MiB",
            lent_budget=f"{mib * 2}MiB",
            static_peers=False,
            lab=lab,
            extra=["--heartbeat=0.5", "--dead-after=2.5"],
        )
        try:
            for i in range(4):
                c.start(i)
            await c.wait_ready(within=30)
            async with c.client(0) as client:
                if not await store_all(client, pages):
                    raise SystemExit("some pages were refused: budgets too small")
                await asyncio.sleep(1.0)
                before = await c.stats(0)
                print(
                    f"{before['pool']['remote_pages']:,} of {n:,} pages on holders; killing n1",
                    file=sys.stderr,
                )
                repaired_before = before["remote"]["repaired_pages"]
                samples: list[tuple[float, float]] = []
                async with c.client(0) as fg_client:
                    loader = asyncio.create_task(foreground(fg_client, n, samples))
                    await asyncio.sleep(2.0)
                    t0 = time.monotonic()
                    c.kill(1)
                    try:
                        detect, restore, st = await watch(c, t0)
                    finally:
                        loader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await loader
                steady_p99 = p99_ms(samples, t0 - 2.0, t0)
                recovery_p99 = p99_ms(samples, t0 + detect, t0 + restore)
                repaired = st["remote"]["repaired_pages"] - repaired_before
                direct = st["remote"]["direct_copies"] - before["remote"]["direct_copies"]
                bad = await count_bad(client, pages)
                if bad:
                    raise SystemExit(f"{bad} pages came back wrong after recovery")
            # Then the coordinator itself (n0, the lowest id) dies: how long until the
            # survivors agree on its successor, in a higher term?
            term = (await c.stats(2))["term"]
            t0 = time.monotonic()
            c.kill(0)
            failover = None
            while time.monotonic() - t0 < 60:
                views = {((st := await c.stats(i))["coordinator"], st["term"]) for i in (2, 3)}
                if len(views) == 1 and next(iter(views))[0] == "n2" and next(iter(views))[1] > term:
                    failover = time.monotonic() - t0
                    break
                await asyncio.sleep(0.05)
        finally:
            c.stop_all()
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "detect_s": detect,
        "restore_s": restore,
        "repaired_pages": repaired,
        "direct_copies": direct,
        "mib": mib,
        "failover_s": failover,
        "steady_p99_ms": steady_p99,
        "recovery_p99_ms": recovery_p99,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 256 MiB")
    args = parser.parse_args()
    reason = available()
    if reason is not None:
        raise SystemExit(f"recovery benchmark: {reason} (run it as root)")
    print("anchor: batched RPC puts ...", file=sys.stderr)
    put_rate = await anchor(args.quick)
    print("four nodes in namespaces ...", file=sys.stderr)
    r = await recovery(args.quick)
    window = r["restore_s"] - r["detect_s"]
    rate = r["repaired_pages"] / window if window > 0 else float("inf")
    print(
        table(
            ["recovery", "value"],
            [
                ["data stored through node 0", f"{r['mib']} MiB, R=2"],
                ["holder killed", "n1 (SIGKILL)"],
                ["detected dead after", f"{r['detect_s']:.2f} s"],
                ["full redundancy after", f"{r['restore_s']:.2f} s"],
                [
                    "pages re-replicated",
                    f"{r['repaired_pages']:,} ({r['direct_copies']:,} holder to holder)",
                ],
                ["re-replication rate", f"{rate:,.0f} pages/s ({rate * PAGE / 1e6:,.1f} MB/s)"],
                ["anchor: batched RPC put", f"{put_rate:,.0f} pages/s"],
                ["single-page load p99, before the kill", f"{r['steady_p99_ms']} ms"],
                ["single-page load p99, while repairing", f"{r['recovery_p99_ms']} ms"],
                [
                    "coordinator failover",
                    f"{r['failover_s']:.2f} s" if r["failover_s"] is not None else "not settled",
                ],
            ],
        )
    )
    result = {
        "detect_s": round(r["detect_s"], 3),
        "coordinator_failover_s": (
            round(r["failover_s"], 3) if r["failover_s"] is not None else None
        ),
        "restore_s": round(r["restore_s"], 3),
        "recovery_mb_per_s": round(rate * PAGE / 1e6, 1),
        "recovery_vs_batched_put": round(rate / put_rate, 3),
        "repaired_pages": r["repaired_pages"],
        "direct_copies": r["direct_copies"],
        "load_p99_ms_steady": r["steady_p99_ms"],
        "load_p99_ms_during_recovery": r["recovery_p99_ms"],
        "batched_put_pages_per_s": round(put_rate),
        "mib": r["mib"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
