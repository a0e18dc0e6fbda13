"""The holder calls (hold.*) over the RPC for any owner a node speaks for: itself, or an export
it serves. Answers are checked for shape here; the page batches by `ramster.rpc.pages`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ramster.errors import ProtocolError
from ramster.pagestore.lent import Stored
from ramster.protocol import (
    EPHEMERAL,
    EXPORT_ADOPT,
    HOLD_CLAIM,
    HOLD_COPY,
    HOLD_DELETE_EXPORT,
    HOLD_DROP,
    HOLD_DROP_AREA,
    HOLD_EXPECT,
    HOLD_GET,
    HOLD_INVENTORY,
    HOLD_PUT,
    HOLD_PUT_COPY,
)
from ramster.rpc import Keys, PageBatch, RpcClient
from ramster.rpc.pages import flags_from_wire
from ramster.types import Incarnation

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Owner = tuple[str, str]
"""(owner, incarnation) as a hold.* call names it."""

ADOPT_TIMEOUT = 120.0
"""Seconds an export.adopt may take: the target rebuilds the export before it answers."""


class Kept(list[bool]):
    """A holder's answer to a put or a copy onto it: True for each page kept, and which
    incarnation of the holder answered (the identity its connection's handshake proved; a
    restarted holder answers as its new one). A copy lives where that incarnation lives."""

    incarnation: Incarnation | None = None


def _kept(flags: list[bool], incarnation: Incarnation | None) -> Kept:
    kept = Kept(flags)
    kept.incarnation = incarnation
    return kept


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    """A holder's answer to hold.claim: whether the claim was taken, and the newest claim."""

    taken: bool
    term: int
    node: str
    size: int
    deleted: int = 0
    """The term the export was last deleted under on that holder (0: never): copies of
    older terms are of a deleted life, never data."""


