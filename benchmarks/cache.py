"""ramster's ephemeral pages as a key-value cache, against memcached at equal RAM.

    python benchmarks/cache.py [--quick]

Setup, on 127.0.0.1, both servers started here on free ports:
- memcached (Debian's package) with `-m BUDGET -t 1 -U 0 -I 2m`: one worker thread, since a
  ramster node serves from one event loop; its memory limit is the item memory it may use.
- one `ramster node` whose local budget is the same BUDGET (lent budget 1 MiB, no peers): the
  budget counts everything the pool costs (slabs, metadata, index). `ramster.PageCache` on an
  ephemeral area is the client: a 4 KiB value is two pages (a 24-byte header comes first).
Values are 4 KiB pages of the realistic corpus (`ramster.testing.corpus`), one per key; the key
set is four times what the budget holds uncompressed. The workload, the same for both: keys
drawn from a Zipf distribution (s = 0.99, hot keys spread over the key space), read 32 at a
time (multi-get), every miss set again (cache-aside); a warm-up pass, then a measured one whose
hits over gets is the hit ratio. Every hit is compared with the key's value, byte by byte
(wrong bytes, ramster's and memcached's: both must be 0). Values held: a sweep over every key
afterwards counts the values each one still returns.
Then the get rate: batches of 32 keys of a hot set both hold, one call in flight, for a few
seconds each; the servers' CPU time per value from /proc.
Goals: hit_ratio_vs_memcached >= 1.5 (compression lets the same RAM hold more) and
get_vs_memcached >= 0.5. The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from pymemcache.client.base import Client as Memcache  # type: ignore[import-untyped]

from ramster.cli.report import table
from ramster.client import PageCache
from ramster.rpc.loop import run
from ramster.testing import corpus
from ramster.testing.cluster import free_port, make_cluster
from ramster.testing.cpu import cpu_seconds

PAGE = 4096
BATCH = 32
HOT_KEYS = 2048
ZIPF_S = 0.99
INSTALL = "apt-get install memcached (Debian's package)"


def key(i: int) -> bytes:
    return b"k%08d" % i


def wrong_bytes(got: bytes, want: bytes) -> int:
    """Bytes of got that differ from want (a length difference counts as wrong bytes)."""
    n = min(len(got), len(want))
    differ = np.frombuffer(got, np.uint8, n) != np.frombuffer(want, np.uint8, n)
    return int(np.count_nonzero(differ)) + abs(len(got) - len(want))


def zipf_keys(n_keys: int, count: int, seed: int) -> np.ndarray:
    """count key ids, Zipf-distributed over n_keys ranks, the ranks shuffled over the keys."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_keys + 1) ** ZIPF_S
    ranks = rng.choice(n_keys, size=count, p=weights / weights.sum())
    keys: np.ndarray = rng.permutation(n_keys)[ranks]
    return keys


class Memcached:
    """A private memcached on a free loopback port."""

    def __init__(self, budget_mib: int) -> None:
        binary = shutil.which("memcached") or "/usr/bin/memcached"
        if not Path(binary).exists():
            sys.exit(f"memcached not found: {INSTALL}")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, *self.flags(budget_mib)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            self.proc.kill()
            self.proc.wait()
            sys.exit("memcached did not listen within 5 s")
        if self.proc.poll() is not None:
            sys.exit(f"memcached exited at start (status {self.proc.returncode})")
        self.client = Memcache(("127.0.0.1", self.port), no_delay=True)

    def flags(self, budget_mib: int) -> list[str]:
        """Loopback, TCP only, one worker thread, the memory limit, values up to 2 MiB."""
        port = str(self.port)
        return [
            "-l",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "0",
            "-t",
            "1",
            "-m",
            str(budget_mib),
            "-I",
            "2m",
            "-u",
            "root",
        ]

    def stat(self, name: str) -> int:
        return int(self.client.stats()[name.encode()])

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


Gets = Callable[[list[bytes]], Awaitable[list[bytes | None]]]
Sets = Callable[[list[tuple[bytes, bytes]]], Awaitable[object]]


async def cache_aside(
    get: Gets,
    put: Sets,
    values: list[bytes],
    ids: np.ndarray,
) -> tuple[int, int, int]:
    """(gets, hits, wrong bytes) of multi-gets over the ids, every miss set again."""
    gets = hits = wrong = 0
    flat = ids.tolist()
    for start in range(0, len(flat), BATCH):
        batch = list(dict.fromkeys(flat[start : start + BATCH]))
        got = await get([key(i) for i in batch])
        missing = []
        for i, value in zip(batch, got, strict=True):
            gets += 1
            if value is None:
                missing.append((key(i), values[i]))
            elif value == values[i]:
                hits += 1
            else:
                wrong += wrong_bytes(value, values[i])
        if missing:
            await put(missing)
    return gets, hits, wrong


async def held(get: Gets, values: list[bytes]) -> int:
    """Values the cache still returns, exactly, over every key."""
    count = 0
    for start in range(0, len(values), 256):
        got = await get([key(i) for i in range(start, min(len(values), start + 256))])
        count += sum(1 for i, v in enumerate(got, start) if v == values[i])
    return count


