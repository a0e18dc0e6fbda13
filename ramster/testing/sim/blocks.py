"""The NBD byte model of the simulation: what each block of each export may read as.

Per block, the set of contents a read may return (as `model.py`'s KeyState does for pages):
while a write is in flight its old or new bytes; after an acknowledged write exactly those;
after a failed one (EIO, ENOSPC, a server that crashed under it) old or new bytes or EIO (a
refused store drops the old copy: the block is unreadable until written again). Zeros are
possible only where the model says so (never written, trimmed, zeroed): a written block that
reads as zeros is always a violation, also after a failed write. EIO is always allowed while
faults last (a holder may be unreachable); after healing it is allowed only where the loss is
excusable (see `excusable`).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

BLOCK = 4096
MAGIC = b"SIMBLK\0\0"
HEADER = struct.Struct(">8s16sQQ")
"""magic, export name, block number, write serial."""
ZERO = bytes(BLOCK)


def content(name: str, block: int, serial: int, compressible: bool) -> bytes:
    """The bytes of write number `serial` of `block`: recognisable, and either compressible (a
    64-byte unit repeated) or not."""
    head = HEADER.pack(MAGIC, name.encode(), block, serial)
    rng = random.Random(serial)
    body = rng.randbytes(64) * (BLOCK // 64) if compressible else rng.randbytes(BLOCK)
    return head + body[: BLOCK - len(head)]


def describe(data: bytes) -> str:
    """A short name of a block's bytes (for failure messages)."""
    if data == ZERO:
        return "zeros"
    magic, name, block, serial = HEADER.unpack_from(data)
    if magic != MAGIC:
        return f"other bytes {data[:8].hex()}"
    return f"{name.rstrip(bytes(1)).decode()}/{block}#{serial}"


@dataclass
class BlockState:
    """What one block may read as, and what losses it lived through."""

    possible: set[bytes] = field(default_factory=lambda: {ZERO})
    unsure: bool = False
    """A write of it failed (or its server died under it) since its last acknowledged one: it
    may be unreadable (EIO) for good."""
    acked: bool = False
    """Its newest known content was acknowledged (not zeros from a trim or a start)."""
    impaired_at_ack: frozenset[str] = frozenset()
    crashes_at_ack: int = 0
    pending: list[bytes] = field(default_factory=list)
    """Contents of writes of it still in flight (several may be: one server orders them)."""
    history: list[bytes] = field(default_factory=list)
    """Every content ever written to it (a forced takeover may bring any of them back)."""


class ExportModel:
    """The byte model of one life of one export (a delete starts a new life)."""

    def __init__(
        self, name: str, blocks: int, replicas: int, before: ExportModel | None = None
    ) -> None:
        self.name = name
        self.blocks = blocks
        self.replicas = replicas
        self.state = [BlockState() for _ in range(blocks)]
        self.earlier: list[set[bytes]] = (
            [set(st.history) | old for st, old in zip(before.state, before.earlier, strict=True)]
            if before is not None
            else [set() for _ in range(blocks)]
        )
        """Per block, what earlier lives (before a delete) wrote: a forced takeover by a node
        that missed the deletion (cut off then) may bring those back too."""
        self.forced = 0
        """Forced takeovers that served without hearing every node (they may lose writes)."""

    # -- operations ------------------------------------------------------------------------------

    def begin(self, block: int, data: bytes) -> None:
        """A write (or, with zeros, a trim or zeroing) of block is on its way."""
        st = self.state[block]
        st.possible.add(data)
        st.pending.append(data)
        if data != ZERO:
            st.history.append(data)

    def done(self, block: int, data: bytes, ok: bool, impaired: set[str], crashes: int) -> None:
        """It was answered: acknowledged, or failed (old, new or unreadable)."""
        st = self.state[block]
        if data in st.pending:
            st.pending.remove(data)
        if ok:
            # Writes of the block still in flight came after this one (its server runs those of
            # one block in the order they came): they may land on top of it.
            st.possible = {data, *st.pending}
            st.unsure = False
            st.acked = data != ZERO
            st.impaired_at_ack = frozenset(impaired)
            st.crashes_at_ack = crashes
        else:
            st.possible.add(data)
            st.unsure = True

    def forced_takeover(self) -> None:
        """A forced takeover served without hearing every node: what only they held is lost,
        so any block may read as any of its earlier writes, zeros or EIO from now on."""
        self.forced += 1
        for st, earlier in zip(self.state, self.earlier, strict=True):
            st.possible |= {ZERO, *st.history, *earlier}
            st.unsure = True

    # -- checks ----------------------------------------------------------------------------------

    def excusable(self, block: int, crashed: list[str]) -> bool:
        """Every copy of the block may be gone: R nodes lost their memory since it was
        acknowledged, counting the nodes impaired (down, paused, cut off, slow) when it was
        acknowledged (its write may have been placed on fewer holders), or its write failed."""
        st = self.state[block]
        if st.unsure or not st.acked:
            return True
        lost = set(st.impaired_at_ack) | set(crashed[st.crashes_at_ack :])
        return len(lost) >= self.replicas

    def check_read(
        self,
        block: int,
        got: bytes | int,
        strict: str | None,
        crashed: list[str],
        at_start: frozenset[bytes] = frozenset(),
    ) -> str | None:
        """A read's outcome against the model: None if possible, else what is wrong. `strict`
        (when EIO must be excused: "after healing", ...) or None (EIO is fine). `at_start`:
        what the block could read as when the read began (a write acknowledged while the read
        ran does not order it: NBD requests in flight at once may see old or new bytes)."""
        st = self.state[block]
        where = f"export {self.name} block {block}"
        if isinstance(got, int):
            if strict and not self.excusable(block, crashed):
                return f"{where}: acknowledged block unreadable {strict} (error {got})"
            return None
        if got in st.possible or got in at_start:
            return None
        known = sorted(describe(p) for p in st.possible)
        what = describe(got)
        if got == ZERO:
            return f"{where}: reads as zeros, expected one of {known} (never zeros)"
        if got in st.history:
            return f"{where}: reads older bytes {what}, expected one of {known}"
        return f"{where}: reads {what}, expected one of {known}"
