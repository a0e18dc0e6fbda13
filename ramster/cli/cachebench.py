"""`ramster bench --ephemeral`: fill an ephemeral area past the cluster's free RAM, read it all
back, and show what a cache shows: hits, misses and evictions (every hit verified)."""

from __future__ import annotations

import random
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

OVERFILL = 4
"""Uncompressed bytes stored per byte of free RAM in the cluster: past it, compressed too."""


async def _free_ram(client: Client, access: Access) -> tuple[int, int, list[dict[str, Any]]]:
    """(free bytes on this node's local pool, free lent bytes of its live peers, peers' stats)."""
    st = await client.stats()
    pool = st["pool"]
    local = max(0, pool["pool_limit"] - pool["pool_total_size"]) + int(st["ephemeral"]["bytes"])
    peers: list[dict[str, Any]] = []
    lent = 0
    for peer in st["peers"]:
        if not peer["alive"]:
            continue
        try:
            async with Client(peer["address"], access.secret, access.config) as other:
                pst = await other.stats()
        except RamsterError:
            continue
        peers.append(pst)
        lent += int(pst["lent_free"])
    return local, lent, peers


async def _peer_lent(access: Access, peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for old in peers:
        try:
            async with Client(old["address"], access.secret, access.config) as other:
                out.append(await other.stats())
        except RamsterError:
            out.append(old)
    return out


async def _bench(
    address: str, access: Access, mib: int | None, batch: int, seed: int, area: int
) -> dict[str, Any]:
    async with Client(address, access.secret, access.config) as client:
        hello = await client.hello()
        ps = int(hello.get("page_size", 4096))
        client.page_size = ps
        local, lent, peers = await _free_ram(client, access)
        free = local + lent
        n = ((mib << 20) if mib else max(OVERFILL * free, 64 << 20)) // ps
        print(
            f"ramster bench --ephemeral: {human_bytes(n * ps)} ({n:,} pages) into area {area} "
            f"of {hello['node']} at {address}; the cluster has {human_bytes(free)} free "
            f"({human_bytes(local)} here, {human_bytes(lent)} lent by {len(peers)} peer(s))"
        )
        await client.init(area, "ephemeral")
        before = (await client.stats())["ephemeral"]
        source = corpus.generate(n, seed=seed, page_size=ps)
        sums = np.zeros(n, dtype=np.uint64)
        stored = np.zeros(n, dtype=bool)
        bar = Progress("put", n, "pages")
        for i in range(0, n, batch):
            chunk = list(range(i, min(n, i + batch)))
            pages = [next(source) for _ in chunk]
            sums[i : i + len(chunk)] = [checksum(p) for p in pages]
            t0 = time.perf_counter()
            kept = await client.store_many(area, chunk, pages)
            bar.advance(len(chunk), time.perf_counter() - t0)
            stored[i : i + len(chunk)] = kept
        bar.close()
        order = list(range(n))
        random.Random(seed).shuffle(order)
        bar = Progress("get", n, "pages")
        hits = misses = wrong = 0
        t_get = 0.0
        for i in range(0, n, batch):
            chunk = order[i : i + batch]
            t0 = time.perf_counter()
            got = await client.load_many(area, chunk)
            spent = time.perf_counter() - t0
            t_get += spent
            for j, page in zip(chunk, got, strict=True):
                if page is None:
                    misses += 1
                elif checksum(page) == int(sums[j]):
                    hits += 1
                else:
                    wrong += 1
            bar.advance(len(chunk), spent)
        bar.close()
        after = (await client.stats())["ephemeral"]
        peers = await _peer_lent(access, peers)
    delta = {k: int(after[k]) - int(before.get(k, 0)) for k in ("puts", "evicts", "spilled_pages")}
    return {
        "pages": n,
        "page_size": ps,
        "free_bytes": free,
        "accepted": int(stored.sum()),
        "hits": hits,
        "misses": misses,
        "wrong": wrong,
        "get_pages_per_s": n / max(t_get, 1e-9),
        "evicts_here": delta["evicts"],
        "spilled": delta["spilled_pages"],
        "kept_here": int(after["pages"]),
        "held_by_peers": [(p["node"], int(p["ephemeral"]["lent_pages"])) for p in peers],
        "evicts_on_peers": sum(int(p["ephemeral"]["lent_evicts"]) for p in peers),
    }


def bench(address: str, access: Access, mib: int | None, batch: int, seed: int, area: int) -> int:
    """Fill an ephemeral area past the cluster's free RAM, read it back, report."""
    r = run(_bench(address, access, mib, batch, seed, area))
    n = r["pages"]
    print()
    print(
        table(
            ["bench --ephemeral", "value"],
            [
                ["pages put", f"{n:,} ({human_bytes(n * r['page_size'])})"],
                ["cluster RAM free before", human_bytes(r["free_bytes"])],
                ["puts accepted", f"{r['accepted']:,}"],
                ["hits (verified)", f"{r['hits']:,} ({r['hits'] / max(n, 1):.1%})"],
                ["misses", f"{r['misses']:,}"],
                ["wrong bytes", f"{r['wrong']:,}"],
                ["get", f"{r['get_pages_per_s']:,.0f} pages/s"],
                ["spilled to peers (one copy)", f"{r['spilled']:,} pages"],
                ["evicted here", f"{r['evicts_here']:,} pages"],
                ["evicted on peers (all owners)", f"{r['evicts_on_peers']:,} pages"],
                ["kept here now", f"{r['kept_here']:,} pages"],
                *[[f"  held by {node}", f"{pages:,} pages"] for node, pages in r["held_by_peers"]],
            ],
        )
    )
    return 0 if not r["wrong"] else 1
