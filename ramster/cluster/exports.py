"""The holder calls of an export's server: the node's peers and connections, but the export's
identity (`export:NAME`, `t<term>@<node>`), so that its pages outlive the serving process."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ramster.cluster.calls import SpeaksFor
from ramster.cluster.peers import Peers
from ramster.cluster.placement import Candidate
from ramster.pagestore.owners import EXPORT_PREFIX, export_incarnation
from ramster.types import NodeId

log = logging.getLogger(__name__)


def export_owner(name: str) -> str:
    """The owner name an export's pages are held under."""
    return f"{EXPORT_PREFIX}{name}"


class ExportHolders(SpeaksFor):
    """`frontswap.remote.Holders` for one export served by this node under one term.

    A node is offered as a place for copies only once it is in `may_hold`, and `remember` (the
    node's export record, on disk) has been told so first: after a crash, the record names
    every node that may hold a copy the server acknowledged, and a restarted server hears all
    of them before it serves (see `node.exports`)."""

    def __init__(
        self,
        peers: Peers,
        name: str,
        term: int,
        remember: Callable[[frozenset[str]], None],
    ) -> None:
        self.peers = peers
        self.owner = export_owner(name)
        self.term = term
        self.calls = peers.calls
        self.owner_identity = (self.owner, export_incarnation(term, peers.me))
        self.may_hold: frozenset[str] = frozenset()
        """Nodes that may hold copies (written through `remember` before any is placed)."""
        self._remember = remember

    def set_term(self, term: int) -> None:
        """Speak for the export under a new term (once claimed)."""
        self.term = term
        self.owner_identity = (self.owner, export_incarnation(term, self.peers.me))

    def set_may_hold(self, nodes: frozenset[str]) -> None:
        """Record (durably first) the nodes that may hold copies."""
        nodes = nodes - {self.peers.me}
        if nodes != self.may_hold:
            self._remember(nodes)
            self.may_hold = nodes

    def candidates(self) -> list[Candidate]:
        """Live peers with room (the serving node itself never holds its export's copies);
        a peer new to `may_hold` is recorded on disk before it is offered."""
        live = self.peers.candidates()
        new = {c.node for c in live} - self.may_hold
        if new:
            try:
                self.set_may_hold(self.may_hold | new)
            except OSError as exc:
                log.error("export %s: cannot record holders %s: %s", self.owner, new, exc)  # noqa: TRY400
                return [c for c in live if c.node in self.may_hold]
        return live

    def all_holders(self) -> list[NodeId]:
        """Every peer that may hold the export's pages."""
        return self.peers.all_holders()

    def state_of(self, node: str) -> str:
        """What the failure detector believes of a node."""
        return self.peers.state_of(node)
