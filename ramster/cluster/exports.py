"""The holder calls of an export's server: the node's peers and connections, but the export's
identity (`export:NAME`, `t<term>@<node>`), so that its pages outlive the serving process."""

from __future__ import annotations

from ramster.cluster.calls import SpeaksFor
from ramster.cluster.peers import Peers
from ramster.cluster.placement import Candidate
from ramster.pagestore.owners import EXPORT_PREFIX, export_incarnation


def export_owner(name: str) -> str:
    """The owner name an export's pages are held under."""
    return f"{EXPORT_PREFIX}{name}"


class ExportHolders(SpeaksFor):
    """`frontswap.remote.Holders` for one export served by this node under one term."""

    def __init__(self, peers: Peers, name: str, term: int) -> None:
        self.peers = peers
        self.owner = export_owner(name)
        self.term = term
        self.calls = peers.calls
        self.owner_identity = (self.owner, export_incarnation(term, peers.me))

    def set_term(self, term: int) -> None:
        """Speak for the export under a new term (once claimed)."""
        self.term = term
        self.owner_identity = (self.owner, export_incarnation(term, self.peers.me))

    def candidates(self) -> list[Candidate]:
        """Live peers with room (the serving node itself never holds its export's copies)."""
        return self.peers.candidates()

    def all_holders(self) -> list[str]:
        """Every peer that may hold the export's pages."""
        return self.peers.all_holders()

    def state_of(self, node: str) -> str:
        """What the failure detector believes of a node."""
        return self.peers.state_of(node)
