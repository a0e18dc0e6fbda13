"""The holder calls of an export's server: the node's peers and connections, but the export's
identity (`export:NAME`, `t<term>@<node>`), so that its pages outlive the serving process."""

from __future__ import annotations

from collections.abc import Sequence

from ramster.cluster.peers import Peers
from ramster.cluster.placement import Candidate
from ramster.pagestore.lent import EXPORT_PREFIX, Stored, export_incarnation
from ramster.rpc import PageBatch
from ramster.types import Buffer


def export_owner(name: str) -> str:
    """The owner name an export's pages are held under."""
    return f"{EXPORT_PREFIX}{name}"


class ExportHolders:
    """`frontswap.remote.Holders` for one export served by this node under one term."""

    def __init__(self, peers: Peers, name: str, term: int) -> None:
        self.peers = peers
        self.owner = export_owner(name)
        self.term = term
        self.identity = (self.owner, export_incarnation(term, peers.me))

    def set_term(self, term: int) -> None:
        """Speak for the export under a new term (once claimed)."""
        self.term = term
        self.identity = (self.owner, export_incarnation(term, self.peers.me))

    def candidates(self) -> list[Candidate]:
        """Live peers with room (the serving node itself never holds its export's copies)."""
        return self.peers.candidates()

    def all_holders(self) -> list[str]:
        """Every peer that may hold the export's pages."""
        return self.peers.all_holders()

    def state_of(self, node: str) -> str:
        """What the failure detector believes of a node."""
        return self.peers.state_of(node)

    async def put(
        self,
        node: str,
        areas: list[int],
        offsets: list[int],
        versions: list[int],
        checksums: list[int],
        payloads: Sequence[Buffer],
    ) -> list[bool]:
        """hold.put for the export."""
        batch = PageBatch(areas, offsets, versions, checksums, payloads)
        return await self.peers.calls.put(node, self.identity, batch)

    async def get(self, node: str, areas: list[int], offsets: list[int]) -> Sequence[Stored | None]:
        """hold.get for the export."""
        return await self.peers.calls.get(self.identity, node, areas, offsets)

    async def copy(
        self,
        source: str,
        target: str,
        areas: list[int],
        offsets: list[int],
        versions: list[int],
        checksums: list[int],
    ) -> tuple[list[bool], int]:
        """hold.copy for the export (holder to holder)."""
        return await self.peers.calls.copy(
            self.identity, source, target, areas, offsets, versions, checksums
        )

    async def drop(
        self, node: str, areas: list[int], offsets: list[int], versions: list[int]
    ) -> None:
        """hold.drop for the export."""
        await self.peers.calls.drop(self.identity, node, areas, offsets, versions)

    async def drop_area(self, node: str, area: int, max_version: int) -> None:
        """hold.drop_area for the export."""
        await self.peers.calls.drop_area(self.identity, node, area, max_version)
