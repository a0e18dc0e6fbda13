"""What the remote tier shares: the holders it talks to (the transport seam), the interned
holder sets its pages point at, its counters, and one way to run calls to several holders."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ramster.cluster.placement import Candidate
from ramster.errors import ExportFenced, PagesReclaimed, RamsterError
from ramster.frontswap.remote.config import SpillConfig
from ramster.pagestore import PagePool
from ramster.pagestore.lent import Stored
from ramster.telemetry.ratelimit import LogLimiter
from ramster.types import Buffer

log = logging.getLogger(__name__)

T = TypeVar("T")

NO_HOLDER_WARN_EVERY = 30.0
"""Seconds between warnings that no R holders can be found (one line, not a flood)."""

COUNTERS = (
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
    "under_replicated_stores",
    "holders_reclaimed",
    "stragglers",
    "drops_given_up",
    "ephemeral_spilled_pages",
    "ephemeral_misses",
)
"""The remote tier's counters (`remote_statistics`), all starting at 0."""


class Holders(Protocol):
    """What the remote tier needs from the cluster: who can hold pages, and calls to them."""

    def candidates(self) -> list[Candidate]:
        """Live peers with the lent capacity they last reported."""
        ...

    def all_holders(self) -> list[str]:
        """Every peer that may hold pages of this node."""
        ...

    def state_of(self, node: str) -> str:
        """What the failure detector believes: alive, suspect, dead or unknown."""
        ...

    async def put(
        self,
        node: str,
        areas: list[int],
        offsets: list[int],
        versions: list[int],
        checksums: list[int],
        payloads: Sequence[Buffer],
        ephemeral: bool = False,
    ) -> list[bool]:
        """Ask `node` to keep pages (of an ephemeral area: evictable there); True for each page
        it kept."""
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

    async def drop_area(self, node: str, area: int, max_version: int) -> None:
        """Ask `node` to forget the pages of one area of this node no newer than max_version."""


class HolderSets:
    """Holder sets interned as small numbers (a spilled page keeps only its set's number).

    A holder that restarted is renamed in every set it belongs to (`node~old-incarnation`, a
    tombstone): its copies are gone, and the pages still pointing at it count as lost copies.
    Sets of ephemeral pages are numbered apart: they are never repaired nor moved (a lost
    ephemeral copy is a miss), so `touching` and `short` leave them out.
    """

    def __init__(self) -> None:
        self._sets: list[tuple[str, ...]] = []
        self._ids: dict[tuple[tuple[str, ...], bool], int] = {}
        self.tombstones: set[str] = set()
        self.ephemeral: set[int] = set()
        """Numbers of the sets of ephemeral pages."""
        self._burials: dict[str, int] = {}

    def __getitem__(self, ident: int) -> tuple[str, ...]:
        return self._sets[ident]

    def __len__(self) -> int:
        return len(self._sets)

    def intern(self, nodes: Sequence[str], ephemeral: bool = False) -> int:
        """The number of a set of nodes (in their order), made on first use."""
        key = (tuple(nodes), ephemeral)
        ident = self._ids.get(key)
        if ident is None:
            ident = len(self._sets)
            self._sets.append(key[0])
            self._ids[key] = ident
            if ephemeral:
                self.ephemeral.add(ident)
        return ident

    def touching(self, nodes: set[str]) -> list[int]:
        """The sets (of persistent pages) with any of the nodes in them."""
        eph = self.ephemeral
        return [
            i
            for i, members in enumerate(self._sets)
            if i not in eph and nodes.intersection(members)
        ]

    def short(self, replicas: int, away: set[str]) -> list[int]:
        """The sets (of persistent pages) with fewer than `replicas` members that are not away
        (nor tombstones)."""
        gone = away | self.tombstones
        eph = self.ephemeral
        return [
            i
            for i, members in enumerate(self._sets)
            if i not in eph and sum(1 for n in members if n not in gone) < replicas
        ]

    def epoch(self, node: str) -> int:
        """How many times `node` was buried: a call that spans a burial must not record the
        node as holding what it answered for (its old incarnation answered)."""
        return self._burials.get(node, 0)

    def unburied(self, nodes: Sequence[str], epochs: dict[str, int]) -> set[str]:
        """The nodes not buried since their epochs were taken."""
        return {n for n in nodes if self._burials.get(n, 0) == epochs.get(n, 0)}

    def bury(self, node: str, old_incarnation: str) -> None:
        """Rename `node` in every set: its old incarnation's copies are gone."""
        tomb = f"{node}~{old_incarnation}"
        self.tombstones.add(tomb)
        self._burials[node] = self._burials.get(node, 0) + 1
        for i, nodes in enumerate(self._sets):
            if node in nodes:
                renamed = tuple(tomb if n == node else n for n in nodes)
                eph = i in self.ephemeral
                del self._ids[(nodes, eph)]
                self._sets[i] = renamed
                self._ids.setdefault((renamed, eph), i)