class HolderCalls:
    """hold.* calls to nodes by id; `spent` learns the bytes sent to a node."""

    def __init__(
        self,
        client_of: Callable[[str], RpcClient],
        spent: Callable[[str, int], None],
        timeout: float,
    ) -> None:
        self._client = client_of
        self._spent = spent
        self.timeout = timeout
        self._seq = time.time_ns() // 1000
        """The call sequence of this process's puts and drops (rising, from the clock so that a
        later process of the same identity starts above it): a holder refuses a put that
        arrives after a drop sent later (`LentPool.drop`)."""

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def put(
        self,
        node: str,
        owner: Owner,
        batch: PageBatch,
        *,
        forwarded: bool = False,
        ephemeral: bool = False,
    ) -> list[bool]:
        """hold.put (or, forwarded, hold.put_copy: another owner's verified copies) on node;
        pages of an ephemeral area say so (the holder may evict them)."""
        flags: list[object] = [EPHEMERAL] if ephemeral else []
        if not forwarded:
            flags.append(self._next_seq())
        params: list[object] = [*owner, *flags, batch.to_wire()]
        result, who = await self._client(node).call_answered(
            HOLD_PUT_COPY if forwarded else HOLD_PUT, params, timeout=self.timeout
        )
        self._spent(node, sum(len(p) for p in batch.payloads))
        kept = flags_from_wire(result, len(batch.offsets))
        return _kept(kept, who.incarnation if who is not None else None)

    async def copy(
        self,
        owner: Owner,
        source: str,
        target: str,
        keys: Keys,
        versions: list[int],
        checksums: list[int],
    ) -> tuple[list[bool], int]:
        """hold.copy on source: it verifies its copies and puts them on target. The target is
        told first, by the owner itself (hold.expect), exactly which copies to take."""
        wire = keys.to_wire()
        # The orders live in the target's process: only the incarnation told can keep copies.
        _, who = await self._client(target).call_answered(
            HOLD_EXPECT, [*owner, wire, versions, checksums, self._next_seq()], timeout=self.timeout
        )
        result = await self._client(source).call(
            HOLD_COPY,
            [*owner, target, wire, versions, checksums],
            timeout=self.timeout * 2,  # two hops
        )
        if type(result) is not list or len(result) != 2 or type(result[1]) is not int:
            raise ProtocolError("hold.copy must answer [flags, bytes]")
        self._spent(target, result[1])
        kept = flags_from_wire(result[0], len(keys))
        return _kept(kept, who.incarnation if who is not None else None), result[1]

    async def get(self, owner: Owner, node: str, keys: Keys) -> list[Stored | None]:
        """hold.get on node, answers in the order of the keys."""
        result = await self._client(node).call(
            HOLD_GET, [*owner, keys.to_wire()], timeout=self.timeout
        )
        batch = PageBatch.from_wire(result)
        if batch.offsets == keys.offsets and batch.areas == keys.areas:  # all held, in order
            return list(zip(batch.versions, batch.checksums, batch.payloads, strict=True))
        found = dict(
            zip(
                zip(batch.areas, batch.offsets, strict=True),
                zip(batch.versions, batch.checksums, batch.payloads, strict=True),
                strict=True,
            )
        )
        return [found.get(key) for key in keys]

    async def drop(self, owner: Owner, node: str, keys: Keys, versions: list[int]) -> None:
        """hold.drop on node (versioned: newer copies stay)."""
        result = await self._client(node).call(
            HOLD_DROP,
            [*owner, keys.to_wire(), versions, self._next_seq()],
            timeout=self.timeout,
        )
        flags_from_wire(result, len(keys))

    async def drop_area(self, owner: Owner, node: str, area: int, max_version: int) -> None:
        """hold.drop_area on node: the owner's pages of the area no newer than max_version."""
        await self._client(node).call(
            HOLD_DROP_AREA, [*owner, area, max_version], timeout=self.timeout
        )

    # -- exports: their servers' calls ---------------------------------------------------------

    async def claim(self, node: str, owner: str, term: int, size: int) -> ClaimAnswer:
        """hold.claim on node: take (term > 0) or ask about (term 0) an export's term."""
        result = await self._client(node).call(
            HOLD_CLAIM, [owner, term, size], timeout=self.timeout
        )
        if (
            type(result) is not list
            or len(result) not in (4, 5)
            or type(result[0]) is not bool
            or not all(type(x) is int for x in (result[1], result[3], *result[4:]))
            or type(result[2]) is not str
        ):
            raise ProtocolError("hold.claim must answer [taken, term, node, size(, deleted)]")
        deleted = result[4] if len(result) == 5 else 0
        return ClaimAnswer(result[0], result[1], result[2], result[3], deleted)

    async def inventory(
        self, node: str, owner: Owner, area: int, start: int, limit: int
    ) -> tuple[I64, U64, U64]:
        """hold.inventory on node: (offsets, versions, checksums) of held keys from start on."""
        result = await self._client(node).call(
            HOLD_INVENTORY, [*owner, area, start, limit], timeout=self.timeout * 2
        )
        if (
            type(result) is not list
            or len(result) != 3
            or not all(type(b) is bytes for b in result)
            or not len(result[0]) == len(result[1]) == len(result[2])
            or len(result[0]) % 8
            or len(result[0]) > 8 * limit
        ):
            raise ProtocolError("hold.inventory must answer three blobs of one length")
        offs = np.frombuffer(result[0], dtype="<i8").astype(np.int64)
        if len(offs) and (offs[0] < start or bool(np.any(np.diff(offs) <= 0))):
            raise ProtocolError("hold.inventory: offsets must ascend from start")
        versions = np.frombuffer(result[1], dtype="<u8").astype(np.uint64)
        sums = np.frombuffer(result[2], dtype="<u8").astype(np.uint64)
        return offs, versions, sums

    async def delete_export(self, node: str, owner: str, term: int) -> int:
        """hold.delete_export on node: its copies of the export are dropped for good."""
        result = await self._client(node).call(
            HOLD_DELETE_EXPORT, [owner, term], timeout=self.timeout
        )
        return result if type(result) is int else 0

    async def adopt(self, node: str, name: str, size: int, area: int, force: bool = False) -> int:
        """export.adopt on node: it takes the export over (next term, rebuild, serve); `force`
        even without hearing every member."""
        params: list[object] = [name, size, area, True] if force else [name, size, area]
        result = await self._client(node).call(EXPORT_ADOPT, params, timeout=ADOPT_TIMEOUT)
        return result if type(result) is int else 0


class SpeaksFor:
    """The hold.* calls of `frontswap.remote.Holders` for one owner: whoever mixes this in sets
    `calls` and `owner_identity` (a node for its own pages, an export's server for its)."""

    calls: HolderCalls
    owner_identity: Owner

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        """hold.put on node."""
        return await self.calls.put(node, self.owner_identity, batch, ephemeral=ephemeral)

    async def copy(
        self, source: str, target: str, keys: Keys, versions: list[int], checksums: list[int]
    ) -> tuple[list[bool], int]:
        """hold.copy on source: it verifies its copies and puts them on target."""
        return await self.calls.copy(self.owner_identity, source, target, keys, versions, checksums)

    async def get(self, node: str, keys: Keys) -> list[Stored | None]:
        """hold.get on node, answers in the order of the keys."""
        return await self.calls.get(self.owner_identity, node, keys)

    async def drop(self, node: str, keys: Keys, versions: list[int]) -> None:
        """hold.drop on node (versioned: newer copies stay)."""
        await self.calls.drop(self.owner_identity, node, keys, versions)

    async def drop_area(self, node: str, area: int, max_version: int) -> None:
        """hold.drop_area on node: the owner's pages of the area no newer than max_version."""
        await self.calls.drop_area(self.owner_identity, node, area, max_version)
