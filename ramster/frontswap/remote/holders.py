"""What the remote tier shares: the holders it talks to (the transport seam), the interned
holder sets its pages point at, its counters, and one way to run calls to several holders."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar

from ramster.cluster.placement import Candidate
from ramster.frontswap.remote.config import SpillConfig
from ramster.pagestore import PagePool
from ramster.pagestore.lent import Stored
from ramster.pagestore.owners import incarnation_order
from ramster.rpc.pages import Keys, PageBatch
from ramster.telemetry.ratelimit import LogLimiter
from ramster.types import Incarnation, NodeId, Tombstone

log = logging.getLogger(__name__)

T = TypeVar("T")

SetMember: TypeAlias = NodeId | Tombstone
"""A holder set's member: a holder, or a tombstone where an incarnation of it that is gone
held the page (see `HolderSets`)."""

DEAD_KEPT = 8
"""Gone incarnations remembered per holder (an answer late from one of them keeps nothing)."""
BURIALS_KEPT = 8
"""Burials remembered per holder by what they buried (see `HolderSets.buried_since`)."""
RECLAIMED = "reclaimed"
"""What a reclaim buries a holder as (`reclaimed<N>`, in place of an incarnation): this owner's
pages there, whatever incarnation holds them."""
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

    def all_holders(self) -> list[NodeId]:
        """Every peer that may hold pages of this node."""
        ...

    def state_of(self, node: str) -> str:
        """What the failure detector believes: alive, suspect, dead or unknown."""
        ...

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        """Ask `node` to keep pages (of an ephemeral area: evictable there); True for each page
        it kept. A `cluster.calls.Kept` answer also names the incarnation that kept them."""
        ...

    async def get(self, node: str, keys: Keys) -> Sequence[Stored | None]:
        """The pages `node` holds among the keys, None where it holds none."""
        ...

    async def copy(
        self, source: str, target: str, keys: Keys, versions: list[int], checksums: list[int]
    ) -> tuple[list[bool], int]:
        """Have `source` verify its copies (version and checksum) and put them on `target`:
        True for each page the target kept (a `Kept` names the target's incarnation), and the
        bytes sent."""
        ...

    async def drop(self, node: str, keys: Keys, versions: list[int]) -> None:
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
        self._sets: list[tuple[SetMember, ...]] = []
        self._ids: dict[tuple[tuple[SetMember, ...], bool], int] = {}
        self.tombstones: set[Tombstone] = set()
        self.ephemeral: set[int] = set()
        """Numbers of the sets of ephemeral pages."""
        self._burials: dict[SetMember, int] = {}
        """Burials per holder (only NodeIds are buried: a tombstone's count stays 0)."""
        self._buried_as: dict[NodeId, list[Incarnation]] = {}
        """Per node, what its last BURIALS_KEPT burials buried (see `buried_since`)."""

    def __getitem__(self, ident: int) -> tuple[SetMember, ...]:
        return self._sets[ident]

    def __len__(self) -> int:
        return len(self._sets)

    def intern(self, nodes: Sequence[SetMember], ephemeral: bool = False) -> int:
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

    def touching(self, nodes: AbstractSet[str]) -> list[int]:
        """The sets (of persistent pages) with any of the nodes in them."""
        eph = self.ephemeral
        return [
            i
            for i, members in enumerate(self._sets)
            if i not in eph and not nodes.isdisjoint(members)
        ]

    def short(self, replicas: int, away: AbstractSet[str]) -> list[int]:
        """The sets (of persistent pages) with fewer than `replicas` members that are not away
        (nor tombstones)."""
        gone = away | self.tombstones
        eph = self.ephemeral
        return [
            i
            for i, members in enumerate(self._sets)
            if i not in eph and sum(1 for n in members if n not in gone) < replicas
        ]

    def holder(self, member: SetMember) -> NodeId | None:
        """The holder a set member names; None for a tombstone."""
        return None if member in self.tombstones else NodeId(member)

    def epoch(self, node: SetMember) -> int:
        """How many times `node` was buried: a call that spans a burial must not record the
        node as holding what it answered for (its old incarnation answered)."""
        return self._burials.get(node, 0)

    def unburied(self, nodes: Sequence[SetMember], epochs: dict[SetMember, int]) -> set[SetMember]:
        """The nodes not buried since their epochs were taken."""
        return {n for n in nodes if self._burials.get(n, 0) == epochs.get(n, 0)}

    def buried_since(self, node: NodeId, epoch: int) -> list[Incarnation] | None:
        """What `node` was buried as (its old incarnations, `reclaimedN` for a reclaim) after
        its epoch was `epoch`, oldest first; None if that is too long ago to say."""
        now = self._burials.get(node, 0)
        names = self._buried_as.get(node, [])
        if now - epoch > len(names):
            return None
        return names[len(names) - (now - epoch) :] if now > epoch else []

    def bury(self, node: NodeId, old_incarnation: Incarnation) -> None:
        """Rename `node` in every set: its old incarnation's copies are gone."""
        tomb = Tombstone(f"{node}~{old_incarnation}")
        self.tombstones.add(tomb)
        self._burials[node] = self._burials.get(node, 0) + 1
        names = self._buried_as.setdefault(node, [])
        names.append(old_incarnation)
        del names[:-BURIALS_KEPT]
        for i, nodes in enumerate(self._sets):
            if node in nodes:
                renamed: tuple[SetMember, ...] = tuple(tomb if n == node else n for n in nodes)
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
    slow_until: dict[NodeId, float] = field(default_factory=dict)
    """Holders left out of a batch as stragglers, not chosen again until then (monotonic)."""
    fenced: str | None = None
    """Why a holder refused this owner as stale (another server took the export over)."""
    incarnations: dict[NodeId, Incarnation] = field(default_factory=dict)
    """The incarnation of each holder that this owner's copies there belong to, once one
    answered a put or copy (one entry per holder, as many as there are peers)."""
    _dead: dict[NodeId, list[Incarnation]] = field(default_factory=dict)
    """Per holder, its last DEAD_KEPT incarnations known to be gone: their answers keep
    nothing."""
    _warned_at: float = -NO_HOLDER_WARN_EVERY
    _reclaims: int = 0
    _reclaim_epochs: dict[NodeId, int] = field(default_factory=dict)

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

    def fence(self, node: str, why: str) -> None:
        """A holder answered that a newer server took this export over."""
        if self.fenced is None:
            self.fenced = why
            log.error("holder %s fenced this owner: %s", node, why)

    def reclaimed(self, node: NodeId, epoch: int) -> None:
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
        self.sets.bury(node, Incarnation(f"{RECLAIMED}{self._reclaims}"))
        self.counters["holders_reclaimed"] += 1
        log.error("holder %s reclaimed this node's pages: its copies count as lost", node)

    def answered(self, node: NodeId, incarnation: Incarnation | None) -> bool:
        """A holder answered a put or copy as `incarnation` (None: not known). False if that
        one is dead (a restart was heard of) or older than the one this owner's copies there
        belong to: what it kept lives in a process that is gone. A newer one buries the old
        one first (its copies are gone), and what this answer kept is recorded on the new one,
        which a late word of the restart (`restarted`) then leaves alone."""
        if incarnation is None:
            return True
        if incarnation in self._dead.get(node, ()):
            return False
        known = self.incarnations.get(node)
        if known == incarnation:
            return True
        if known is not None:
            if incarnation_order(incarnation) < incarnation_order(known):
                self._died(node, incarnation)
                return False
            self._died(node, known)
            self._bury(node, known)
        self.incarnations[node] = incarnation
        return True

    def restarted(self, node: NodeId, old: Incarnation, new: Incarnation | None = None) -> bool:
        """A holder came back as incarnation `new` (None: not said): `old` is dead, and so are
        the copies of this owner there, unless they belong to `new` already (it answered first,
        and the old one was buried then): False, nothing changes. Copies recorded on another
        incarnation than both (one that answered, then died before a heartbeat saw it) are
        buried too."""
        self._died(node, old)
        known = self.incarnations.get(node)
        if known is not None and known == new:
            return False
        if known is not None and known != old:
            if new is None:
                return False  # an older word than what answered: nothing known to be lost
            self._died(node, known)
            self._bury(node, known)
            return True
        self._bury(node, old)
        return True

    def _died(self, node: NodeId, incarnation: Incarnation) -> None:
        dead = self._dead.setdefault(node, [])
        if incarnation not in dead:
            dead.append(incarnation)
            del dead[:-DEAD_KEPT]

    def _bury(self, node: NodeId, incarnation: Incarnation) -> None:
        self.sets.bury(node, incarnation)
        self.incarnations.pop(node, None)
        self._reclaim_epochs.pop(node, None)  # a new incarnation counts its reclaims anew


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
