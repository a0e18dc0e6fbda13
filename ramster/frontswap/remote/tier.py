"""The remote tier: the cluster's frontswap, whose cold pages spill to peers' RAM, R copies each.

`RemoteTier` is the composition root of one owner's remote tier. It builds the shared state
(`holders.Tier`), the drop queue, the copier, the spiller, the fetcher and the repairer, joins
its stores into the frontswap's chain (`stores`), and keeps the background work and the
cluster's view of this owner (repair, moves, inventory, holder restarts).

The local pool stays the one index for the owner: a page is either kept locally or recorded
as REMOTE with its version, checksum and holder set. The spiller copies the coldest pages to R
holders and frees the local copy only after all R acknowledged; loads of remote pages try the
holders one after another and verify version and checksum before returning.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ramster.frontswap.local import DEFAULT_MAX_AREAS, LocalFrontswap
from ramster.frontswap.remote.cache import ReadCache
from ramster.frontswap.remote.config import SpillConfig
from ramster.frontswap.remote.copies import Copier
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.fetch import Fetcher
from ramster.frontswap.remote.holders import Holders, Tier
from ramster.frontswap.remote.repair import Repairer
from ramster.frontswap.remote.spill import Spiller
from ramster.frontswap.remote.stores import Reclaiming, Spilled, WriteThrough
from ramster.frontswap.store import Chain, Stores, Versions
from ramster.pagestore import PagePool, PoolConfig
from ramster.types import Incarnation, NodeId

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


class RemoteTier:
    """One owner's frontswap over the local pool and, behind it, R remote holders per spilled
    page (`frontswap`), and the work that keeps those copies (the rest of this class)."""

    def __init__(
        self,
        config: PoolConfig,
        holders: Holders,
        spill: SpillConfig | None = None,
        max_areas: int = DEFAULT_MAX_AREAS,
        rng: random.Random | None = None,
        *,
        replicated: bool = False,
        version_base: int = 0,
        cache_bytes: int = 0,
    ) -> None:
        pool = PagePool(config)
        self.holders = holders
        self.spill_config = spill or SpillConfig()
        self.replicated = replicated
        """Every store goes to R holders (at least min_replicas) before it is acknowledged:
        the local pool keeps only the index (an export that must outlive this process)."""
        self.replicas_of: dict[int, int] = {}
        """Areas stored with more copies than R (a replicated export's small manifest)."""
        self.versions = Versions(version_base)  # an export's versions rise across its terms
        self._tier = Tier(pool, holders, self.spill_config, rng or random.Random())
        self._drops = DropQueue(self._tier)
        self._copier = Copier(self._tier, self._drops)
        self._spiller = Spiller(self._tier, self._drops, self._copier)
        self._fetcher = Fetcher(self._tier)
        self._repairer = Repairer(self._tier, self._fetcher, self._drops, self._copier)
        self._write_through: WriteThrough | None = None
        self.cache: ReadCache | None = None
        """Hot pages of a replicated area kept here too (its pool holds only the index)."""
        if replicated:
            if cache_bytes:
                self.cache = ReadCache(
                    PoolConfig(page_size=config.page_size, budget_bytes=cache_bytes)
                )
            spilled = self._spilled(cache=self.cache)
            self._write_through = WriteThrough(
                self._tier, spilled, self._drops, self.replicas_of, self.versions
            )
            stores = Stores(
                self._write_through,
                why_not_ephemeral="a replicated frontswap (an export's) has no ephemeral areas",
            )
        else:
            stores = Stores(
                Chain(
                    pool,
                    Reclaiming(self._tier, self._spiller, self._drops),
                    self._spilled(),
                    self._spiller.wake,
                ),
                Chain(
                    pool,
                    Reclaiming(self._tier, self._spiller, self._drops, ephemeral=True),
                    self._spilled(ephemeral=True),
                    self._spiller.wake,
                ),
            )
        self.frontswap = LocalFrontswap(
            config, max_areas, pool=pool, stores=stores, versions=self.versions
        )
        self.pool = pool

    def _spilled(self, *, ephemeral: bool = False, cache: ReadCache | None = None) -> Spilled:
        return Spilled(
            self._tier,
            self._copier,
            self._fetcher,
            self._drops,
            self.replicas_of,
            ephemeral=ephemeral,
            cache=cache,
        )

    @property
    def fenced(self) -> str | None:
        """Why a holder refused this owner as stale (another server took the export over)."""
        return self._tier.fenced

    def fence(self, by: str, why: str) -> None:
        """`by` says a newer server took this export over: stop acknowledging."""
        self._tier.fence(by, why)

    @property
    def version_limit(self) -> int:
        """No version above this is issued (see `start_versions_at`)."""
        return self.versions.limit

    def holder_set(self, ident: int) -> tuple[str, ...]:
        """The nodes of a holder-set number."""
        return self._tier.sets[ident]

    def adopt(self, area: int, groups: Sequence[tuple[tuple[str, ...], I64, U64, U64]]) -> int:
        """Record rebuilt pages of a replicated area as held remotely (see WriteThrough)."""
        assert self._write_through is not None, "only a replicated frontswap adopts pages"
        return self._write_through.adopt(area, groups)

    def start_versions_at(self, base: int, limit: int | None = None) -> None:
        """Issue versions above `base` from now on (an export's new term), and, if given,
        none above `limit` (where the next term's versions begin)."""
        self.versions.start_at(base, limit)

    def queue_drops(self, node: str, area: int, offsets: list[int], versions: list[int]) -> None:
        """Copies on a holder to be dropped (versioned), in the background."""
        # A holder named by an export's rebuild (its inventories are keyed by name yet).
        self._drops.enqueue([NodeId(node)], area, offsets, versions)

    # -- the background work and the cluster's view --------------------------------------------

    def wake_spiller(self) -> None:
        """Ask the spiller to look at the pool's usage now."""
        self._spiller.wake()

    async def spill_forever(self) -> None:
        """Run the spiller and the drop queue until cancelled (owned by the node's TaskGroup)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._spiller.run(), name="spiller")
            tg.create_task(self._drops.run(), name="drops")

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

    def holder_restarted(
        self, node: NodeId, old_incarnation: Incarnation, new: Incarnation | None = None
    ) -> None:
        """A holder came back as incarnation `new` (None: not said): the copies its old one
        held are gone."""
        # A repair or move may have put copies on the new incarnation before this owner heard
        # of the restart; burying the node makes those copies unreferenced: queue their drops
        # (a no-op where absent; a later put of a key there withdraws its drop first). For the
        # same reason the drops queued for it stay: a stray may have reached the new one too.
        landed = self.pool.remote_in_sets(self._tier.sets.touching({node}))
        if not self._tier.restarted(node, old_incarnation, new):
            return  # its new incarnation answered first: what is recorded there lives there
        by_area: dict[int, tuple[list[int], list[int]]] = {}
        for area, offset, version, _, _ in landed:
            keys = by_area.setdefault(area, ([], []))
            keys[0].append(offset)
            keys[1].append(version)
        for area, (offsets, versions) in by_area.items():
            self._drops.enqueue([node], area, offsets, versions)
        log.warning("holder %s restarted: its copies count as lost", node)

    def holder_reclaimed(self, node: NodeId, epoch: int) -> None:
        """A holder reclaimed this owner's pages: its copies count as lost (see Tier)."""
        self._tier.reclaimed(node, epoch)

    async def drop_orphans(self, alive: set[str]) -> int:
        """Deliver queued drops now (to live holders); how many were delivered."""
        return await self._drops.deliver()

    async def settle_drops(self, within: float = 10.0) -> bool:
        """Deliver drops until none is queued for a live holder; False if time ran out."""
        return await self._drops.settle(within)

    def orphans_pending(self) -> int:
        """Drops queued and not yet delivered (orphans on away holders included)."""
        return self._drops.pending()

    def remote_statistics(self) -> dict[str, float]:
        """Counters of the remote tier, and fetch latency percentiles (microseconds)."""
        out: dict[str, float] = dict(self._tier.counters)
        out.update(self._fetcher.percentiles())
        if self.cache is not None:
            out.update(self.cache.statistics())
        return out
