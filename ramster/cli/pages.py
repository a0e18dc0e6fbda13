"""Client-side commands: store, load, invalidate, stats and bench against a running node."""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import numpy as np

from ramster.cli.options import Access
from ramster.cli.report import Progress, human_bytes, table
from ramster.client import Client
from ramster.errors import RamsterError
from ramster.pagestore.codec import checksum
from ramster.rpc.loop import run
from ramster.testing import corpus


async def _store(address: str, access: Access, area: int, offset: int, data: bytes) -> int:
    async with Client(address, access.secret, access.config, page_size=len(data)) as client:
        await client.init(area)
        ok = await client.store(area, offset, data)
    print("stored" if ok else "refused (the node and its peers are full)")
    return 0 if ok else 1


async def _load(address: str, access: Access, area: int, offset: int, page_size: int) -> int:
    async with Client(address, access.secret, access.config, page_size=page_size) as client:
        page = await client.load(area, offset)
    if page is None:
        print(f"area {area} offset {offset}: not stored", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(page)
    sys.stdout.buffer.flush()
    return 0


async def _invalidate(address: str, access: Access, area: int, offsets: list[int]) -> int:
    async with Client(address, access.secret, access.config) as client:
        if offsets:
            await client.invalidate_many(area, offsets)
        else:
            await client.invalidate_area(area)
    return 0


async def _stats(address: str, access: Access, as_json: bool) -> int:
    async with Client(address, access.secret, access.config) as client:
        st = await client.stats()
    if as_json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    pool, lent = st["pool"], st["lent"]
    print(
        table(
            ["node", st["node"]],
            [
                ["address", st["address"]],
                ["incarnation", st["incarnation"]],
                ["local pages", f"{pool['stored_pages']:,}"],
                ["remote pages", f"{pool['remote_pages']:,}"],
                [
                    "local pool",
                    f"{human_bytes(pool['pool_total_size'])} of {human_bytes(pool['pool_limit'])}",
                ],
                [
                    "lent pool",
                    f"{human_bytes(lent['pool_total_size'])} of {human_bytes(lent['pool_limit'])}"
                    f" ({lent['stored_pages']:,} pages of {lent['owners']} owner(s))",
                ],
                ["spilled pages", f"{st['remote']['spilled_pages']:,}"],
                ["remote loads", f"{st['remote']['remote_loads']:,}"],
                [
                    "peers alive",
                    ", ".join(f"{p['node']}@{p['address']}" for p in st["peers"] if p["alive"])
                    or "-",
                ],
            ],
        )
    )
    return 0


async def _bench(
    address: str, access: Access, mib: int, batch: int, seed: int, area: int
) -> dict[str, Any]:
    async with Client(address, access.secret, access.config) as client:
        hello = await client.hello()
        ps = int(hello.get("page_size", 4096))
        client.page_size = ps
        n = (mib << 20) // ps
        print(f"ramster bench: {mib} MiB ({n:,} pages) through {hello['node']} at {address}")
        await client.init(area)
        cpu0 = (await client.stats())["cpu_s"]
        # The corpus is generated batch by batch and remembered as one checksum per page, so
        # that a bench of any size needs a batch of RAM, not the whole corpus.
        source = corpus.generate(n, seed=seed, page_size=ps)
        sums = np.zeros(n, dtype=np.uint64)
        stored = [False] * n
        bar = Progress("store", n, "pages")
        t_store = 0.0  # the stores only, not the making of the corpus
        for i in range(0, n, batch):
            chunk = list(range(i, min(n, i + batch)))
            pages = [next(source) for _ in chunk]
            sums[i : i + len(chunk)] = [checksum(p) for p in pages]
            t0 = time.perf_counter()
            kept = await client.store_many(area, chunk, pages)
            spent = time.perf_counter() - t0
            t_store += spent
            for j, ok in zip(chunk, kept, strict=True):
                stored[j] = ok
            bar.advance(len(chunk), spent)
        bar.close()
        cpu1 = (await client.stats())["cpu_s"]
        order = list(range(n))
        random.Random(seed).shuffle(order)
        bar = Progress("load", n, "pages")
        bad = missing = 0
        t_load = 0.0
        for i in range(0, n, batch):
            chunk = order[i : i + batch]
            t0 = time.perf_counter()
            got = await client.load_many(area, chunk)
            spent = time.perf_counter() - t0
            t_load += spent
            for j, page in zip(chunk, got, strict=True):
                if not stored[j]:
                    continue
                if page is None:
                    missing += 1
                elif len(page) != ps or checksum(page) != int(sums[j]):
                    bad += 1
            bar.advance(len(chunk), spent)
        bar.close()
        st = await client.stats()
    holders = []
    for peer in st["peers"]:
        if not peer["alive"]:
            continue
        try:
            async with Client(peer["address"], access.secret, access.config) as other:
                pst = await other.stats()
            holders.append([peer["node"], f"{pst['lent']['stored_pages']:,}"])
        except RamsterError:
            holders.append([peer["node"], "unreachable"])
    return {
        "pages": n,
        "stored": sum(stored),
        "refused": n - sum(stored),
        "bad": bad,
        "missing": missing,
        "store_pages_per_s": n / t_store,
        "load_pages_per_s": n / t_load,
        # The node's own CPU (its threads included), not its peers'.
        "store_cpu_us_per_page": (cpu1 - cpu0) / n * 1e6,
        "load_cpu_us_per_page": (st["cpu_s"] - cpu1) / n * 1e6,
        "local_pages": st["pool"]["stored_pages"],
        "remote_pages": st["pool"]["remote_pages"],
        "holders": holders,
        "page_size": ps,
    }


def bench(address: str, access: Access, mib: int, batch: int, seed: int, area: int) -> int:
    """Store a corpus through a node, load it back in random order, verify, report."""
    r = run(_bench(address, access, mib, batch, seed, area))
    mib_s = r["page_size"] / (1 << 20)
    store_rate, load_rate = r["store_pages_per_s"], r["load_pages_per_s"]
    good = r["stored"] - r["bad"] - r["missing"]
    print()
    print(
        table(
            ["bench", "value"],
            [
                ["pages stored", f"{r['stored']:,} of {r['pages']:,} ({r['refused']:,} refused)"],
                ["store", f"{store_rate:,.0f} pages/s ({store_rate * mib_s:,.1f} MiB/s)"],
                ["  node CPU per stored page", f"{r['store_cpu_us_per_page']:.1f} us"],
                [
                    "load (random order)",
                    f"{load_rate:,.0f} pages/s ({load_rate * mib_s:,.1f} MiB/s)",
                ],
                ["  node CPU per loaded page", f"{r['load_cpu_us_per_page']:.1f} us"],
                ["verified", f"{good:,} ok, {r['bad']} wrong, {r['missing']} missing"],
                ["kept on the node", f"{r['local_pages']:,} pages"],
                ["spilled to peers", f"{r['remote_pages']:,} pages"],
                *[[f"  lent pool of {h[0]}", f"{h[1]} pages (all owners)"] for h in r["holders"]],
            ],
        )
    )
    return 0 if not r["bad"] and not r["missing"] else 1


def store(address: str, access: Access, area: int, offset: int, data: bytes) -> int:
    """Store one page read from a file or stdin."""
    return run(_store(address, access, area, offset, data))


def load(address: str, access: Access, area: int, offset: int, page_size: int) -> int:
    """Write one page to stdout."""
    return run(_load(address, access, area, offset, page_size))


def invalidate(address: str, access: Access, area: int, offsets: list[int]) -> int:
    """Invalidate pages, or the whole area when no offsets are given."""
    return run(_invalidate(address, access, area, offsets))


def stats(address: str, access: Access, as_json: bool) -> int:
    """Print a node's statistics."""
    return run(_stats(address, access, as_json))
