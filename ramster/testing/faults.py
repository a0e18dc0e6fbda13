"""The in-process holder transport with faults: calls that are delayed, answered late or not at
all, holders that are down, paused or restarted. What a network and its peers do to the remote
tier, on demand and reproducibly (one seeded random generator), without sockets."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from ramster.cluster.placement import Candidate
from ramster.errors import PeerLost, PeerTimeout
from ramster.pagestore.lent import LentPool, Stored
from ramster.rpc.pages import Keys, PageBatch
from ramster.testing.inproc import InProcessHolders


@dataclass
class Faults:
    """What goes wrong, shared by every owner's view of the holders."""

    rng: random.Random = field(default_factory=lambda: random.Random(0))
    down: set[str] = field(default_factory=set)
    """Holders that refuse every call at once (PeerLost), as a crashed peer does."""
    paused: set[str] = field(default_factory=set)
    """Holders that answer nothing until resumed or the call times out (PeerTimeout)."""
    lose_replies: dict[str, float] = field(default_factory=dict)
    """holder -> chance that a call is carried out and its answer lost (PeerTimeout)."""
    fail_calls: dict[str, float] = field(default_factory=dict)
    """holder -> chance that a call fails before it is carried out (PeerLost)."""
    max_turns: int = 3
    """Each call yields to the loop 0..max_turns times before it acts: interleavings."""
    timeout: float = 0.05
    """Seconds a call waits on a paused holder before it times out."""
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0
    injected: int = 0
    """Faults that hit a call (lost answers, failures, timeouts, refusals)."""

    def clear(self) -> None:
        """No more faults (holders that were restarted stay restarted)."""
        self.down.clear()
        self.paused.clear()
        self.lose_replies.clear()
        self.fail_calls.clear()
        self.resumed.set()


class FaultyHolders(InProcessHolders):
    """InProcessHolders whose every call goes through `faults` first."""

    def __init__(
        self,
        owner: str,
        incarnation: str,
        lents: dict[str, LentPool],
        faults: Faults,
        page_size: int = 4096,
    ) -> None:
        super().__init__(owner, incarnation, lents, page_size)
        self.faults = faults
        self.down = faults.down  # candidates() and state_of() read it

    def state_of(self, node: str) -> str:
        """dead while down, suspect while paused, else alive."""
        if node not in self.lents:
            return "unknown"
        if node in self.faults.down:
            return "dead"
        return "suspect" if node in self.faults.paused else "alive"

    def candidates(self) -> list[Candidate]:
        """Live holders that are not paused, with their free lent bytes."""
        return [c for c in super().candidates() if c.node not in self.faults.paused]

    async def _enter(self, node: str) -> None:
        f = self.faults
        f.calls += 1
        for _ in range(f.rng.randint(0, f.max_turns)):
            await asyncio.sleep(0)
        if node in f.down or f.rng.random() < f.fail_calls.get(node, 0.0):
            f.injected += 1
            raise PeerLost(f"{node} is down")
        if node in f.paused:
            f.resumed.clear()
            try:
                async with asyncio.timeout(f.timeout):
                    while node in f.paused:
                        await f.resumed.wait()
                        f.resumed.clear()
            except TimeoutError:
                f.injected += 1
                raise PeerTimeout(f"{node} did not answer (paused)") from None

    def _exit(self, node: str) -> None:
        f = self.faults
        if f.rng.random() < f.lose_replies.get(node, 0.0):
            f.injected += 1
            raise PeerTimeout(f"the answer of {node} was lost")

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        """hold.put, through the faults."""
        await self._enter(node)
        kept = await super().put(node, batch, ephemeral)
        self._exit(node)
        return kept

    async def get(self, node: str, keys: Keys) -> list[Stored | None]:
        """hold.get, through the faults."""
        await self._enter(node)
        held = await super().get(node, keys)
        self._exit(node)
        return held

    async def copy(
        self, source: str, target: str, keys: Keys, versions: list[int], checksums: list[int]
    ) -> tuple[list[bool], int]:
        """hold.copy, through the faults of both holders."""
        await self._enter(source)
        await self._enter(target)
        result = await super().copy(source, target, keys, versions, checksums)
        self._exit(source)
        return result

    async def drop(self, node: str, keys: Keys, versions: list[int]) -> None:
        """hold.drop, through the faults."""
        await self._enter(node)
        await super().drop(node, keys, versions)
        self._exit(node)

    async def drop_area(self, node: str, area: int, max_version: int) -> None:
        """hold.drop_area, through the faults."""
        await self._enter(node)
        await super().drop_area(node, area, max_version)
        self._exit(node)