async def get_rate(get: Gets, seconds: float, pid: int, seed: int) -> tuple[float, float]:
    """(values per second, server CPU µs per value) of hot multi-gets, one call in flight."""
    rng = np.random.default_rng(seed)
    done = 0
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = rng.choice(HOT_KEYS, size=BATCH, replace=False).tolist()
        got = await get([key(i) for i in batch])
        done += sum(v is not None for v in got)
    spent = time.perf_counter() - t0
    return done / spent, (cpu_seconds(pid) - cpu0) / max(done, 1) * 1e6


async def bench(quick: bool) -> dict[str, float | int]:
    budget = 32 if quick else 64
    n_keys = 4 * (budget << 20) // PAGE
    warm, measured = n_keys, (n_keys if quick else 2 * n_keys)
    seconds = 3.0 if quick else 8.0
    print(f"cache: {budget} MiB each, {n_keys:,} keys of 4 KiB ({n_keys * PAGE >> 20} MiB)...")
    values = corpus.pages(n_keys, seed=5)
    ids_warm = zipf_keys(n_keys, warm, seed=1)
    ids_measured = zipf_keys(n_keys, measured, seed=2)
    out: dict[str, float | int] = {"budget_mib": budget, "keys": n_keys}

    mc = Memcached(budget)
    try:

        async def mc_get(keys: list[bytes]) -> list[bytes | None]:
            found = mc.client.get_many(keys)
            return [found.get(k) for k in keys]

        async def mc_set(items: list[tuple[bytes, bytes]]) -> object:
            return mc.client.set_many(dict(items), noreply=False)

        await cache_aside(mc_get, mc_set, values, ids_warm)
        gets, hits, wrong_mc = await cache_aside(mc_get, mc_set, values, ids_measured)
        out["memcached_hit_ratio"] = round(hits / gets, 4)
        out["memcached_evictions"] = mc.stat("evictions")
        out["memcached_values_held"] = await held(mc_get, values)
        await mc_set([(key(i), values[i]) for i in range(HOT_KEYS)])
        rate, cpu = await get_rate(mc_get, seconds, mc.proc.pid, seed=3)
        out["memcached_get_values_per_s"] = round(rate)
        out["memcached_server_cpu_us_per_get"] = round(cpu, 2)
    finally:
        mc.close()

    with tempfile.TemporaryDirectory(prefix="ramster-cache-") as tmp:
        c = make_cluster(Path(tmp), 1, local_budget=f"{budget}MiB", lent_budget="1MiB")
        try:
            await c.start_all()
            node = c.nodes[0].proc
            assert node is not None
            async with c.client(0) as client:
                cache = PageCache(client, area=1)
                await cache.open()
                await cache_aside(cache.get_many, cache.set_many, values, ids_warm)
                gets, hits, wrong = await cache_aside(
                    cache.get_many, cache.set_many, values, ids_measured
                )
                out["hit_ratio"] = round(hits / gets, 4)
                st = (await client.stats())["ephemeral"]
                out["ramster_evicts"] = int(st["evicts"])
                out["values_held"] = await held(cache.get_many, values)
                out["pages_per_value"] = round(int(st["pages"]) / max(out["values_held"], 1), 3)
                await cache.set_many([(key(i), values[i]) for i in range(HOT_KEYS)])
                rate, cpu = await get_rate(cache.get_many, seconds, node.pid, seed=3)
                out["get_pages_per_s"] = round(rate)
                out["ramster_server_cpu_us_per_get"] = round(cpu, 2)
        finally:
            c.stop_all()
    out["wrong_bytes"] = wrong
    out["memcached_wrong_bytes"] = wrong_mc
    out["hit_ratio_vs_memcached"] = round(
        float(out["hit_ratio"]) / max(float(out["memcached_hit_ratio"]), 1e-9), 3
    )
    out["held_vs_memcached"] = round(
        float(out["values_held"]) / max(float(out["memcached_values_held"]), 1.0), 3
    )
    out["get_vs_memcached"] = round(
        float(out["get_pages_per_s"]) / float(out["memcached_get_values_per_s"]), 3
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB, one measured pass")
    args = parser.parse_args()
    r = run(bench(args.quick))
    print(
        table(
            ["cache, equal RAM", "ramster (PageCache)", "memcached"],
            [
                ["budget", f"{r['budget_mib']} MiB", f"{r['budget_mib']} MiB"],
                ["keys (4 KiB values)", f"{r['keys']:,}", f"{r['keys']:,}"],
                [
                    "hit ratio (Zipf 0.99)",
                    f"{r['hit_ratio']:.1%}",
                    f"{r['memcached_hit_ratio']:.1%}",
                ],
                ["evictions", f"{r['ramster_evicts']:,} pages", f"{r['memcached_evictions']:,}"],
                [
                    "values held at the end",
                    f"{r['values_held']:,}",
                    f"{r['memcached_values_held']:,}",
                ],
                ["pages per value held", f"{r['pages_per_value']}", "(items)"],
                [
                    "multi-get of 32, values/s",
                    f"{r['get_pages_per_s']:,}",
                    f"{r['memcached_get_values_per_s']:,}",
                ],
                [
                    "server CPU per value",
                    f"{r['ramster_server_cpu_us_per_get']} us",
                    f"{r['memcached_server_cpu_us_per_get']} us",
                ],
                ["wrong bytes in hits", f"{r['wrong_bytes']}", f"{r['memcached_wrong_bytes']}"],
            ],
        )
    )
    print(
        f"hit_ratio_vs_memcached {r['hit_ratio_vs_memcached']} (goal >= 1.5), "
        f"get_vs_memcached {r['get_vs_memcached']} (goal >= 0.5)"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
