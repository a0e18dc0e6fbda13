"""How the admin API sees its node: one interface to read it and one to act, never the node
itself. Plain data and lower layers' snapshots only; no aiohttp here, so the node can build
these without loading the web stack."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ramster.pagestore import PoolStatistics
from ramster.rpc import ServerStatistics
from ramster.telemetry.events import EventLog
from ramster.telemetry.latency import Histogram


@dataclass(frozen=True, slots=True)
class Member:
    """One member as this node knows it: its state and its last heartbeat report."""

    node: str
    rpc: str
    state: str
    """alive, suspect, dead or unknown."""
    report: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Coordination:
    """Who coordinates, at which term, and (on the coordinator) its aggregates."""

    coordinator: str
    term: int
    is_coordinator: bool
    snapshot: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Gauges:
    """The figures /metrics shows that the JSON views do not carry as such."""

    local_pool: PoolStatistics
    lent_pool: PoolStatistics
    rpc: ServerStatistics
    method_latencies: Mapping[str, Histogram]
    remote: Mapping[str, float]
    under_replicated: int
    repairing: int
    orders_refused: int
    copies_refused: int
    nbd: Mapping[str, Any] | None
    cleancache: Mapping[str, int]
    """Ephemeral areas' counters: puts, succ_gets, failed_gets, evicts, invalidates."""


class NodeSource(Protocol):
    """What the admin API reads of its node."""

    @property
    def node_id(self) -> str:
        """This node's id."""
        ...

    @property
    def ready(self) -> bool:
        """Serving: started and not closing."""
        ...

    @property
    def events(self) -> EventLog:
        """The node's event log."""
        ...

    def describe(self) -> dict[str, Any]:
        """This node as /v1/node shows it: identity, role, budgets, pools, counters."""
        ...

    def members(self) -> list[Member]:
        """Every member this node knows, itself included."""
        ...

    def coordination(self) -> Coordination:
        """Who coordinates."""
        ...

    def areas(self) -> list[dict[str, Any]]:
        """This node's frontswap areas with their pages here and on holders."""
        ...

    def gauges(self) -> Gauges:
        """What a metrics scrape reads."""
        ...


class UnknownNode(LookupError):
    """No member of that name is known to this node."""


class NodeControl(Protocol):
    """What the admin API may do to the cluster through its node."""

    async def drain(self, node: str) -> None:
        """Have `node` (this one or a peer) take no new pages; UnknownNode, or a RamsterError
        when the peer does not answer."""

    async def rebalance(self) -> str:
        """Ask the coordinator to even out the holders now; its id (RamsterError when it does
        not answer)."""
        ...

    def exports_view(self) -> dict[str, Any]:
        """The NBD exports this node serves, holds pages of, and hears of."""
        ...

    async def move_export(self, name: str, to: str, force: bool = False) -> int:
        """Have node `to` take the export over; its new term (UnknownNode, RamsterError);
        `force` even if it cannot hear every member (what only they hold is lost)."""
        ...

    async def delete_export(self, name: str) -> int:
        """Delete an export cluster-wide; pages dropped."""
        ...
