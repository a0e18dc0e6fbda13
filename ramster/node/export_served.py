"""What a node keeps of each replicated export it serves or is taking over (`Served`), the
constants of serving one, and how one is shown (`describe`); the service is `node.exports`."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import InitVar, dataclass, field
from typing import Any, Protocol

from ramster.cluster.calls import ClaimAnswer
from ramster.cluster.capacity import HolderRoom, copies_per_block, replicated_capacity
from ramster.cluster.exports import ExportHolders, export_owner
from ramster.cluster.peers import Peers
from ramster.errors import ExportTaken, RamsterError
from ramster.frontswap.remote import RemoteTier
from ramster.nbd.config import ExportSpec
from ramster.nbd.export import Export
from ramster.node.export_rebuild import DATA_AREA, MANIFEST_AREA, Heard
from ramster.node.export_records import ExportRecord
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import TERM_SHIFT

log = logging.getLogger(__name__)

KEEPALIVE_EVERY = 5.0
"""Seconds between an export's claims on every live peer (keeps it alive, notices fencing)."""
REPAIR_EVERY = 2.0
"""Seconds between checks for copies to repair."""
HEAR_RETRY = 0.5
"""Seconds between attempts to hear every node a restarted server must hear."""
DISCOVERY_SETTLE = 2.0
"""dead_afters after its start within which a node that finds members by mDNS, and knows none
yet, does not take an export it has no record of for new (it may not have found its holders)."""
UNHEARD_LOG_EVERY = 10.0
"""Seconds between warnings that an export waits for nodes it must hear."""
MANIFEST_REPLICAS = 8
"""Copies of each manifest page (at most; as many as there are live peers)."""
EXPORT_COUNTERS = frozenset(
    {
        "direct_remote_stores",
        "direct_remote_refused",
        "under_replicated_stores",
        "stragglers",
        "remote_loads",
        "remote_unavailable",
        "drops_sent",
        "repaired_pages",
        "pages_lost",
        "cache_hits",
        "cache_misses",
        "cache_evicted",
        "cache_pages",
        "cache_bytes",
    }
)
"""The remote tier's counters an export's description shows."""
INDEX_BYTES_PER_PAGE = 64
"""The export's own pool keeps only the index: about this much per block, plus slack."""


class ExportState(enum.StrEnum):
    """Where a replicated export served here stands; its value is what stats and logs show."""

    STARTING = "starting"
    HEARING = "hearing"
    """Hearing the nodes that may hold newer copies, taking the next term."""
    REBUILDING = "rebuilding"
    """Rebuilding the index from the holders."""
    SERVING = "serving"
    FENCED = "fenced"
    """Another server took it over (or it was moved): not served here any more."""
    DELETED = "deleted"


class ServedHooks(Protocol):
    """What a replicated export served here asks of the node's exports."""

    async def prepare(self, served: Served) -> None:
        """Before it takes connections: hear the nodes that may know better, take the next
        term, rebuild the index."""

    def fenced(self, served: Served) -> str | None:
        """Why another server took it over, or None."""


