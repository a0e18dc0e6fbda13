"""Re-replication after a holder is lost or leaves, and moves that even the holders out.

Copy before drop: a surviving copy is verified and written to a new holder (holder to holder
where it can, through the owner otherwise), and only once that holder acknowledged does the
page's record point at the new set; the old copies become orphans, dropped later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ramster.cluster.placement import choose_holders
from ramster.errors import RamsterError
from ramster.frontswap.remote.copies import Copier, renewed
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.fetch import Fetcher
from ramster.frontswap.remote.holders import SetMember, Tier, run_all
from ramster.rpc.pages import Keys
from ramster.types import Buffer, NodeId

log = logging.getLogger(__name__)

Batch = tuple[int, int, list[tuple[int, int, int]]]
"""(holder set, area, [(offset, version, checksum)]) of one repair or move batch."""


class Repairer:
    """Gives pages new copies: `repair` after losses, `move` to even holders out."""

    def __init__(self, tier: Tier, fetcher: Fetcher, drops: DropQueue, copier: Copier) -> None:
        self._t = tier
        self._fetcher = fetcher
        self._drops = drops
        self._copier = copier

    def _needing(self, gone: set[str], leaving: set[str]) -> list[int]:
        """Holder sets with a copy on a gone or leaving holder, or with fewer than R good ones
        (placed while fewer holders could take them)."""
        sets = self._t.sets
        away = gone | leaving
        return sorted(
            set(sets.touching(away | sets.tombstones))
            | set(sets.short(self._t.config.replicas, away))
        )

    def under_replicated(self, gone: set[str], leaving: set[str] | None = None) -> int:
        """Remote pages with a copy on a gone or leaving holder, or with fewer than R copies
        (what repair still has to do)."""
        needing = self._needing(gone, leaving or set())
        return self._t.pool.remote_count_in_sets(needing) if needing else 0

    def inventory(self) -> dict[str, int]:
        """Pages this owner keeps on each holder (what the coordinator aggregates)."""
        out: dict[str, int] = {}
        for set_id, count in self._t.pool.remote_set_counts().items():
            for node in self._t.sets[set_id]:
                out[node] = out.get(node, 0) + count
        return out

    def _batches(self, entries: list[tuple[int, int, int, int, int]]) -> list[Batch]:
        """Remote entries as (holder set, area, [(offset, version, checksum)]) batches."""
        size = self._t.config.repair_batch_pages
        groups: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        for area, offset, version, sum_, set_id in entries:
            groups[(set_id, area)].append((offset, version, sum_))
        return [
            (set_id, area, pages[start : start + size])
            for (set_id, area), pages in groups.items()
            for start in range(0, len(pages), size)
        ]

    async def move(self, source: str, target: str, max_pages: int) -> int:
        """Move up to `max_pages` copies from holder `source` to holder `target`; pages moved.

        Copy, verify, then drop: the source's copy goes only after the target acknowledged the
        new one. Pages whose set already includes the target stay (two copies on one node are
        one). Paced by `repair_pause` between batches, like repair.
        """
        t = self._t
        live = {c.node for c in t.holders.candidates()}
        if source not in live or target not in live or source == target or max_pages <= 0:
            return 0
        sets = [i for i in t.sets.touching({source}) if target not in t.sets[i]]
        entries = t.pool.remote_in_sets(sets)[:max_pages] if sets else []
        moved = 0
        for set_id, area, chunk in self._batches(entries):
            # A live candidate's name (checked above): a holder's id.
            done = await self._batch(set_id, area, chunk, set(), {source}, NodeId(target))
            if done < 0:
                return moved
            moved += done
            t.counters["rebalanced_pages"] += done
            await asyncio.sleep(t.config.repair_pause)
        return moved

    async def repair(self, gone: set[str], leaving: set[str] | None = None) -> int:
        """Give every page that lost a copy on a gone holder a new copy; returns pages repaired.

        Batches are paced by `repair_pause` so that foreground loads keep their latency.
        """
        t = self._t
        gone = gone | t.sets.tombstones
        leaving = leaving or set()
        sets = self._needing(gone, leaving)
        if not sets:
            return 0
        jobs = iter(self._batches(t.pool.remote_in_sets(sets)))
        repaired = 0

        async def worker() -> None:
            # A fixed number of batches in flight: bounded work, and the pipeline never waits
            # for the slowest batch of a wave.
            nonlocal repaired
            for set_id, area, chunk in jobs:
                done = await self._batch(set_id, area, chunk, gone, leaving)
                if done < 0:
                    # Nowhere to copy this batch to now (the coordinator asks again later), but
                    # a smaller batch, or one of a set that excludes other holders, may fit:
                    # one batch without room must not hold up the rest.
                    continue
                repaired += done
                t.counters["repaired_pages"] += done
                await asyncio.sleep(t.config.repair_pause)

        async with asyncio.TaskGroup() as tg:
            for _ in range(t.config.repair_depth):
                tg.create_task(worker())
        return repaired

    async def _batch(
        self,
        set_id: int,
        area: int,
        pages: list[tuple[int, int, int]],
        gone: set[str],
        leaving: set[str],
        target: NodeId | None = None,
    ) -> int:
        t = self._t
        c = t.counters
        old = t.sets[set_id]
        away = gone | leaving
        # Read from any holder still there (a draining one too, staying ones first).
        readable = sorted((n for n in old if n not in gone), key=lambda n: n in leaving)
        staying = [n for n in old if n not in away]
        if not readable:
            c["pages_lost"] += len(pages)
            log.error(
                "%d pages of area %d lost every holder (%s); they cannot be recovered",
                len(pages),
                area,
                ", ".join(old),
            )
            return 0
        missing = t.config.replicas - len(staying)
        offs = np.asarray([p[0] for p in pages], dtype=np.int64)
        offsets = offs.tolist()
        versions = [p[1] for p in pages]
        sums = [p[2] for p in pages]
        new = (
            [target]
            if target is not None
            else choose_holders(
                t.candidates(),
                max(missing, 1),
                len(pages) * t.page_size // 2,  # an estimate: the copies are not read yet
                t.rng,
                exclude=frozenset(old) | frozenset(away),
                # As many new copies as there is room for: one now beats none until two fit.
                minimum=1,
            )
        )
        if not new:
            t.warn_no_holders()
            return -1
        epochs: dict[SetMember, int] = {n: t.sets.epoch(n) for n in [*staying, *new]}
        await self._drops.before_put(new, area, offsets, versions)
        try:
            kept_by, sent = await self._copy(readable, new, area, offs, versions, sums, epochs)
        except BaseException:
            self._drops.enqueue(new, area, offsets, versions)  # copies that may have landed
            raise
        # A holder that restarted during the copy lost what it had: it stays out of the set.
        fresh = t.sets.unburied([*staying, *new], epochs)
        staying = [n for n in staying if n in fresh]
        for node in new:
            if node not in fresh:  # or its new incarnation kept them: strays to drop
                self._drops.enqueue([node], area, offsets, versions)
        kept_by = [tuple(n for n in kept if n in fresh) for kept in kept_by]
        # A new holder that kept nothing may hold a straggler's copy whose drop was withdrawn.
        self._drops.not_kept([n for n in new if n in fresh], area, offsets, versions, kept_by)
        # Per page: its new set is the staying holders and the new ones that kept it.
        groups: dict[tuple[NodeId, ...], list[int]] = defaultdict(list)
        for i, kept in enumerate(kept_by):
            if kept:
                groups[kept].append(i)
        moved_idx: list[int] = []
        for kept, idx in groups.items():
            new_set = t.sets.intern([*staying, *kept])
            moved = t.pool.move_remote(
                area, [offsets[i] for i in idx], [versions[i] for i in idx], set_id, new_set
            )
            moved_idx += [i for i, m in zip(idx, moved, strict=True) if m]
        # A gone holder may come back with its copies (a partition, a pause), and a leaving
        # one still has them: they are orphans now, dropped when the holder answers.
        if moved_idx:
            orphan_offsets = [offsets[i] for i in moved_idx]
            orphan_versions = [versions[i] for i in moved_idx]
            orphaned = [n for n in old if n in away and n not in t.sets.tombstones]
            self._drops.enqueue(orphaned, area, orphan_offsets, orphan_versions)
        moved_set = set(moved_idx)
        for i in range(len(pages)):
            if i not in moved_set and kept_by[i]:
                self._drops.enqueue(kept_by[i], area, [offsets[i]], [versions[i]])
        if target is None and moved_idx:
            c["recovery_bytes"] += sent * len(moved_idx) // len(pages)
        return len(moved_idx)

    async def _copy(
        self,
        readable: Sequence[SetMember],
        new: list[NodeId],
        area: int,
        offs: npt.NDArray[np.int64],
        versions: list[int],
        sums: list[int],
        epochs: dict[SetMember, int],
    ) -> tuple[list[tuple[NodeId, ...]], int]:
        """Put verified copies of the pages on the new holders: holder to holder where it can,
        through this owner for the rest; per page, the new holders that kept it, and the bytes
        sent. An answer from a holder's current incarnation renews its entry in `epochs`."""
        t = self._t
        c = t.counters
        offsets = offs.tolist()
        n = len(offsets)
        kept_by: list[tuple[NodeId, ...]] = [() for _ in range(n)]
        sent = 0
        if t.config.direct_copy:
            kept_by, sent = await self._copy_direct(
                readable[0], new, area, offsets, versions, sums, epochs
            )
        relay = [i for i, kept in enumerate(kept_by) if len(kept) < len(new)]
        if not relay:
            return kept_by, sent
        # Through the owner: read a verified copy from any readable holder, put it on `new`.
        wanted = [(j, versions[i], sums[i]) for j, i in enumerate(relay)]
        copies = await self._fetcher.fetch_group(
            area,
            offs[relay],
            self._fetcher.order(tuple(readable)),
            wanted,
            verify=True,
            want_stored=True,
            partial=True,
        )
        unreadable = len(relay) - len(copies)
        if unreadable:
            # No good copy on any holder left: they stay as they are (loads will say so).
            c["pages_unreadable"] += unreadable
            t.log.error(
                ("unreadable", area),
                "%d pages of area %d have no good copy left on %s",
                unreadable,
                area,
                ", ".join(readable),
            )
        found = [(i, copies[j]) for j, i in enumerate(relay) if j in copies]
        # Each page only to the new holders that missed it: one that kept a direct copy must
        # not be sent it again (a refused or failed duplicate would queue the drop of the copy
        # this batch records there). `_batch` requeues withdrawn drops once all is merged.
        missed: dict[tuple[NodeId, ...], list[tuple[int, Buffer]]] = defaultdict(list)
        for i, payload in found:
            missed[tuple(nd for nd in new if nd not in kept_by[i])].append((i, payload))
        for nodes, items in missed.items():
            got = await self._copier.put(
                nodes,
                area,
                [offsets[i] for i, _ in items],
                [versions[i] for i, _ in items],
                [sums[i] for i, _ in items],
                [p for _, p in items],  # views into the holder's reply: no copy
                requeue=False,
                epochs=epochs,
            )
            for (i, payload), kept in zip(items, got, strict=True):
                kept_by[i] = tuple(nd for nd in new if nd in kept or nd in kept_by[i])
                sent += len(payload) * len(kept)
        return kept_by, sent

    async def _copy_direct(
        self,
        source: SetMember,
        targets: list[NodeId],
        area: int,
        offsets: list[int],
        versions: list[int],
        sums: list[int],
        epochs: dict[SetMember, int],
    ) -> tuple[list[tuple[NodeId, ...]], int]:
        """Holder-to-holder copies onto every target; per page, the targets that kept it, and
        the bytes sent."""
        t = self._t
        keys = Keys([area] * len(offsets), offsets)

        async def one(node: NodeId) -> tuple[list[bool], int]:
            try:
                kept, sent = await t.holders.copy(source, node, keys, versions, sums)
                if not renewed(t, node, kept, epochs):
                    return [False] * len(offsets), sent
                return list(kept), sent
            except RamsterError as exc:
                # It may have landed all the same: dropped again unless relayed (and kept) later.
                self._drops.enqueue([node], area, offsets, versions)
                t.counters["direct_copy_failures"] += 1
                t.log.info(
                    ("copy", source, node),
                    "direct copy %s -> %s failed, relaying: %s",
                    source,
                    node,
                    exc,
                )
                return [False] * len(offsets), 0

        results = await run_all(one(n) for n in targets)
        kept_by = [
            tuple(n for n, r in zip(targets, results, strict=True) if r[0][i])
            for i in range(len(offsets))
        ]
        t.counters["direct_copies"] += sum(1 for k in kept_by if len(k) == len(targets))
        return kept_by, sum(r[1] for r in results)
