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
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ramster.cluster.placement import Candidate, choose_holders
from ramster.errors import PageUnavailable, RamsterError
from ramster.frontswap.local import DEFAULT_MAX_AREAS, LocalFrontswap
from ramster.pagestore import ColdPage, PoolConfig, checksum, encode, expand
from ramster.pagestore.lent import Stored
from ramster.types import Buffer

log = logging.getLogger(__name__)

"""(version, checksum, payload) as a holder returns it."""

I64 = npt.NDArray[np.int64]
NO_HOLDER_WARN_EVERY = 30.0
"""Seconds between warnings that no R holders can be found (one line, not a flood)."""
LATENCY_SAMPLES = 8192
"""Remote fetch latencies kept for percentiles: the recent past, bounded."""


class Holders(Protocol):
    """What the remote tier needs from the cluster: who can hold pages, and calls to them."""

    def candidates(self) -> list[Candidate]:
        """Live peers with the lent capacity they last reported."""
        ...

    def all_holders(self) -> list[str]:
        """Every peer that may hold pages of this node."""
        ...

    async def put(
        self,
        node: str,
        areas: list[int],
        offsets: list[int],
        versions: list[int],
        checksums: list[int],
        payloads: Sequence[Buffer],
    ) -> list[bool]:
        """Ask `node` to keep pages; True for each page it kept."""
        ...

    async def get(self, node: str, areas: list[int], offsets: list[int]) -> Sequence[Stored | None]:
        """The pages `node` holds among the keys, None where it holds none."""
        ...

    async def copy(
        self,
        source: str,
        target: str,
        areas: list[int],
        offsets: list[int],
        versions: list[int],
        checksums: list[int],
    ) -> tuple[list[bool], int]:
        """Have `source` verify its copies (version and checksum) and put them on `target`:
        True for each page the target kept, and the bytes sent."""
        ...

    async def drop(
        self, node: str, areas: list[int], offsets: list[int], versions: list[int]
    ) -> None:
        """Ask `node` to forget copies no newer than the given versions."""

    async def drop_area(self, node: str, area: int) -> None:
        """Ask `node` to forget every page of one area of this node."""


@dataclass(frozen=True, slots=True)
class SpillConfig:
    """How the remote tier behaves; fractions are of the local budget, times in seconds."""

    replicas: int = 2
    high_watermark: float = 0.85
    low_watermark: float = 0.70
    batch_pages: int = 256
    """Pages per spill call: enough to amortise a round trip, small enough to stay responsive."""
    depth: int = 4
    """Spill batches in flight at once."""
    retry_delay: float = 0.2
    """Pause before trying again when no holder could take a batch."""
    repair_batch_pages: int = 256
    """Pages per re-replication or move batch. Measured (benchmarks/recovery.py): 1024-page
    batches, 6 in flight, were no faster but raised a foreground load's p99 from 2 to 138 ms;
    256 x 4 keeps it near 20 ms."""
    repair_depth: int = 4
    """Re-replication batches in flight at once."""
    direct_copy: bool = True
    """Re-replicate holder to holder (the surviving holder verifies and sends) rather than
    through the owner; pages a direct copy misses still go through the owner."""
    repair_pause: float = 0.0
    """Pause after each re-replication batch; 0 still yields, so foreground calls get their
    turn between batches."""


