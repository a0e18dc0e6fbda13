"""An in-process twin of the holder transport: real lent pools, no sockets.

Used by unit tests of the remote tier and by anything that wants a cluster inside one process;
`down` makes a holder behave like a crashed peer (PeerLost), as the RPC transport would.
"""

from __future__ import annotations

from ramster.cluster.placement import Candidate
from ramster.errors import PeerLost
from ramster.pagestore.lent import LentPool, Stored
from ramster.pagestore.verify import copyable, spread
from ramster.rpc.pages import Keys, PageBatch
from ramster.types import NodeId


class InProcessHolders:
    """Holders for one owner, backed by LentPool objects in this process."""

    def __init__(
        self, owner: str, incarnation: str, lents: dict[str, LentPool], page_size: int = 4096
    ) -> None:
        self.owner = owner
        self.page_size = page_size
        self.incarnation = incarnation
        self.lents = lents
        self.down: set[str] = set()
        self.seq = 0
        """The owner's call sequence, as its puts and drops carry it over the wire."""

    def _lent(self, node: str) -> LentPool:
        if node in self.down or node not in self.lents:
            raise PeerLost(f"{node} is down or unknown")
        return self.lents[node]

    def candidates(self) -> list[Candidate]:
        """Live peers with their free lent bytes."""
        return [
            Candidate(NodeId(n), lent.free_bytes())
            for n, lent in self.lents.items()
            if n not in self.down
        ]

    def all_holders(self) -> list[NodeId]:
        """Every peer."""
        return [NodeId(n) for n in self.lents]

    def state_of(self, node: str) -> str:
        """dead while down, else alive (unknown for a name that is no holder)."""
        if node not in self.lents:
            return "unknown"
        return "dead" if node in self.down else "alive"

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        """Keep pages on node."""
        lent = self._lent(node)
        self.seq += 1
        return lent.put(self.owner, self.incarnation, batch, ephemeral, seq=self.seq)

    async def get(self, node: str, keys: Keys) -> list[Stored | None]:
        """Pages node holds."""
        return self._lent(node).get(self.owner, self.incarnation, keys.areas, keys.offsets)

    async def copy(
        self, source: str, target: str, keys: Keys, versions: list[int], checksums: list[int]
    ) -> tuple[list[bool], int]:
        """Verify source's copies and put them on target, as a holder does for hold.copy."""
        # The owner's order first (hold.expect), then the source verifies and forwards.
        self.seq += 1
        self._lent(target).expect(
            self.owner, self.incarnation, keys.areas, keys.offsets, versions, checksums, self.seq
        )
        held = self._lent(source).get(self.owner, self.incarnation, keys.areas, keys.offsets)
        good, payloads = copyable(held, versions, checksums, self.page_size)
        if not good:
            return [False] * len(keys), 0
        batch = PageBatch.with_keys(
            keys.take(good), [versions[i] for i in good], [checksums[i] for i in good], payloads
        )
        kept = self._lent(target).put(self.owner, self.incarnation, batch, copy=True)
        return spread(len(keys), good, kept, payloads)

    async def drop(self, node: str, keys: Keys, versions: list[int]) -> None:
        """Forget copies on node."""
        self.seq += 1
        self._lent(node).drop(
            self.owner, self.incarnation, keys.areas, keys.offsets, versions, self.seq
        )

    async def drop_area(self, node: str, area: int, max_version: int) -> None:
        """Forget an area's pages no newer than max_version on node."""
        self._lent(node).drop_area(self.owner, self.incarnation, area, max_version)
