"""The remote tier: frontswap whose cold pages spill to peers' RAM, R copies each.

The local pool stays the one source of truth for the owner: a page is either kept locally or
recorded as REMOTE with its version, checksum and holder set. The spiller copies the coldest
pages to R holders and frees the local copy only after all R acknowledged; loads of remote
pages try the holders one after another and verify version and checksum before returning.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ramster.cluster.placement import choose_holders
from ramster.errors import InvalidPage
from ramster.frontswap.local import DEFAULT_MAX_AREAS, LocalFrontswap
from ramster.frontswap.remote.cache import ReadCache
from ramster.frontswap.remote.config import SpillConfig
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.fetch import Fetcher
from ramster.frontswap.remote.holders import Holders, Tier, run_all
from ramster.frontswap.remote.repair import Repairer
from ramster.frontswap.remote.spill import Spiller
from ramster.pagestore import PoolConfig, checksum, encode
from ramster.types import Buffer

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


class ClusterFrontswap(LocalFrontswap):
    """frontswap over the local pool and, behind it, R remote holders per spilled page."""

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
        super().__init__(config, max_areas)
        self.cache = (
            ReadCache(PoolConfig(page_size=config.page_size, budget_bytes=cache_bytes))
            if replicated and cache_bytes
            else None
        )
        """Hot pages of a replicated area kept here too (its pool holds only the index)."""
        self.replicated = replicated
        """Every store goes to R holders (at least min_replicas) before it is acknowledged:
        the local pool keeps only the index (an export that must outlive this process)."""
        self._version = version_base  # an export's versions rise across its terms
        self.version_limit = (1 << 63) - 1
        """No version above this is issued (the end of an export term's range, see
        `start_versions_at`): a store that would need one is refused, and the old copies of
        its keys are dropped as for any refused store."""
        self._versions_refused = 0
        self.replicas_of: dict[int, int] = {}
        """Areas stored with more copies than R (a replicated export's small manifest)."""
        self.fenced: str | None = None
        """Why a holder refused this owner as stale (another server took the export over)."""
        self.holders = holders
        self.spill_config = spill or SpillConfig()
        self._tier = Tier(self.pool, holders, self.spill_config, rng or random.Random())
        self._drops = DropQueue(self._tier)
        self._tier.strays = self._drops.enqueue
        self._tier.before_put = self._drops.before_put
        self._tier.reclaimed = self.holder_reclaimed
        self._tier.fenced = self._fenced
        self._spiller = Spiller(self._tier, self._drops)
        self._fetcher = Fetcher(self._tier)
        self._repairer = Repairer(self._tier, self._fetcher, self._drops)
        self._reclaims = 0
        self._reclaim_epochs: dict[str, int] = {}

    def _check_kind(self, kind: str) -> None:
        if kind == "ephemeral" and self.replicated:
            raise InvalidPage("a replicated frontswap (an export's) has no ephemeral areas")

    def holder_set(self, ident: int) -> tuple[str, ...]:
        """The nodes of a holder-set number."""
        return self._tier.sets[ident]

    # -- stores --------------------------------------------------------------------------------

    async def _put(self, area: int, offs: I64, pages: list[bytes | bytearray]) -> list[bool]:
        cfg = self.pool.config

        def local(idx: list[int], versions: list[int], evict: bool = True) -> list[bool]:
            return self.pool.put_many(area, offs[idx], [pages[i] for i in idx], versions, evict)

        def encoded(idx: list[int]) -> tuple[list[bytes], list[int]]:
            return [encode(pages[i], cfg) for i in idx], [checksum(pages[i]) for i in idx]

        return await self._put_with(area, offs, local, encoded)

    async def _put_encoded(
        self, area: int, offs: I64, payloads: list[bytes | memoryview], sums: list[int]
    ) -> list[bool]:
        def local(idx: list[int], versions: list[int], evict: bool = True) -> list[bool]:
            return self.pool.put_stored_many(
                area,
                offs[idx],
                [payloads[i] for i in idx],
                versions,
                [sums[i] for i in idx],
                evict,
            )

        def encoded(idx: list[int]) -> tuple[list[bytes], list[int]]:
            return [bytes(payloads[i]) for i in idx], [sums[i] for i in idx]

        return await self._put_with(area, offs, local, encoded)

    async def _put_with(
        self,
        area: int,
        offs: I64,
        local: Callable[[list[int], list[int], bool], list[bool]],
        encoded: Callable[[list[int]], tuple[list[bytes], list[int]]],
    ) -> list[bool]:
        """Store locally; if refused, reclaim by spilling and retry; else straight to holders."""
        n = len(offs)
        generation = self.generation(area)
        if self._version + n > self.version_limit:
            # Every version this term may issue is used: one more would be a version of the
            # next term (or past the wire's limit). Refused; the old copies go, as for any
            # refused store: stale bytes never come back.
            if not self._versions_refused:
                log.error(
                    "versions used up (%d of at most %d): stores refused until a new term",
                    self._version,
                    self.version_limit,
                )
            self._versions_refused += n
            await self._drop(area, offs)
            return [False] * n
        versions = list(self._new_versions(n))
        if area in self._ephemeral:
            # Kept here or not at all. While the pool is short, cold pages move to peers'
            # idle RAM first (ephemeral ones with one copy), when a peer has room; only then
            # are colder ephemeral pages evicted here to make room.
            try:
                ok = local(list(range(n)), versions, False)
                missing = [i for i, flag in enumerate(ok) if not flag]
                if missing:
                    if self._tier.candidates():
                        await self._spiller.once()
                    if self.generation(area) == generation:
                        retried = local(missing, [versions[i] for i in missing], True)
                        for i, flag in zip(missing, retried, strict=True):
                            ok[i] = flag
            finally:
                self._drops.collect()
            self._spiller.wake()
            return ok
        if self.replicated:
            try:
                # The old copies go first (their drops are versioned: the new ones stay), so
                # that a refused store leaves no stale page behind, as the contract says.
                payloads, sums = encoded(list(range(n)))
                groups = self._sticky_groups(area, offs)
                self.pool.drop_many(area, offs)
                # The old copies' drops, taken before anyone collects them: where a holder
                # replaced its copy with the new version in place, there is nothing to drop.
                old = self.pool.drain_remote_drops()
                # (holders that kept, keys, versions) of each group stored:
                placed: list[tuple[tuple[str, ...], list[int], list[int]]] = []
                ok = [False] * n

                async def group(idx: list[int], nodes: tuple[str, ...] | None) -> None:
                    stored = await self._store_remote(
                        area,
                        offs[idx],
                        [payloads[i] for i in idx],
                        [sums[i] for i in idx],
                        [versions[i] for i in idx],
                        generation,
                        nodes,
                        placed,
                    )
                    for i, flag in zip(idx, stored, strict=True):
                        ok[i] = flag

                try:
                    await run_all(group(idx, nodes) for nodes, idx in groups.items())
                finally:
                    self._drop_replaced(area, old, placed)
                if self.cache is not None:
                    done = [i for i in range(n) if ok[i]]
                    self.cache.put_stored(
                        area,
                        offs[done],
                        [payloads[i] for i in done],
                        [versions[i] for i in done],
                        [sums[i] for i in done],
                    )
                return ok
            finally:
                self._drops.collect()
        try:
            ok = local(list(range(n)), versions, True)
            missing = [i for i, flag in enumerate(ok) if not flag]
            if missing and await self._spiller.once() and self.generation(area) == generation:
                # Direct reclaim: the writer waits while cold pages move out, then tries again
                # (unless the area was invalidated meanwhile: nothing of it may come back).
                retried = local(missing, [versions[i] for i in missing], True)
                for i, flag in zip(missing, retried, strict=True):
                    ok[i] = flag
                missing = [i for i, flag in enumerate(ok) if not flag]
            if missing and self.generation(area) == generation:
                payloads, sums = encoded(missing)
                stored = await self._store_remote(
                    area, offs[missing], payloads, sums, [versions[i] for i in missing], generation
                )
                for i, flag in zip(missing, stored, strict=True):
                    ok[i] = flag
        finally:
            # The old copies of overwritten keys, even when the call was cancelled.
            self._drops.collect()
        self._spiller.wake()
        return ok

    def _drop_replaced(
        self,
        area: int,
        old: list[tuple[int, int, int, int]],
        placed: list[tuple[tuple[str, ...], list[int], list[int]]],
    ) -> None:
        """Queue the drops of old copies, but not on holders that now keep a newer version of
        the same key (they replaced it in place)."""
        newer: dict[int, set[str]] = {}
        for kept, keys, _ in placed:
            for key in keys:
                newer[key] = set(kept)
        batches: dict[tuple[tuple[str, ...], int], tuple[list[int], list[int]]] = {}
        sets = self._tier.sets
        for set_id, drop_area, offset, version in old:
            skip = newer.get(offset, set()) if drop_area == area else set()
            nodes = tuple(n for n in sets[set_id] if n not in skip)
            if nodes:
                offsets, versions = batches.setdefault((nodes, drop_area), ([], []))
                offsets.append(offset)
                versions.append(version)
        for (nodes, drop_area), (offsets, versions) in batches.items():
            self._drops.enqueue(nodes, drop_area, offsets, versions)

    def _sticky_groups(self, area: int, offs: I64) -> dict[tuple[str, ...] | None, list[int]]:
        """Keys of a replicated store grouped by where they go: an overwrite goes to the live
        holders of the copy it replaces (each replaces it in place, so no older copy lingers
        there), topped up to R from the others; new keys to a new choice (None)."""
        t = self._tier
        candidates = t.candidates()
        live = {c.node for c in candidates}
        replicas = self.replicas_of.get(area, t.config.replicas)
        chosen: dict[int, tuple[str, ...] | None] = {}
        groups: dict[tuple[str, ...] | None, list[int]] = {}
        where = {i: sid for i, _, _, sid in self.pool.remote_entries(area, offs)}
        for i in range(len(offs)):
            sid = where.get(i)
            if sid is not None and sid not in chosen:
                keep = tuple(n for n in t.sets[sid] if n in live)
                if keep and len(keep) < replicas:
                    others = [c for c in candidates if c.node not in keep]
                    extra = choose_holders(others, replicas - len(keep), 0, t.rng, minimum=1)
                    keep += tuple(extra)
                chosen[sid] = keep or None
            groups.setdefault(None if sid is None else chosen[sid], []).append(i)
        return groups

    async def _store_remote(
        self,
        area: int,
        offs: I64,
        payloads: list[bytes],
        sums: list[int],
        versions: list[int],
        generation: int,
        nodes: Sequence[str] | None = None,
        record: list[tuple[tuple[str, ...], list[int], list[int]]] | None = None,
    ) -> list[bool]:
        """Store pages (in stored form) the local pool refused straight on up to R holders
        (at least min_replicas of them), or on the given nodes."""
        t = self._tier
        cfg = t.config
        n = len(payloads)
        need = sum(len(p) for p in payloads)
        replicas = self.replicas_of.get(area, cfg.replicas)
        if nodes is None:
            nodes = choose_holders(t.candidates(), replicas, need, t.rng, minimum=cfg.min_replicas)
        if not nodes:
            t.counters["direct_remote_refused"] += n
            t.warn_no_holders()
            return [False] * n
        keys = offs.tolist()
        kept_by = await t.put_everywhere(nodes, area, keys, versions, sums, payloads)
        ok = [False] * n
        if self.generation(area) == generation and area in self._areas:
            # Only where the key is still absent: a newer store may have landed meanwhile.
            placed = [i for i in range(n) if len(kept_by[i]) >= cfg.min_replicas]
            current = self.pool.versions(area, [keys[i] for i in placed])
            groups: dict[tuple[str, ...], list[int]] = {}
            for i, v in zip(placed, current, strict=True):
                if v is None:
                    groups.setdefault(kept_by[i], []).append(i)
            for kept, idx in groups.items():
                if record is not None:
                    record.append((kept, [keys[i] for i in idx], [versions[i] for i in idx]))
                recorded = self.pool.put_remote(
                    area,
                    [keys[i] for i in idx],
                    [versions[i] for i in idx],
                    [sums[i] for i in idx],
                    t.sets.intern(kept),
                )
                for i, flag in zip(idx, recorded, strict=True):
                    ok[i] = flag
                if len(kept) < min(replicas, cfg.replicas):
                    t.counters["under_replicated_stores"] += sum(recorded)
        stray = [i for i in range(n) if not ok[i]]
        for i in stray:
            if kept_by[i]:
                self._drops.enqueue(kept_by[i], area, [keys[i]], [versions[i]])
        t.counters["direct_remote_stores"] += n - len(stray)
        t.counters["direct_remote_refused"] += len(stray)
        return ok

    def adopt(self, area: int, groups: Sequence[tuple[tuple[str, ...], I64, U64, U64]]) -> int:
        """Record rebuilt pages as held remotely: (holders, offsets, versions, checksums) per
        holder set; returns pages recorded. Later versions of this owner are newer."""
        recorded = 0
        for nodes, offs, versions, sums in groups:
            if not len(offs):
                continue
            ident = self._tier.sets.intern(tuple(nodes))
            ok = self.pool.put_remote(
                area, offs, [int(v) for v in versions], [int(s) for s in sums], ident
            )
            recorded += sum(ok)
            self._version = max(self._version, int(np.max(versions)))
        return recorded

    def start_versions_at(self, base: int, limit: int | None = None) -> None:
        """Issue versions above `base` from now on (an export's new term), and, if given,
        none above `limit` (where the next term's versions begin)."""
        self._version = max(self._version, base)
        if limit is not None:
            self.version_limit = limit

    def queue_drops(self, node: str, area: int, offsets: list[int], versions: list[int]) -> None:
        """Copies on a holder to be dropped (versioned), in the background."""
        self._drops.enqueue([node], area, offsets, versions)

    def _fenced(self, node: str, why: str) -> None:
        if self.fenced is None:
            self.fenced = why
            log.error("holder %s fenced this owner: %s", node, why)

    # -- loads -----------------------------------------------------------------------------------

    async def _get_versioned(
        self, area: int, offs: I64
    ) -> tuple[list[bytes | None], list[int | None]]:
        pages = self.pool.get_many(area, offs, False)
        versions = self.pool.versions(area, offs)  # no await between: the same moment
        if None not in pages:
            return pages, versions
        entries = self.pool.remote_entries(area, offs)
        cache = self.cache
        if entries and cache is not None:
            where = [e[0] for e in entries]
            hits = cache.get(area, offs[where], [e[1] for e in entries])
            for j, hit in hits.items():
                pages[where[j]] = hit
            entries = [e for j, e in enumerate(entries) if j not in hits]
        if entries:
            ephemeral = area in self._ephemeral
            fetched = await self._fetcher.fetch(area, offs, entries, partial=ephemeral)
            for i, page in fetched.items():
                pages[i] = bytes(page)  # verified pages are bytes already: no copy
            if ephemeral:
                self._forget_misses(area, offs, entries, fetched)
            if cache is not None and fetched:
                got = [e for e in entries if e[0] in fetched]
                cache.put(
                    area,
                    offs[[e[0] for e in got]],
                    [bytes(fetched[e[0]]) for e in got],
                    [e[1] for e in got],
                )
        return pages, versions

    async def _get(self, area: int, offs: I64, exclusive: bool) -> list[bytes | None]:
        if not exclusive:
            return (await self._get_versioned(area, offs))[0]
        # Read everything first, then free in one synchronous step: a fetch that fails or is
        # cancelled frees nothing, and a key stored again meanwhile keeps its newer copy.
        pages, versions = await self._get_versioned(area, offs)
        now = self.pool.versions(area, offs)
        done = [
            i
            for i, (page, before, after) in enumerate(zip(pages, versions, now, strict=True))
            if page is not None and before is not None and before == after
        ]
        if done:
            self.pool.note_exclusive(len(done))
            self.pool.drop_many(area, offs[done])
            self._drops.collect()
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
            if area in self._ephemeral:
                self.count_gets(out)
            return out
        entries = self.pool.remote_entries(area, offs)
        if entries:
            sums = {i: sum_ for i, _, sum_, _ in entries}
            ephemeral = area in self._ephemeral
            fetched = await self._fetcher.fetch(
                area, offs, entries, verify=False, partial=ephemeral
            )
            for i, payload in fetched.items():
                out[i] = (sums[i], payload)
            if ephemeral:
                self._forget_misses(area, offs, entries, fetched)
        if area in self._ephemeral:
            self.count_gets(out)
        return out

    def _forget_misses(
        self,
        area: int,
        offs: I64,
        entries: list[tuple[int, int, int, int]],
        fetched: Mapping[int, object],
    ) -> None:
        """Ephemeral pages no holder had (evicted there, or the holder is gone): a miss, and
        the record of them goes too, unless a newer store replaced it meanwhile."""
        missed = [(i, version) for i, version, _, _ in entries if i not in fetched]
        if not missed:
            return
        self._tier.counters["ephemeral_misses"] += len(missed)
        self.pool.evict_keys(
            area, offs[[i for i, _ in missed]], [v for _, v in missed], count=False
        )
        self._drops.collect()

    # -- invalidation ----------------------------------------------------------------------------

    async def _drop(self, area: int, offs: I64) -> None:
        self.pool.drop_many(area, offs)
        if self.cache is not None:
            self.cache.drop(area, offs)
        self._drops.collect()

    async def _drop_area(self, area: int) -> int:
        dropped = self.pool.drop_area(area, record_remote=False)
        if self.cache is not None:
            self.cache.drop_area(area)
        # Every page of the area so far has a version up to the counter's: later ones are newer.
        self._drops.enqueue_area(area, self._version)
        return dropped

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

    def holder_restarted(self, node: str, old_incarnation: str) -> None:
        """A holder came back as a new incarnation: the copies its old one held are gone."""
        # A repair or move may have put copies on the new incarnation before this owner heard
        # of the restart; burying the node makes those copies unreferenced: queue their drops
        # (a no-op where absent; a later put of a key there withdraws its drop first).
        landed = self.pool.remote_in_sets(self._tier.sets.touching({node}))
        self._tier.sets.bury(node, old_incarnation)
        self._drops.forget_node(node)
        by_area: dict[int, tuple[list[int], list[int]]] = {}
        for area, offset, version, _, _ in landed:
            keys = by_area.setdefault(area, ([], []))
            keys[0].append(offset)
            keys[1].append(version)
        for area, (offsets, versions) in by_area.items():
            self._drops.enqueue([node], area, offsets, versions)
        self._reclaim_epochs.pop(node, None)  # a new incarnation counts its reclaims anew
        log.warning("holder %s restarted: its copies count as lost", node)

    def holder_reclaimed(self, node: str, epoch: int) -> None:
        """A holder reclaimed this owner's pages (it did not hear from it for longer than its
        owner grace): the copies there are gone; repair gives those pages new ones.

        Told twice (a refused call and the heartbeat), the same reclaim (epoch) counts once:
        copies put there after the first telling are real."""
        if epoch and epoch <= self._reclaim_epochs.get(node, 0):
            return
        if epoch:
            self._reclaim_epochs[node] = epoch
        self._reclaims += 1
        # Its queued drops stay: copies it took in late (requests it read after the reclaim)
        # are still there to be dropped.
        self._tier.sets.bury(node, f"reclaimed{self._reclaims}")
        self._tier.counters["holders_reclaimed"] += 1
        log.error("holder %s reclaimed this node's pages: its copies count as lost", node)

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