def _rotated(nodes: tuple[str, ...], first: int) -> tuple[str, ...]:
    return nodes[first:] + nodes[:first]


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
        self._rng = rng or random.Random()
        self._sets: list[tuple[str, ...]] = []
        self._set_ids: dict[tuple[str, ...], int] = {}
        self._spill_wanted = asyncio.Event()
        self._spill_lock = asyncio.Lock()
        self._fetch_us: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._warned_at = -NO_HOLDER_WARN_EVERY
        self._tombstones: set[str] = set()
        self._orphans: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        self._orphan_lock = asyncio.Lock()
        self._c = dict.fromkeys(
            (
                "spilled_pages",
                "spill_batches",
                "recovery_bytes",
                "direct_copies",
                "direct_copy_failures",
                "pages_unreadable",
                "spill_refused",
                "spill_no_holders",
                "direct_remote_stores",
                "direct_remote_refused",
                "remote_loads",
                "remote_bad_copies",
                "remote_unreachable",
                "remote_unavailable",
                "drops_sent",
                "drop_failures",
                "repaired_pages",
                "orphans_dropped",
                "rebalanced_pages",
                "pages_lost",
            ),
            0,
        )

    # -- holder sets ---------------------------------------------------------------------------

    def _set_id(self, nodes: Sequence[str]) -> int:
        key = tuple(nodes)
        ident = self._set_ids.get(key)
        if ident is None:
            ident = len(self._sets)
            self._sets.append(key)
            self._set_ids[key] = ident
        return ident

    def holder_set(self, ident: int) -> tuple[str, ...]:
        """The nodes of a holder-set number."""
        return self._sets[ident]

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
        if missing and await self.spill_once():
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
        self.wake_spiller()
        await self._flush_drops()
        return ok

    async def _store_remote(
        self, area: int, offs: I64, payloads: list[bytes], sums: list[int], versions: list[int]
    ) -> list[bool]:
        """Store pages (in stored form) the local pool refused straight on R holders."""
        n = len(payloads)
        need = sum(len(p) for p in payloads)
        nodes = choose_holders(
            self.holders.candidates(), self.spill_config.replicas, need, self._rng
        )
        if not nodes:
            self._c["direct_remote_refused"] += n
            self._warn_no_holders()
            return [False] * n
        keys = offs.tolist()
        acked = await self._put_everywhere(nodes, area, keys, versions, sums, payloads)
        placed = [i for i in range(n) if acked[i]]
        # Only where the key is still absent: a newer store may have landed meanwhile.
        current = self.pool.versions(area, [keys[i] for i in placed])
        placed = [i for i, v in zip(placed, current, strict=True) if v is None]
        recorded = self.pool.put_remote(
            area,
            [keys[i] for i in placed],
            [versions[i] for i in placed],
            [sums[i] for i in placed],
            self._set_id(nodes),
        )
        ok = [False] * n
        for i, flag in zip(placed, recorded, strict=True):
            ok[i] = flag
        stray = [i for i in range(n) if not ok[i]]
        if stray:
            await self._drop_on(nodes, area, [keys[i] for i in stray], [versions[i] for i in stray])
        self._c["direct_remote_stores"] += n - len(stray)
        self._c["direct_remote_refused"] += len(stray)
        return ok

    async def _put_everywhere(
        self,
        nodes: Sequence[str],
        area: int,
        offsets: list[int],
        versions: list[int],
        sums: list[int],
        payloads: Sequence[Buffer],
    ) -> list[bool]:
        """Send one batch to every node at once; True where all of them kept the page."""
        areas = [area] * len(offsets)

        async def one(node: str) -> list[bool]:
            try:
                return await self.holders.put(node, areas, offsets, versions, sums, payloads)
            except RamsterError as exc:
                log.info("holder %s refused a batch of %d pages: %s", node, len(offsets), exc)
                return [False] * len(offsets)

        results = await asyncio.gather(*(one(n) for n in nodes))
        return [all(flags) for flags in zip(*results, strict=True)]

    # -- the spiller -----------------------------------------------------------------------------

    def _warn_no_holders(self) -> None:
        now = time.monotonic()
        if now - self._warned_at < NO_HOLDER_WARN_EVERY:
            return
        self._warned_at = now
        live = self.holders.candidates()
        roomy = sum(1 for c in live if c.free_bytes > 0)
        log.warning(
            "cannot place %d copies of spilled pages: %d live peer(s), %d with free lent room; "
            "stores beyond the local budget are refused",
            self.spill_config.replicas,
            len(live),
            roomy,
        )

    def _above(self, share: float) -> bool:
        return self.pool.full or self.pool.used_bytes > share * self.pool.config.budget_bytes

    def wake_spiller(self) -> None:
        """Ask the spiller to look at the pool's usage now."""
        if self._above(self.spill_config.high_watermark):
            self._spill_wanted.set()

    async def spill_forever(self) -> None:
        """Run the spiller until cancelled (owned by the node's TaskGroup)."""
        while True:
            try:
                async with asyncio.timeout(1.0):
                    await self._spill_wanted.wait()
            except TimeoutError:
                pass
            self._spill_wanted.clear()
            if not self._above(self.spill_config.high_watermark):
                continue
            moved = await self.spill_once()
            if self._above(self.spill_config.high_watermark) and not moved:
                await asyncio.sleep(self.spill_config.retry_delay)
            if self._above(self.spill_config.high_watermark):
                self._spill_wanted.set()

    async def spill_once(self) -> int:
        """Move cold pages out until usage is below the low watermark; returns pages moved."""
        async with self._spill_lock:  # one spiller at a time: both would pick the same pages
            return await self._spill()

    async def _spill(self) -> int:
        cfg = self.spill_config
        moved = 0
        while self._above(cfg.low_watermark):
            cold = self.pool.coldest(cfg.batch_pages * cfg.depth)
            if not cold:
                break
            # Several batches on the wire at once: a round trip each would otherwise idle us.
            batches = [cold[i : i + cfg.batch_pages] for i in range(0, len(cold), cfg.batch_pages)]
            results = await asyncio.gather(*(self._spill_batch(b) for b in batches))
            batch_moved = sum(m for m in results if m > 0)
            moved += batch_moved
            if not batch_moved:
                break
            await self._flush_drops()
        return moved

    async def _spill_batch(self, cold: list[ColdPage]) -> int:
        """Copy one batch to R holders and free what they all kept; pages moved, -1 if no room."""
        cfg = self.spill_config
        payloads = [c.payload for c in cold]
        nodes = choose_holders(
            self.holders.candidates(), cfg.replicas, sum(len(p) for p in payloads), self._rng
        )
        if not nodes:
            self._c["spill_no_holders"] += 1
            self._warn_no_holders()
            return -1
        set_id = self._set_id(nodes)
        by_area: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(cold):
            by_area[c.area].append(i)
        moved = 0
        for area, idx in by_area.items():
            offsets = [cold[i].offset for i in idx]
            versions = [cold[i].version for i in idx]
            acked = await self._put_everywhere(
                nodes,
                area,
                offsets,
                versions,
                [cold[i].checksum for i in idx],
                [payloads[i] for i in idx],
            )
            # Copy before drop: only pages every holder acknowledged lose their local copy,
            # and only if nobody stored them again while they were on the wire.
            marked = self.pool.mark_remote(
                area,
                [o for o, a in zip(offsets, acked, strict=True) if a],
                [v for v, a in zip(versions, acked, strict=True) if a],
                set_id,
            )
            it = iter(marked)
            kept = [a and next(it) for a in acked]
            stray = [j for j, k in enumerate(kept) if not k]
            if stray:
                self._c["spill_refused"] += len(stray)
                await self._drop_on(
                    nodes, area, [offsets[j] for j in stray], [versions[j] for j in stray]
                )
            moved += len(kept) - len(stray)
        self._c["spill_batches"] += 1
        self._c["spilled_pages"] += moved
        return moved

    # -- loads -----------------------------------------------------------------------------------

    async def _get(self, area: int, offs: I64, exclusive: bool) -> list[bytes | None]:
        pages = self.pool.get_many(area, offs, exclusive)
        if None not in pages:
            return pages
        entries = self.pool.remote_entries(area, offs)
        if not entries:
            return pages
        fetched = await self._fetch(area, offs, entries)
        for i, page in fetched.items():
            pages[i] = bytes(page)  # verified pages are bytes already: no copy
        if exclusive:
            # Free what was read, unless it was stored again while we were fetching.
            wanted = {i: v for i, v, _, _ in entries}
            now = self.pool.versions(area, offs[list(fetched)])
            done = [i for i, v in zip(fetched, now, strict=True) if v == wanted[i]]
            if done:
                self.pool.drop_many(area, offs[done])
                await self._flush_drops()
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
            for i, payload in (await self._fetch(area, offs, entries, verify=False)).items():
                out[i] = (sums[i], payload)
        return out

    async def _fetch(
        self,
        area: int,
        offs: I64,
        entries: list[tuple[int, int, int, int]],
        verify: bool = True,
    ) -> dict[int, Buffer]:
        """Pages of the entries from their holders, each verified; PageUnavailable if none is.

        With verify=False only the version is checked and the stored form is returned, for a
        caller that checks the checksum itself (and comes back with verify=True if it fails).
        """
        # Spread reads over every holder of a set (by offset), so that they work in parallel;
        # each key still falls back on the other holders in turn.
        groups: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        for i, version, sum_, set_id in entries:
            groups[(set_id, int(offs[i]) % len(self._sets[set_id]))].append((i, version, sum_))
        out: dict[int, Buffer] = {}
        results = await asyncio.gather(
            *(
                self._fetch_group(area, offs, _rotated(self._sets[s], first), g, verify)
                for (s, first), g in groups.items()
            )
        )
        for part in results:
            out.update(part)
        return out

    async def _fetch_group(
        self,
        area: int,
        offs: I64,
        nodes: tuple[str, ...],
        wanted: list[tuple[int, int, int]],
        verify: bool,
        want_stored: bool = False,
        partial: bool = False,
    ) -> dict[int, Buffer]:
        """Good copies by index into `wanted`; PageUnavailable if any is missing (unless
        `partial`: then the missing ones are just absent)."""
        ps = self.page_size
        out: dict[int, Buffer] = {}
        left = wanted
        for node in nodes:
            if not left:
                break
            keys = [int(offs[i]) for i, _, _ in left]
            started = time.perf_counter()
            try:
                got = await self.holders.get(node, [area] * len(keys), keys)
                self._fetch_us.append((time.perf_counter() - started) * 1e6)
            except RamsterError as exc:
                self._c["remote_unreachable"] += 1
                log.info("holder %s unreachable for %d pages: %s", node, len(keys), exc)
                continue
            still = []
            for (i, version, sum_), item in zip(left, got, strict=True):
                if item is not None and item[0] == version:
                    if not verify:
                        out[i] = item[2]  # a view into the holder's reply: no copy
                        continue
                    page = expand(item[2], ps)
                    if checksum(page) == sum_:
                        out[i] = item[2] if want_stored else page
                        continue
                if item is not None:
                    self._c["remote_bad_copies"] += 1
                    log.warning(
                        "holder %s returned a stale or corrupt copy of area %d offset %d",
                        node,
                        area,
                        int(offs[i]),
                    )
                still.append((i, version, sum_))
            left = still
        self._c["remote_loads"] += len(out)
        if left and not partial:
            self._c["remote_unavailable"] += len(left)
            i = left[0][0]
            raise PageUnavailable(
                f"{len(left)} page(s) of area {area} (first offset {int(offs[i])}) have no good "
                f"copy on their holders {', '.join(nodes)}",
                area=area,
                offset=int(offs[i]),
            )
        return out

    # -- re-replication after a holder is lost --------------------------------------------------

    def holder_restarted(self, node: str, old_incarnation: str) -> None:
        """A holder came back as a new incarnation: the copies its old one held are gone."""
        tomb = f"{node}~{old_incarnation}"
        self._tombstones.add(tomb)
        for i, nodes in enumerate(self._sets):
            if node in nodes:
                renamed = tuple(tomb if n == node else n for n in nodes)
                del self._set_ids[nodes]
                self._sets[i] = renamed
                self._set_ids.setdefault(renamed, i)
        log.warning("holder %s restarted: its copies count as lost", node)

    async def drop_orphans(self, alive: set[str]) -> int:
        """Drop, on holders that answer again, the copies re-replicated away from them."""
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
                    await self.holders.drop(node, [area] * len(offsets), offsets, versions)
                except RamsterError as exc:
                    log.info("orphan drop on %s failed, will retry: %s", node, exc)
                    pending = self._orphans.setdefault(key, ([], []))
                    pending[0].extend(offsets)
                    pending[1].extend(versions)
                    continue
                sent += len(offsets)
                self._c["orphans_dropped"] += len(offsets)
        if sent:
            log.info("dropped %d orphaned copies on holders that came back", sent)
        return sent

    async def _forget_orphans(self, nodes: Sequence[str], area: int, offsets: list[int]) -> None:
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

    async def move(self, source: str, target: str, max_pages: int) -> int:
        """Move up to `max_pages` copies from holder `source` to holder `target`; pages moved.

        Copy, verify, then drop: the source's copy goes only after the target acknowledged the
        new one. Pages whose set already includes the target stay (two copies on one node are
        one). Paced by `repair_pause` between batches, like repair.
        """
        cfg = self.spill_config
        live = {c.node for c in self.holders.candidates()}
        if source not in live or target not in live or source == target or max_pages <= 0:
            return 0
        sets = [i for i in self._sets_touching({source}) if target not in self._sets[i]]
        entries = self.pool.remote_in_sets(sets)[:max_pages] if sets else []
        moved = 0
        for set_id, area, chunk in self._batches(entries):
            done = await self._repair_batch(set_id, area, chunk, set(), {source}, target)
            if done < 0:
                return moved
            moved += done
            self._c["rebalanced_pages"] += done
            await asyncio.sleep(cfg.repair_pause)
        return moved

    def _batches(
        self, entries: list[tuple[int, int, int, int, int]]
    ) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
        """Remote entries as (holder set, area, [(offset, version, checksum)]) batches."""
        size = self.spill_config.repair_batch_pages
        groups: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        for area, offset, version, sum_, set_id in entries:
            groups[(set_id, area)].append((offset, version, sum_))
        return [
            (set_id, area, pages[start : start + size])
            for (set_id, area), pages in groups.items()
            for start in range(0, len(pages), size)
        ]

    def inventory(self) -> dict[str, int]:
        """Pages this owner keeps on each holder (what the coordinator aggregates)."""
        out: dict[str, int] = {}
        for set_id, count in self.pool.remote_set_counts().items():
            for node in self._sets[set_id]:
                out[node] = out.get(node, 0) + count
        return out

    def orphans_pending(self) -> int:
        """Copies known to be orphaned on holders that have not answered since."""
        return sum(len(o) for o, _ in self._orphans.values())

    def under_replicated(self, gone: set[str], leaving: set[str] | None = None) -> int:
        """Remote pages with a copy on a gone or leaving holder (what repair still has to do)."""
        sets = self._sets_touching(gone | self._tombstones | (leaving or set()))
        return self.pool.remote_count_in_sets(sets) if sets else 0

    def _sets_touching(self, nodes: set[str]) -> list[int]:
        return [i for i, members in enumerate(self._sets) if nodes.intersection(members)]

    async def repair(self, gone: set[str], leaving: set[str] | None = None) -> int:
        """Give every page that lost a copy on a gone holder a new copy; returns pages repaired.

        Copy before drop: a surviving copy is read and verified, written to a new holder, and
        only once that holder acknowledged does the page's record point at the new set.
        Batches are paced by `repair_pause` so that foreground loads keep their latency.
        """
        cfg = self.spill_config
        gone = gone | self._tombstones
        leaving = leaving or set()
        sets = self._sets_touching(gone | leaving)
        if not sets:
            return 0
        jobs = iter(self._batches(self.pool.remote_in_sets(sets)))
        repaired = 0
        stuck = False

        async def worker() -> None:
            # A fixed number of batches in flight: bounded work, and the pipeline never waits
            # for the slowest batch of a wave.
            nonlocal repaired, stuck
            for set_id, area, chunk in jobs:
                if stuck:
                    return
                done = await self._repair_batch(set_id, area, chunk, gone, leaving)
                if done < 0:
                    stuck = True  # nowhere to copy to now: the coordinator asks again later
                    return
                repaired += done
                self._c["repaired_pages"] += done
                await asyncio.sleep(cfg.repair_pause)

        async with asyncio.TaskGroup() as tg:
            for _ in range(cfg.repair_depth):
                tg.create_task(worker())
        return repaired

    async def _repair_batch(
        self,
        set_id: int,
        area: int,
        pages: list[tuple[int, int, int]],
        gone: set[str],
        leaving: set[str],
        target: str | None = None,
    ) -> int:
        old = self._sets[set_id]
        away = gone | leaving
        # Read from any holder still there (a draining one too, staying ones first).
        readable = sorted((n for n in old if n not in gone), key=lambda n: n in leaving)
        staying = [n for n in old if n not in away]
        if not readable:
            self._c["pages_lost"] += len(pages)
            log.error(
                "%d pages of area %d lost every holder (%s); they cannot be recovered",
                len(pages),
                area,
                ", ".join(old),
            )
            return 0
        missing = self.spill_config.replicas - len(staying)
        offs = np.asarray([p[0] for p in pages], dtype=np.int64)
        offsets = offs.tolist()
        versions = [p[1] for p in pages]
        sums = [p[2] for p in pages]
        new = (
            [target]
            if target is not None
            else choose_holders(
                self.holders.candidates(),
                max(missing, 1),
                len(pages) * self.page_size // 2,  # an estimate: the copies are not read yet
                self._rng,
                exclude=frozenset(old) | frozenset(away),
            )
        )
        if not new:
            self._warn_no_holders()
            return -1
        await self._forget_orphans(new, area, offsets)
        acked = [False] * len(pages)
        sent = 0
        if self.spill_config.direct_copy:
            acked, sent = await self._copy_direct(readable[0], new, area, offsets, versions, sums)
        relay = [i for i, a in enumerate(acked) if not a]
        if relay:
            # Through the owner: read a verified copy from any readable holder, put it on `new`.
            wanted = [(j, versions[i], sums[i]) for j, i in enumerate(relay)]
            copies = await self._fetch_group(
                area,
                offs[relay],
                tuple(readable),
                wanted,
                verify=True,
                want_stored=True,
                partial=True,
            )
            unreadable = len(relay) - len(copies)
            if unreadable:
                # No good copy on any holder left: they stay as they are (loads will say so).
                self._c["pages_unreadable"] += unreadable
                log.error(
                    "%d pages of area %d have no good copy left on %s",
                    unreadable,
                    area,
                    ", ".join(readable),
                )
            found = [(i, copies[j]) for j, i in enumerate(relay) if j in copies]
            if found:
                ok = await self._put_everywhere(
                    new,
                    area,
                    [offsets[i] for i, _ in found],
                    [versions[i] for i, _ in found],
                    [sums[i] for i, _ in found],
                    [p for _, p in found],  # views into the holder's reply: no copy
                )
                for (i, payload), flag in zip(found, ok, strict=True):
                    acked[i] = flag
                    sent += len(payload) if flag else 0
        keep = [i for i, a in enumerate(acked) if a]
        new_set = self._set_id([*staying, *new])
        moved = self.pool.move_remote(
            area, [offsets[i] for i in keep], [versions[i] for i in keep], set_id, new_set
        )
        moved_idx = [i for i, m in zip(keep, moved, strict=True) if m]
        # A gone holder may come back with its copies (a partition, a pause), and a leaving
        # one still has them: they are orphans now, dropped when the holder answers.
        for node in old:
            if node in away and node not in self._tombstones and moved_idx:
                pending = self._orphans.setdefault((node, area), ([], []))
                pending[0].extend(offsets[i] for i in moved_idx)
                pending[1].extend(versions[i] for i in moved_idx)
        moved_set = set(moved_idx)
        stray = [i for i in range(len(pages)) if i not in moved_set]
        if stray:
            await self._drop_on(
                new, area, [offsets[i] for i in stray], [versions[i] for i in stray]
            )
        if target is None and moved_idx:
            self._c["recovery_bytes"] += sent * len(moved_idx) // len(pages)
        return len(moved_idx)

    async def _copy_direct(
        self,
        source: str,
        targets: list[str],
        area: int,
        offsets: list[int],
        versions: list[int],
        sums: list[int],
    ) -> tuple[list[bool], int]:
        """Holder-to-holder copies onto every target; True where all of them kept the page."""
        areas = [area] * len(offsets)

        async def one(node: str) -> tuple[list[bool], int]:
            try:
                return await self.holders.copy(source, node, areas, offsets, versions, sums)
            except RamsterError as exc:
                self._c["direct_copy_failures"] += 1
                log.info("direct copy %s -> %s failed, relaying: %s", source, node, exc)
                return [False] * len(offsets), 0

        results = await asyncio.gather(*(one(n) for n in targets))
        acked = [all(flags) for flags in zip(*(r[0] for r in results), strict=True)]
        self._c["direct_copies"] += sum(acked)
        return acked, sum(r[1] for r in results)

    # -- invalidation ----------------------------------------------------------------------------

    async def _drop(self, area: int, offs: I64) -> None:
        self.pool.drop_many(area, offs)
        await self._flush_drops()

    async def _drop_area(self, area: int) -> int:
        dropped = self.pool.drop_area(area, record_remote=False)
        nodes = self.holders.all_holders()

        async def one(node: str) -> None:
            try:
                await self.holders.drop_area(node, area)
            except RamsterError as exc:
                self._c["drop_failures"] += 1
                log.warning("could not drop area %d on %s: %s", area, node, exc)

        await asyncio.gather(*(one(n) for n in nodes))
        return dropped

    async def _flush_drops(self) -> None:
        drops = self.pool.drain_remote_drops()
        if not drops:
            return
        per_node: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for set_id, area, offset, version in drops:
            for node in self._sets[set_id]:
                offsets, versions = per_node.setdefault((node, area), ([], []))
                offsets.append(offset)
                versions.append(version)
        await asyncio.gather(
            *(self._drop_on([node], area, o, v) for (node, area), (o, v) in per_node.items())
        )

    async def _drop_on(
        self, nodes: Sequence[str], area: int, offsets: list[int], versions: list[int]
    ) -> None:
        for node in nodes:
            try:
                await self.holders.drop(node, [area] * len(offsets), offsets, versions)
                self._c["drops_sent"] += len(offsets)
            except RamsterError as exc:
                # The copies stay on that holder until it reclaims this incarnation's pages.
                self._c["drop_failures"] += len(offsets)
                log.warning("could not drop %d pages on %s: %s", len(offsets), node, exc)

    def remote_statistics(self) -> dict[str, float]:
        """Counters of the remote tier, and fetch latency percentiles (microseconds)."""
        out: dict[str, float] = dict(self._c)
        samples = sorted(self._fetch_us)
        for name, q in (("fetch_p50_us", 0.50), ("fetch_p99_us", 0.99)):
            out[name] = (
                round(samples[min(len(samples) - 1, int(q * len(samples)))], 1) if samples else 0.0
            )
        return out
