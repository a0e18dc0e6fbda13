"""The spiller: above the high watermark, the coldest pages move to R holders in batches
(copy before drop: a local copy is freed only after every holder acknowledged it)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from ramster.cluster.placement import choose_holders
from ramster.frontswap.remote.copies import Copier
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.holders import Tier, run_all
from ramster.pagestore import ColdPage
from ramster.types import NodeId


class Spiller:
    """Moves cold pages out of the local pool until it is below the low watermark."""

    def __init__(self, tier: Tier, drops: DropQueue, copier: Copier) -> None:
        self._t = tier
        self._drops = drops
        self._copier = copier
        self._wanted = asyncio.Event()
        self._lock = asyncio.Lock()

    def above(self, share: float) -> bool:
        """The pool is full or uses more than `share` of its budget."""
        pool = self._t.pool
        return pool.full or pool.used_bytes > share * pool.config.budget_bytes

    def wake(self) -> None:
        """Ask the spiller to look at the pool's usage now."""
        if self.above(self._t.config.high_watermark):
            self._wanted.set()

    async def run(self) -> None:
        """Spill whenever the pool is above the high watermark, until cancelled."""
        high = self._t.config.high_watermark
        while True:
            try:
                async with asyncio.timeout(1.0):
                    await self._wanted.wait()
            except TimeoutError:
                pass
            self._wanted.clear()
            if not self.above(high):
                continue
            moved = await self.once()
            if self.above(high) and not moved:
                await asyncio.sleep(self._t.config.retry_delay)
            if self.above(high):
                self._wanted.set()

    async def once(self) -> int:
        """Move cold pages out until usage is below the low watermark; returns pages moved."""
        async with self._lock:  # one spiller at a time: both would pick the same pages
            return await self._spill()

    async def _spill(self) -> int:
        t = self._t
        cfg = t.config
        moved = 0
        while self.above(cfg.low_watermark):
            cold = t.pool.coldest(cfg.batch_pages * cfg.depth)
            if not cold:
                break
            # Several batches on the wire at once: a round trip each would otherwise idle us.
            batches = [cold[i : i + cfg.batch_pages] for i in range(0, len(cold), cfg.batch_pages)]
            results = await run_all(self._batch(b) for b in batches)
            batch_moved = sum(m for m in results if m > 0)
            moved += batch_moved
            if not batch_moved:
                break
            self._drops.collect()
        return moved

    async def _batch(self, cold: list[ColdPage]) -> int:
        """Copy one batch to holders and free what enough of them kept; pages moved, -1 if no
        holder has room. Ephemeral pages go apart, with one copy each."""
        is_ephemeral = self._t.pool.is_ephemeral
        ephemeral = [c for c in cold if is_ephemeral(c.area)]
        if not ephemeral:
            return await self._place(cold, False)
        persistent = [c for c in cold if not is_ephemeral(c.area)]
        moved = await self._place(ephemeral, True)
        if persistent:
            more = await self._place(persistent, False)
            moved = more if moved < 0 else moved + max(0, more)
        return moved

    async def _place(self, cold: list[ColdPage], ephemeral: bool) -> int:
        """Copy pages of one kind to up to R holders (ephemeral ones to one); pages moved, -1
        if no holder has room."""
        t = self._t
        cfg = t.config
        payloads = [c.payload for c in cold]
        replicas, minimum = (1, 1) if ephemeral else (cfg.replicas, cfg.min_replicas)
        nodes = choose_holders(
            t.candidates(), replicas, sum(len(p) for p in payloads), t.rng, minimum=minimum
        )
        if not nodes:
            # Ephemeral pages stay too: a store that needs their room evicts them, not before
            # (evicting down to the low watermark here would leave the cache a third empty).
            t.counters["spill_no_holders"] += 1
            if not ephemeral:
                t.warn_no_holders()
            return -1
        moved = 0
        for area, idx in _by_area(cold).items():
            offsets = [cold[i].offset for i in idx]
            versions = [cold[i].version for i in idx]
            kept_by = await self._copier.put(
                nodes,
                area,
                offsets,
                versions,
                [cold[i].checksum for i in idx],
                [payloads[i] for i in idx],
                ephemeral,
            )
            # Copy before drop: only pages enough holders acknowledged lose their local copy,
            # and only if nobody stored them again while they were on the wire.
            groups: dict[tuple[NodeId, ...], list[int]] = defaultdict(list)
            for j, kept in enumerate(kept_by):
                groups[kept].append(j)
            for kept, js in groups.items():
                if len(kept) < minimum:
                    marked = [False] * len(js)
                else:
                    marked = t.pool.mark_remote(
                        area,
                        [offsets[j] for j in js],
                        [versions[j] for j in js],
                        t.sets.intern(kept, ephemeral),
                    )
                    if len(kept) < replicas:
                        t.counters["under_replicated_stores"] += sum(marked)
                stray = [j for j, m in zip(js, marked, strict=True) if not m]
                if stray:
                    t.counters["spill_refused"] += len(stray)
                    self._drops.enqueue(
                        kept, area, [offsets[j] for j in stray], [versions[j] for j in stray]
                    )
                moved += len(js) - len(stray)
        t.counters["spill_batches"] += 1
        t.counters["spilled_pages"] += moved
        if ephemeral:
            t.counters["ephemeral_spilled_pages"] += moved
        return moved


def _by_area(cold: list[ColdPage]) -> dict[int, list[int]]:
    """Indices of the pages by area, in first-seen order."""
    by_area: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(cold):
        by_area[c.area].append(i)
    return by_area
