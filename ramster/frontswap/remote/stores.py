"""The cluster's stores, each one thing (see `frontswap.store` for the protocol and the chain):

- `Reclaiming`: the local pool, whose refused stores wait while cold pages spill out;
- `Spilled`: pages the pool records as held by R holders (stored straight there when the pool
  refuses them, loaded verified from them);
- `WriteThrough`: a replicated area's stores, acknowledged once R holders keep them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ramster.cluster.placement import choose_holders
from ramster.frontswap.remote.cache import ReadCache
from ramster.frontswap.remote.copies import Copier
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.fetch import Fetcher
from ramster.frontswap.remote.holders import SetMember, Tier, run_all
from ramster.frontswap.remote.spill import Spiller
from ramster.frontswap.store import Alive, Chain, Incoming, PoolStore, ReadsThrough, Versions
from ramster.types import Buffer, NodeId

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Placed = list[tuple[tuple[NodeId, ...], list[int], list[int]]]
"""(holders that kept, keys, versions) of each group a replicated store placed."""


class Reclaiming(ReadsThrough):
    """The local pool with direct reclaim: a store it refuses waits while cold pages move out
    to holders, then tries again (unless the area was invalidated meanwhile).

    An ephemeral area's store first tries without evicting: while the pool is short, cold
    pages move to peers' idle RAM first, when a peer has room; only then are colder ephemeral
    pages evicted here to make room.
    """

    def __init__(
        self, tier: Tier, spiller: Spiller, drops: DropQueue, *, ephemeral: bool = False
    ) -> None:
        self._t = tier
        self._spiller = spiller
        self._drops = drops
        self._ephemeral = ephemeral
        self.reads = PoolStore(tier.pool)

    async def put(
        self, area: int, offs: I64, pages: Incoming, versions: Sequence[int], alive: Alive
    ) -> list[bool]:
        """Keep pages in the pool, reclaiming room by spilling if it refuses them."""
        pool = self._t.pool
        try:
            ok = pages.keep(pool, area, offs, versions, not self._ephemeral)
            missing = [i for i, flag in enumerate(ok) if not flag]
            if not missing:
                return ok
            if self._ephemeral:
                if self._t.candidates():
                    await self._spiller.once()
                retry = alive()
            else:
                retry = bool(await self._spiller.once()) and alive()
            if retry:
                retried = pages.take(missing).keep(
                    pool, area, offs[missing], [versions[i] for i in missing], True
                )
                for i, flag in zip(missing, retried, strict=True):
                    ok[i] = flag
            return ok
        finally:
            # The old copies of overwritten keys, even when the call was cancelled.
            self._drops.collect()


class Spilled:
    """Pages the pool records as held remotely: stored straight on R holders (at least
    min_replicas) when the pool refuses them, and loaded from them verified.

    An ephemeral area's pages reach holders only by spilling, never on the store path; a load
    that finds no copy is a miss, and the record of the page goes.
    """

    def __init__(
        self,
        tier: Tier,
        copier: Copier,
        fetcher: Fetcher,
        drops: DropQueue,
        replicas_of: Mapping[int, int],
        *,
        ephemeral: bool = False,
        cache: ReadCache | None = None,
    ) -> None:
        self._t = tier
        self._copier = copier
        self._fetcher = fetcher
        self._drops = drops
        self._replicas_of = replicas_of
        self._ephemeral = ephemeral
        self.cache = cache

    async def put(
        self, area: int, offs: I64, pages: Incoming, versions: Sequence[int], alive: Alive
    ) -> list[bool]:
        """Store the pages on holders (never an ephemeral area's)."""
        if self._ephemeral:
            return [False] * len(offs)
        try:
            payloads, sums = pages.encoded(self._t.pool.config)
            return await self.store(area, offs, payloads, sums, list(versions), alive)
        finally:
            self._drops.collect()

    async def store(
        self,
        area: int,
        offs: I64,
        payloads: list[bytes],
        sums: list[int],
        versions: list[int],
        alive: Alive,
        nodes: Sequence[NodeId] | None = None,
        record: Placed | None = None,
    ) -> list[bool]:
        """Store pages (in stored form) on up to R holders (at least min_replicas of them), or
        on the given nodes, and record them in the pool where the key is still absent."""
        t = self._t
        cfg = t.config
        n = len(payloads)
        need = sum(len(p) for p in payloads)
        replicas = self._replicas_of.get(area, cfg.replicas)
        if nodes is None:
            nodes = choose_holders(t.candidates(), replicas, need, t.rng, minimum=cfg.min_replicas)
        if not nodes:
            t.counters["direct_remote_refused"] += n
            t.warn_no_holders()
            return [False] * n
        keys = offs.tolist()
        kept_by = await self._copier.put(nodes, area, keys, versions, sums, payloads)
        ok = [False] * n
        if alive():
            # Only where the key is still absent: a newer store may have landed meanwhile.
            placed = [i for i in range(n) if len(kept_by[i]) >= cfg.min_replicas]
            current = t.pool.versions(area, [keys[i] for i in placed])
            groups: dict[tuple[NodeId, ...], list[int]] = {}
            for i, v in zip(placed, current, strict=True):
                if v is None:
                    groups.setdefault(kept_by[i], []).append(i)
            for kept, idx in groups.items():
                if record is not None:
                    record.append((kept, [keys[i] for i in idx], [versions[i] for i in idx]))
                recorded = t.pool.put_remote(
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

    async def get(self, area: int, offs: I64, exclusive: bool) -> list[bytes | None]:
        """Remote pages (never freed here: `Chain` frees what it read)."""
        return (await self.get_versioned(area, offs))[0]

    async def get_versioned(
        self, area: int, offs: I64
    ) -> tuple[list[bytes | None], list[int | None]]:
        """Remote pages, verified, from the read cache or their holders, with their versions."""
        pages: list[bytes | None] = [None] * len(offs)
        versions: list[int | None] = [None] * len(offs)
        entries = self._t.pool.remote_entries(area, offs)
        for i, version, _, _ in entries:
            versions[i] = version
        cache = self.cache
        if entries and cache is not None:
            where = [e[0] for e in entries]
            hits = cache.get(area, offs[where], [e[1] for e in entries])
            for j, hit in hits.items():
                pages[where[j]] = hit
            entries = [e for j, e in enumerate(entries) if j not in hits]
        if entries:
            fetched = await self._fetcher.fetch(area, offs, entries, partial=self._ephemeral)
            for i, page in fetched.items():
                pages[i] = bytes(page)  # verified pages are bytes already: no copy
            if self._ephemeral:
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

    async def get_stored(self, area: int, offs: I64) -> list[tuple[int, Buffer] | None]:
        """(checksum, stored payload) of remote pages; only the version is checked."""
        out: list[tuple[int, Buffer] | None] = [None] * len(offs)
        entries = self._t.pool.remote_entries(area, offs)
        if entries:
            sums = {i: sum_ for i, _, sum_, _ in entries}
            fetched = await self._fetcher.fetch(
                area, offs, entries, verify=False, partial=self._ephemeral
            )
            for i, payload in fetched.items():
                out[i] = (sums[i], payload)
            if self._ephemeral:
                self._forget_misses(area, offs, entries, fetched)
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
        self._t.counters["ephemeral_misses"] += len(missed)
        self._t.pool.evict_keys(
            area, offs[[i for i, _ in missed]], [v for _, v in missed], count=False
        )
        self._drops.collect()

    async def drop(self, area: int, offs: I64) -> None:
        """Send the drops of the remote copies the pool forgot (and forget cached pages)."""
        if self.cache is not None:
            self.cache.drop(area, offs)
        self._drops.collect()

    async def drop_area(self, area: int, max_version: int) -> int:
        """Every holder forgets the area's pages up to max_version (counted by the pool)."""
        if self.cache is not None:
            self.cache.drop_area(area)
        self._drops.enqueue_area(area, max_version)
        return 0


class WriteThrough(ReadsThrough):
    """A replicated area: every store goes to R holders (at least min_replicas) before it is
    acknowledged; the pool keeps only the index (an export that must outlive this process)."""

    def __init__(
        self,
        tier: Tier,
        spilled: Spilled,
        drops: DropQueue,
        replicas_of: Mapping[int, int],
        versions: Versions,
    ) -> None:
        self._t = tier
        self._spilled = spilled
        self._drops = drops
        self._replicas_of = replicas_of
        self._versions = versions
        self.reads = Chain(tier.pool, PoolStore(tier.pool), spilled)

    async def put(
        self, area: int, offs: I64, pages: Incoming, versions: Sequence[int], alive: Alive
    ) -> list[bool]:
        """Store on the holders of each key's old copy (or new ones); True once held."""
        n = len(offs)
        pool = self._t.pool
        try:
            # The old copies go first (their drops are versioned: the new ones stay), so that a
            # refused store leaves no stale page behind, as the contract says.
            payloads, sums = pages.encoded(pool.config)
            groups = self._sticky_groups(area, offs)
            pool.drop_many(area, offs)
            # The old copies' drops, taken before anyone collects them: where a holder replaced
            # its copy with the new version in place, there is nothing to drop.
            old = pool.drain_remote_drops()
            placed: Placed = []
            ok = [False] * n

            async def group(idx: list[int], nodes: tuple[NodeId, ...] | None) -> None:
                stored = await self._spilled.store(
                    area,
                    offs[idx],
                    [payloads[i] for i in idx],
                    [sums[i] for i in idx],
                    [versions[i] for i in idx],
                    alive,
                    nodes,
                    placed,
                )
                for i, flag in zip(idx, stored, strict=True):
                    ok[i] = flag

            try:
                await run_all(group(idx, nodes) for nodes, idx in groups.items())
            finally:
                self._drop_replaced(area, old, placed)
            cache = self._spilled.cache
            if cache is not None:
                done = [i for i in range(n) if ok[i]]
                cache.put_stored(
                    area,
                    offs[done],
                    [payloads[i] for i in done],
                    [versions[i] for i in done],
                    [sums[i] for i in done],
                )
            return ok
        finally:
            self._drops.collect()

    def _drop_replaced(
        self, area: int, old: list[tuple[int, int, int, int]], placed: Placed
    ) -> None:
        """Queue the drops of old copies, but not on holders that now keep a newer version of
        the same key (they replaced it in place)."""
        newer: dict[int, set[NodeId]] = {}
        for kept, keys, _ in placed:
            for key in keys:
                newer[key] = set(kept)
        batches: dict[tuple[tuple[SetMember, ...], int], tuple[list[int], list[int]]] = {}
        sets = self._t.sets
        for set_id, drop_area, offset, version in old:
            skip = newer.get(offset, set()) if drop_area == area else set()
            nodes = tuple(n for n in sets[set_id] if n not in skip)
            if nodes:
                offsets, versions = batches.setdefault((nodes, drop_area), ([], []))
                offsets.append(offset)
                versions.append(version)
        for (nodes, drop_area), (offsets, versions) in batches.items():
            self._drops.enqueue(nodes, drop_area, offsets, versions)

    def _sticky_groups(self, area: int, offs: I64) -> dict[tuple[NodeId, ...] | None, list[int]]:
        """Keys grouped by where they go: an overwrite goes to the live holders of the copy it
        replaces (each replaces it in place, so no older copy lingers there), topped up to R
        from the others; new keys to a new choice (None)."""
        t = self._t
        candidates = t.candidates()
        live = {c.node for c in candidates}
        replicas = self._replicas_of.get(area, t.config.replicas)
        chosen: dict[int, tuple[NodeId, ...] | None] = {}
        groups: dict[tuple[NodeId, ...] | None, list[int]] = {}
        where = {i: sid for i, _, _, sid in t.pool.remote_entries(area, offs)}
        for i in range(len(offs)):
            sid = where.get(i)
            if sid is not None and sid not in chosen:
                keep = tuple(NodeId(n) for n in t.sets[sid] if n in live)  # live: a holder
                if keep and len(keep) < replicas:
                    others = [c for c in candidates if c.node not in keep]
                    extra = choose_holders(others, replicas - len(keep), 0, t.rng, minimum=1)
                    keep += tuple(extra)
                chosen[sid] = keep or None
            groups.setdefault(None if sid is None else chosen[sid], []).append(i)
        return groups

    def adopt(self, area: int, groups: Sequence[tuple[tuple[str, ...], I64, U64, U64]]) -> int:
        """Record rebuilt pages as held remotely: (holders, offsets, versions, checksums) per
        holder set; returns pages recorded. Later versions of this owner are newer."""
        recorded = 0
        for nodes, offs, versions, sums in groups:
            if not len(offs):
                continue
            # Holders named by the rebuild's inventories (keyed by name yet).
            ident = self._t.sets.intern(tuple(NodeId(n) for n in nodes))
            ok = self._t.pool.put_remote(
                area, offs, [int(v) for v in versions], [int(s) for s in sums], ident
            )
            recorded += sum(ok)
            self._versions.seen(int(np.max(versions)))
        return recorded
