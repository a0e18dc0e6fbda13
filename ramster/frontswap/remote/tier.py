"""The remote tier: frontswap whose cold pages spill to peers' RAM, R copies each.

The local pool stays the one source of truth for the owner: a page is either kept locally or
recorded as REMOTE with its version, checksum and holder set. The spiller copies the coldest
pages to R holders and frees the local copy only after all R acknowledged; loads of remote
pages try the holders one after another and verify version and checksum before returning.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from ramster.cluster.placement import choose_holders
from ramster.frontswap.local import DEFAULT_MAX_AREAS, LocalFrontswap
from ramster.frontswap.remote.config import SpillConfig
from ramster.frontswap.remote.drops import Drops
from ramster.frontswap.remote.fetch import Fetcher
from ramster.frontswap.remote.holders import Holders, Tier
from ramster.frontswap.remote.repair import Repairer
from ramster.frontswap.remote.spill import Spiller
from ramster.pagestore import PoolConfig, checksum, encode
from ramster.types import Buffer

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]


class ClusterFrontswap(LocalFrontswap):
    """frontswap over the local pool and, behind it, R remote holders per spilled page."""

    def __init__(
        self,
        config: PoolConfig,
        holders: Holders,
        spill: SpillConfig | None = None,
        max_areas: int = DEFAULT_MAX_AREAS,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(config, max_areas)
        self.holders = holders
        self.spill_config = spill or SpillConfig()
        self._tier = Tier(self.pool, holders, self.spill_config, rng or random.Random())
        self._drops = Drops(self._tier)
        self._spiller = Spiller(self._tier, self._drops)
        self._fetcher = Fetcher(self._tier)
        self._repairer = Repairer(self._tier, self._fetcher, self._drops)

    def holder_set(self, ident: int) -> tuple[str, ...]:
        """The nodes of a holder-set number."""
        return self._tier.sets[ident]

    # -- stores --------------------------------------------------------------------------------

    async def _put(self, area: int, offs: I64, pages: list[bytes | bytearray]) -> list[bool]:
        cfg = self.pool.config

        def local(idx: list[int], versions: list[int]) -> list[bool]:
            return self.pool.put_many(area, offs[idx], [pages[i] for i in idx], versions)

        def encoded(idx: list[int]) -> tuple[list[bytes], list[int]]:
            return [encode(pages[i], cfg) for i in idx], [checksum(pages[i]) for i in idx]

        return await self._put_with(area, offs, local, encoded)

    async def _put_encoded(
        self, area: int, offs: I64, payloads: list[bytes | memoryview], sums: list[int]
    ) -> list[bool]:
        def local(idx: list[int], versions: list[int]) -> list[bool]:
            return self.pool.put_stored_many(
                area, offs[idx], [payloads[i] for i in idx], versions, [sums[i] for i in idx]
            )

        def encoded(idx: list[int]) -> tuple[list[bytes], list[int]]:
            return [bytes(payloads[i]) for i in idx], [sums[i] for i in idx]

        return await self._put_with(area, offs, local, encoded)

    async def _put_with(
        self,
        area: int,
        offs: I64,
        local: Callable[[list[int], list[int]], list[bool]],
        encoded: Callable[[list[int]], tuple[list[bytes], list[int]]],
    ) -> list[bool]:
        """Store locally; if refused, reclaim by spilling and retry; else straight to holders."""
        n = len(offs)
        versions = list(self._new_versions(n))
        ok = local(list(range(n)), versions)
        missing = [i for i, flag in enumerate(ok) if not flag]
        if missing and await self._spiller.once():
            # Direct reclaim: the writer waits while cold pages move out, then tries again.
            retried = local(missing, [versions[i] for i in missing])
            for i, flag in zip(missing, retried, strict=True):
                ok[i] = flag
            missing = [i for i, flag in enumerate(ok) if not flag]
        if missing:
            payloads, sums = encoded(missing)
            stored = await self._store_remote(
                area, offs[missing], payloads, sums, [versions[i] for i in missing]
            )
            for i, flag in zip(missing, stored, strict=True):
                ok[i] = flag
        self._spiller.wake()
        await self._drops.flush()
        return ok

    async def _store_remote(
        self, area: int, offs: I64, payloads: list[bytes], sums: list[int], versions: list[int]
    ) -> list[bool]:
        """Store pages (in stored form) the local pool refused straight on R holders."""
        t = self._tier
        n = len(payloads)
        need = sum(len(p) for p in payloads)
        nodes = choose_holders(t.holders.candidates(), t.config.replicas, need, t.rng)
        if not nodes:
            t.counters["direct_remote_refused"] += n
            t.warn_no_holders()
            return [False] * n
        keys = offs.tolist()
        acked = await t.put_everywhere(nodes, area, keys, versions, sums, payloads)
        placed = [i for i in range(n) if acked[i]]
        # Only where the key is still absent: a newer store may have landed meanwhile.
        current = self.pool.versions(area, [keys[i] for i in placed])
        placed = [i for i, v in zip(placed, current, strict=True) if v is None]
        recorded = self.pool.put_remote(
            area,
            [keys[i] for i in placed],
            [versions[i] for i in placed],
            [sums[i] for i in placed],
            t.sets.intern(nodes),
        )
        ok = [False] * n
        for i, flag in zip(placed, recorded, strict=True):
            ok[i] = flag
        stray = [i for i in range(n) if not ok[i]]
        if stray:
            await self._drops.on(
                nodes, area, [keys[i] for i in stray], [versions[i] for i in stray]
            )
        t.counters["direct_remote_stores"] += n - len(stray)
        t.counters["direct_remote_refused"] += len(stray)
        return ok

    # -- loads -----------------------------------------------------------------------------------

    async def _get(self, area: int, offs: I64, exclusive: bool) -> list[bytes | None]:
        pages = self.pool.get_many(area, offs, exclusive)
        if None not in pages:
            return pages
        entries = self.pool.remote_entries(area, offs)
        if not entries:
            return pages
        fetched = await self._fetcher.fetch(area, offs, entries)
        for i, page in fetched.items():
            pages[i] = bytes(page)  # verified pages are bytes already: no copy
        if exclusive:
            # Free what was read, unless it was stored again while we were fetching.
            wanted = {i: v for i, v, _, _ in entries}
            now = self.pool.versions(area, offs[list(fetched)])
            done = [i for i, v in zip(fetched, now, strict=True) if v == wanted[i]]
            if done:
                self.pool.drop_many(area, offs[done])
                await self._drops.flush()
        return pages

    async def load_encoded_many(
        self, area: int, offsets: Sequence[int]
    ) -> list[tuple[int, Buffer] | None]:
        """(checksum, stored payload) per key, None where not stored; nothing is expanded here.

        The caller must check each payload against its checksum and, for any that fails, load
        it again with `load_many`, which verifies every copy and tries every holder.
        """
        area = self._area(area)
        offs = self._offsets(offsets)
        if area not in self._areas:
            return [None] * len(offs)
        local = self.pool.get_stored_many(area, offs)
        out: list[tuple[int, Buffer] | None] = [
            None if item is None else (item[1], item[2]) for item in local
        ]
        if None not in out:
            return out
        entries = self.pool.remote_entries(area, offs)
        if entries:
            sums = {i: sum_ for i, _, sum_, _ in entries}
            fetched = await self._fetcher.fetch(area, offs, entries, verify=False)
            for i, payload in fetched.items():
                out[i] = (sums[i], payload)
        return out

    # -- invalidation ----------------------------------------------------------------------------

    async def _drop(self, area: int, offs: I64) -> None:
        self.pool.drop_many(area, offs)
        await self._drops.flush()

    async def _drop_area(self, area: int) -> int:
        dropped = self.pool.drop_area(area, record_remote=False)
        await self._drops.area(area)
        return dropped

    # -- the background work and the cluster's view --------------------------------------------

    def wake_spiller(self) -> None:
        """Ask the spiller to look at the pool's usage now."""
        self._spiller.wake()

    async def spill_forever(self) -> None:
        """Run the spiller until cancelled (owned by the node's TaskGroup)."""
        await self._spiller.run()

    async def spill_once(self) -> int:
        """Move cold pages out until usage is below the low watermark; returns pages moved."""
        return await self._spiller.once()

    async def repair(self, gone: set[str], leaving: set[str] | None = None) -> int:
        """Give every page that lost a copy on a gone or leaving holder a new one (see repair)."""
        return await self._repairer.repair(gone, leaving)

    async def move(self, source: str, target: str, max_pages: int) -> int:
        """Move up to `max_pages` copies from holder `source` to `target` (see repair)."""
        return await self._repairer.move(source, target, max_pages)

    def under_replicated(self, gone: set[str], leaving: set[str] | None = None) -> int:
        """Remote pages with a copy on a gone or leaving holder."""
        return self._repairer.under_replicated(gone, leaving)

    def inventory(self) -> dict[str, int]:
        """Pages this owner keeps on each holder (what the coordinator aggregates)."""
        return self._repairer.inventory()

    def holder_restarted(self, node: str, old_incarnation: str) -> None:
        """A holder came back as a new incarnation: the copies its old one held are gone."""
        self._tier.sets.bury(node, old_incarnation)
        log.warning("holder %s restarted: its copies count as lost", node)

    async def drop_orphans(self, alive: set[str]) -> int:
        """Drop, on holders that answer again, the copies re-replicated away from them."""
        return await self._drops.drop_orphans(alive)

    def orphans_pending(self) -> int:
        """Copies known to be orphaned on holders that have not answered since."""
        return self._drops.pending()

    def remote_statistics(self) -> dict[str, float]:
        """Counters of the remote tier, and fetch latency percentiles (microseconds)."""
        out: dict[str, float] = dict(self._tier.counters)
        out.update(self._fetcher.percentiles())
        return out