@dataclass(slots=True)
class Tier:
    """The shared state of the remote tier: every part of it reads and counts through this."""

    pool: PagePool
    holders: Holders
    config: SpillConfig
    rng: random.Random
    sets: HolderSets = field(default_factory=HolderSets)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    log: LogLimiter = field(default_factory=lambda: LogLimiter(log))
    strays: Callable[[Sequence[str], int, list[int], list[int]], None] = lambda *_: None
    """Queue copies on nodes to be dropped (set by the tier to its drop queue)."""
    before_put: Callable[[Sequence[str], int, list[int], list[int]], Awaitable[None]] = lambda *_: (
        asyncio.sleep(0)
    )
    """Take keys about to be put on nodes out of their drop queues (set by the tier)."""
    reclaimed: Callable[[str, int], None] = lambda _node, _epoch: None
    """A holder answered that it reclaimed this owner's pages (set by the tier)."""
    fenced: Callable[[str, str], None] = lambda _node, _why: None
    """A holder answered that a newer server took this export over (set by the tier)."""
    slow_until: dict[str, float] = field(default_factory=dict)
    """Holders left out of a batch as stragglers, not chosen again until then (monotonic)."""
    _warned_at: float = -NO_HOLDER_WARN_EVERY

    def candidates(self) -> list[Candidate]:
        """Where new copies may go: live holders with room, but not one that just straggled
        (a paused holder would cost every batch its grace until it is declared suspect)."""
        now = time.monotonic()
        slow = self.slow_until
        for node, until in list(slow.items()):
            if until <= now:
                del slow[node]
        live = self.holders.candidates()
        fresh = [c for c in live if c.node not in slow]
        # A slow holder beats none: a store is never refused while a live budget has room.
        return fresh if len(fresh) >= self.config.min_replicas else live

    @property
    def page_size(self) -> int:
        """Bytes per page."""
        return self.pool.config.page_size

    def warn_no_holders(self) -> None:
        """One warning line every NO_HOLDER_WARN_EVERY seconds while no R holders can be had."""
        now = time.monotonic()
        if now - self._warned_at < NO_HOLDER_WARN_EVERY:
            return
        self._warned_at = now
        live = self.holders.candidates()
        roomy = sum(1 for c in live if c.free_bytes > 0)
        log.warning(
            "cannot place %d copies (at least %d) of spilled pages: %d live peer(s), %d with free "
            "lent room; stores beyond the local budget are refused",
            self.config.replicas,
            self.config.min_replicas,
            len(live),
            roomy,
        )

    async def put_everywhere(
        self,
        nodes: Sequence[str],
        area: int,
        offsets: list[int],
        versions: list[int],
        sums: list[int],
        payloads: Sequence[Buffer],
        ephemeral: bool = False,
    ) -> list[tuple[str, ...]]:
        """Send one batch to every node at once; per page, the nodes that kept it (in order).

        A node whose call failed may have kept the pages all the same (its answer was lost),
        and should the caller be cancelled every node may have: those copies are queued to be
        dropped again (`strays`), so that nothing leaks. Drops queued earlier for these keys on
        these nodes are withdrawn first: a late one must not take a copy put now.
        """
        areas = [area] * len(offsets)
        epochs = {n: self.sets.epoch(n) for n in nodes}
        await self.before_put(nodes, area, offsets, versions)

        async def one(node: str) -> list[bool]:
            try:
                return await self.holders.put(
                    node, areas, offsets, versions, sums, payloads, ephemeral
                )
            except PagesReclaimed as exc:
                self.reclaimed(node, exc.epoch)
                return [False] * len(offsets)
            except ExportFenced as exc:
                self.fenced(node, str(exc))  # nothing was kept: no strays to drop
                return [False] * len(offsets)
            except RamsterError as exc:
                self.strays([node], area, offsets, versions)
                self.log.info(
                    ("put", node),
                    "holder %s refused a batch of %d pages: %s",
                    node,
                    len(offsets),
                    exc,
                )
                return [False] * len(offsets)

        results = await self._gather_hedged(nodes, one, area, offsets, versions)
        # A holder that restarted meanwhile may have answered as its old incarnation: what it
        # kept may be gone.
        fresh = self.sets.unburied(nodes, epochs)
        for node in nodes:
            if node in results and node not in fresh:
                # Or its new incarnation took the pages: then they are strays to drop.
                self.strays([node], area, offsets, versions)
        return [
            tuple(n for n in nodes if n in fresh and n in results and results[n][i])
            for i in range(len(offsets))
        ]

    async def _gather_hedged(
        self,
        nodes: Sequence[str],
        one: Callable[[str], Coroutine[Any, Any, list[bool]]],
        area: int,
        offsets: list[int],
        versions: list[int],
    ) -> dict[str, list[bool]]:
        """Every node's answer, but for stragglers: once min_replicas have answered, the rest
        get three times as long again (between straggler_min and straggler_timeout). A paused
        holder must not hold up a writer when it is not needed for the answer: a straggler's
        copies are queued to be dropped, and it gets no new copies for straggler_pause."""
        tasks = {asyncio.ensure_future(one(n)): n for n in nodes}
        results: dict[str, list[bool]] = {}
        pending = set(tasks)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline: float | None = None
        try:
            while pending:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(
                    pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    results[tasks[task]] = task.result()
                if not done:
                    break  # the stragglers' time is up
                if deadline is None and len(results) >= self.config.min_replicas:
                    # Healthy holders answer within a small factor of each other: the others
                    # get three times what the first answers took, within bounds.
                    took = loop.time() - started
                    cfg = self.config
                    grace = min(cfg.straggler_timeout, max(cfg.straggler_min, 3 * took))
                    deadline = loop.time() + grace
        except BaseException:
            self.strays(nodes, area, offsets, versions)
            raise
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        late = [tasks[t] for t in pending]
        for node in late:
            self.slow_until[node] = time.monotonic() + self.config.straggler_pause
        if late:
            self.counters["stragglers"] += len(late)
            self.log.info(
                ("straggler", *late), "holder(s) %s too slow for a batch: left out", ",".join(late)
            )
            self.strays(late, area, offsets, versions)
        return results


async def run_all(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run the coroutines at once in a TaskGroup; their results in order. If one fails, the
    others are cancelled and its exception is raised as itself (not as a group)."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in coros]
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]
