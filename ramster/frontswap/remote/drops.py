"""Forgetting copies on holders: the pages the owner's pool forgot (overwrites, invalidations,
exclusive loads), whole areas, strays of stores that did not complete, and orphans (copies
re-replicated away from a holder that was gone and may come back with them).

Drops are versioned: a holder forgets its copy only if it is no newer than the version named,
so a late drop never removes a newer copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ramster.errors import RamsterError
from ramster.frontswap.remote.holders import Tier, run_all

log = logging.getLogger(__name__)


class Drops:
    """Drops to holders, and the orphans waiting for their holder to answer again."""

    def __init__(self, tier: Tier) -> None:
        self._t = tier
        self._orphans: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        self._orphan_lock = asyncio.Lock()

    async def flush(self) -> None:
        """Send the drops the pool queued (pages it forgot that had remote copies)."""
        t = self._t
        drops = t.pool.drain_remote_drops()
        if not drops:
            return
        per_node: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for set_id, area, offset, version in drops:
            for node in t.sets[set_id]:
                offsets, versions = per_node.setdefault((node, area), ([], []))
                offsets.append(offset)
                versions.append(version)
        await run_all(self.on([node], area, o, v) for (node, area), (o, v) in per_node.items())

    async def on(
        self, nodes: Sequence[str], area: int, offsets: list[int], versions: list[int]
    ) -> None:
        """Drop the copies on each node; a failure is counted and logged, never raised."""
        t = self._t
        for node in nodes:
            try:
                await t.holders.drop(node, [area] * len(offsets), offsets, versions)
                t.counters["drops_sent"] += len(offsets)
            except RamsterError as exc:
                # The copies stay on that holder until it reclaims this incarnation's pages.
                t.counters["drop_failures"] += len(offsets)
                log.warning("could not drop %d pages on %s: %s", len(offsets), node, exc)

    async def area(self, area: int) -> None:
        """Drop a whole area on every holder that may have pages of it."""
        t = self._t

        async def one(node: str) -> None:
            try:
                await t.holders.drop_area(node, area)
            except RamsterError as exc:
                t.counters["drop_failures"] += 1
                log.warning("could not drop area %d on %s: %s", area, node, exc)

        await run_all(one(n) for n in t.holders.all_holders())

    # -- orphans ---------------------------------------------------------------------------------

    def orphan(self, node: str, area: int, offsets: list[int], versions: list[int]) -> None:
        """Remember copies left on `node` that no page points at any more."""
        pending = self._orphans.setdefault((node, area), ([], []))
        pending[0].extend(offsets)
        pending[1].extend(versions)

    def pending(self) -> int:
        """Copies known to be orphaned on holders that have not answered since."""
        return sum(len(o) for o, _ in self._orphans.values())

    async def drop_orphans(self, alive: set[str]) -> int:
        """Drop, on holders that answer again, the copies re-replicated away from them."""
        t = self._t
        sent = 0
        # Held while drops are on the wire: a repair that puts the same page (same version)
        # back on that holder waits, so that a late drop never deletes the new copy.
        async with self._orphan_lock:
            for key in list(self._orphans):
                node, area = key
                if node not in alive:
                    continue
                offsets, versions = self._orphans.pop(key)
                try:
                    await t.holders.drop(node, [area] * len(offsets), offsets, versions)
                except RamsterError as exc:
                    log.info("orphan drop on %s failed, will retry: %s", node, exc)
                    self.orphan(node, area, offsets, versions)
                    continue
                sent += len(offsets)
                t.counters["orphans_dropped"] += len(offsets)
        if sent:
            log.info("dropped %d orphaned copies on holders that came back", sent)
        return sent

    async def forget_orphans(self, nodes: Sequence[str], area: int, offsets: list[int]) -> None:
        """Pages about to be copied onto `nodes` are no orphans there any more."""
        async with self._orphan_lock:
            keys = set(offsets)
            for node in nodes:
                pending = self._orphans.get((node, area))
                if pending is None:
                    continue
                keep = [(o, v) for o, v in zip(*pending, strict=True) if o not in keys]
                if keep:
                    self._orphans[(node, area)] = ([o for o, _ in keep], [v for _, v in keep])
                else:
                    del self._orphans[(node, area)]
