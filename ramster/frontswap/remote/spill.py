"""The spiller: above the high watermark, the coldest pages move to R holders in batches
(copy before drop: a local copy is freed only after every holder acknowledged it)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from ramster.cluster.placement import choose_holders
from ramster.frontswap.remote.drops import Drops
from ramster.frontswap.remote.holders import Tier, run_all
from ramster.pagestore import ColdPage


class Spiller:
    """Moves cold pages out of the local pool until it is below the low watermark."""

    def __init__(self, tier: Tier, drops: Drops) -> None:
        self._t = tier
        self._drops = drops
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
            await self._drops.flush()
        return moved

    async def _batch(self, cold: list[ColdPage]) -> int:
        """Copy one batch to R holders and free what they all kept; pages moved, -1 if no room."""
        t = self._t
        payloads = [c.payload for c in cold]
        nodes = choose_holders(
            t.holders.candidates(), t.config.replicas, sum(len(p) for p in payloads), t.rng
        )
        if not nodes:
            t.counters["spill_no_holders"] += 1
            t.warn_no_holders()
            return -1
        set_id = t.sets.intern(nodes)
        by_area: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(cold):
            by_area[c.area].append(i)
        moved = 0
        for area, idx in by_area.items():
            offsets = [cold[i].offset for i in idx]
            versions = [cold[i].version for i in idx]
            acked = await t.put_everywhere(
                nodes,
                area,
                offsets,
                versions,
                [cold[i].checksum for i in idx],
                [payloads[i] for i in idx],
            )
            # Copy before drop: only pages every holder acknowledged lose their local copy,
            # and only if nobody stored them again while they were on the wire.
            marked = t.pool.mark_remote(
                area,
                [o for o, a in zip(offsets, acked, strict=True) if a],
                [v for v, a in zip(versions, acked, strict=True) if a],
                set_id,
            )
            it = iter(marked)
            kept = [a and next(it) for a in acked]
            stray = [j for j, k in enumerate(kept) if not k]
            if stray:
                t.counters["spill_refused"] += len(stray)
                await self._drops.on(
                    nodes, area, [offsets[j] for j in stray], [versions[j] for j in stray]
                )
            moved += len(kept) - len(stray)
        t.counters["spill_batches"] += 1
        t.counters["spilled_pages"] += moved
        return moved