@dataclass(slots=True)
class Served:
    """One replicated export served here; it builds its Export and is its `nbd.export.Opener`
    (the export is opened through `hooks.prepare`)."""

    spec: ExportSpec
    tier: RemoteTier
    holders: ExportHolders
    hooks: ServedHooks
    max_payload: InitVar[int]
    export: Export = field(init=False)
    term: int = 0
    state: ExportState = ExportState.STARTING
    rebuild: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    takeover: bool = False
    """Taken over by an operator's move (not resumed nor named on this node's command line):
    refused at once, not waited for, when a node that must be heard is silent."""
    force: bool = False
    """The operator forced the takeover: serve without the nodes that cannot be heard."""
    waiting: frozenset[str] = frozenset()
    """Required nodes not heard yet though the term is taken (see `ExportOpener._hear`)."""
    pending: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the term is taken and a required node is still unheard."""

    def __post_init__(self, max_payload: int) -> None:
        self.export = Export(
            self.tier.frontswap,
            self.spec,
            max_payload,
            opener=self,
            area=DATA_AREA,
            manifest_area=MANIFEST_AREA,
            fenced=lambda: self.hooks.fenced(self),
        )

    async def open(self, export: Export) -> None:
        """Open `export` (this one's) through the hooks: hear, claim, rebuild."""
        await self.hooks.prepare(self)


class TermTie(ExportTaken):
    """Another node claimed the same term at once (refused as a newer one is): a restarted
    server resuming the export and a move, say. Were both to give up, nobody would serve it:
    a takeover tries again a term higher (its record keeps this one), a resume yields."""


def fenced_here(served: Served, lent: LentPool, me: str) -> str | None:
    """Why the export is fenced (a holder said so, or this node's own lent pool took a newer
    claim or a deletion: a takeover or a delete claims its term on every member, this server
    among them), or None. Without the second, a read that needs no holder call (a block the
    new server wrote, unwritten here) would serve the stale index until the next keepalive."""
    tier = served.tier
    if tier.fenced is None and served.term:
        owner = export_owner(served.spec.name)
        claim = lent.claim(owner, 0, me, 0)[1]
        deleted = lent.terms.deleted_term(owner)
        if claim.term > served.term:
            tier.fence(me, f"this node knows term {claim.term} by {claim.node or '?'}")
        elif deleted >= served.term:
            tier.fence(me, f"deleted under term {deleted}")
    return tier.fenced


@dataclass(slots=True)
class Attempt:
    """One try at hearing enough to serve: ready, or the nodes still missing."""

    ready: bool = False
    missing: set[str] = field(default_factory=set)
    heard: Heard = field(default_factory=Heard)
    retry: bool = False
    """A takeover met another node's claim of the same term: it tries again, a term higher."""
    new: bool = False
    """The export was never created (no record, no claim by another node, no copy anywhere,
    every member heard): only then is it started blank."""


def holder_rooms(peers: Peers) -> list[HolderRoom]:
    """What each live peer that may take copies lends, as its heartbeats last said."""
    live = {c.node for c in peers.candidates()}
    budgets: dict[str, int] = {}
    for p in peers.peers():
        if p.node_id in live and p.alias_of is None:
            budgets[p.node_id] = p.lent_budget
    return [HolderRoom(node, budget) for node, budget in sorted(budgets.items())]


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the cluster can hold for one export now."""

    size: int
    capacity: int
    replicas: int
    copies: int
    ram: int = 0
    """What the live holders lend in RAM, all together."""
    disk: int = 0
    """What they lend on disk, all together."""

    @property
    def fits(self) -> bool:
        """Whether every block of the export fits."""
        return self.size <= self.capacity

    def warning(self) -> str:
        """Why the export does not fit, for operators."""
        basis = f"the live holders' lent budgets over R={self.replicas}"
        if self.copies < self.replicas:
            basis += f", {self.copies} copies a block with fewer holders"
        if not self.copies:
            basis = f"no live holder lends any, R={self.replicas}"
        return (
            f"size {_mib(self.size)} exceeds what the cluster can hold for it: "
            f"{_mib(self.capacity)} ({basis}); writes past that get ENOSPC"
        )

    def refusal(self, name: str) -> str:
        """Why a new export was refused, for operators: its size, what the cluster can hold for
        it at R and what the holders lend, and how to create it anyway."""
        return (
            f"export {name}: {_mib(self.size)} does not fit: the cluster can hold "
            f"{_mib(self.capacity)} for it at {self.replicas} replicas (live holders lend "
            f"{_mib(self.ram)} of RAM, {_mib(self.disk)} of disk); not created. Create it "
            "without must-fit and without refuse_oversized_exports to serve it anyway (writes "
            "past the capacity get ENOSPC), or give the holders more room"
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def capacity_of(served: Served) -> Capacity:
    """The export's size against what its live holders' budgets can keep of it."""
    rooms = holder_rooms(served.holders.peers)
    replicas = served.tier.spill_config.replicas
    return Capacity(
        served.spec.size,
        replicated_capacity(rooms, replicas),
        replicas,
        copies_per_block(rooms, replicas),
        ram=sum(r.ram_bytes for r in rooms),
        disk=sum(r.disk_bytes for r in rooms),
    )


def describe(served: Served, me: str, gone: set[str], leaving: set[str]) -> dict[str, Any]:
    """One export served here, as plain data."""
    stats = served.export.statistics()
    room = capacity_of(served)
    return {
        "name": served.spec.name,
        "server": me,
        "term": served.term,
        "durability": served.spec.durability,
        "size": served.spec.size,
        "replicas": room.replicas,
        "capacity_bytes": room.capacity,
        "fits": room.fits,
        "state": served.state,
        "waiting_for": sorted(served.waiting),
        "pages": stats.pages_mapped,
        "pages_lost": stats.pages_lost,
        "under_replicated": served.tier.under_replicated(gone, leaving),
        "rebuild": dict(served.rebuild),
        "counters": {
            k: int(v) for k, v in served.tier.remote_statistics().items() if k in EXPORT_COUNTERS
        },
    }


def required_nodes(
    peers: Peers, served: Served, record: ExportRecord | None, current: str
) -> set[str]:
    """The nodes a server must hear before it serves (besides itself).

    - Resuming an export this node created, served or took over (its record says created, and
      no other server took it since): every node of the record's `holders`. Copies are placed
      only on nodes already recorded there (`ExportHolders.candidates`), so they include every
      node that may hold a copy this node acknowledged; a takeover records there, before it
      takes the term, every node it had to hear.
    - Anything else (a takeover, an export with no record here, one never created): every
      member this node knows (configured seeds not yet heard from included), the current
      server (the node of the newest claim) among them: no record of another node's holders
      is at hand here, and every copy lives on some member.
    """
    me = peers.me
    if record is not None and record.created and not served.takeover:
        return set(record.holders) - {me}
    known = [p for p in peers.peers() if p.alias_of is None and (p.node_id or p.seed)]
    required = {p.node_id or p.address for p in known}
    if record is not None:
        required |= set(record.holders)
    if current:
        required.add(current)
    return required - {me}


def deleted_floor(answers: Iterable[ClaimAnswer], here: int) -> int:
    """Versions at or below this are of a deleted life of the export (-1: never deleted): a
    holder that was away when it was deleted may still report them, never as data."""
    term = max([a.deleted for a in answers] + [here])
    return ((term + 1) << TERM_SHIFT) - 1 if term else -1


async def claim_answers(nodes: list[str], call: Callable[[str], Any]) -> dict[str, ClaimAnswer]:
    """The claim answers of the nodes that answered (the others are left out, and logged)."""
    results = await asyncio.gather(*(call(n) for n in nodes), return_exceptions=True)
    out: dict[str, ClaimAnswer] = {}
    for node, result in zip(nodes, results, strict=True):
        if isinstance(result, ClaimAnswer):
            out[node] = result
        elif isinstance(result, RamsterError):
            log.warning("export claim: %s did not answer: %s", node, result)
        elif isinstance(result, BaseException):
            raise result
    return out
