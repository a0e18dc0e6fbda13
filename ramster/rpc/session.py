"""What a finished handshake yields: who the peer is, and the per-direction AEADs that seal and
open every frame after it.

Each direction has its own AES-256-GCM key and a frame counter; the 96-bit nonce is the
counter itself, never sent, so a frame that is modified, dropped, reordered, replayed or
injected does not open, and the connection that carried it is closed. With encryption off
(`encrypt=False` on both sides, for a trusted network) frames travel in the clear and only
their tag is checked: AES-GCM over the frame as associated data (GMAC), integrity unchanged.
"""

from __future__ import annotations

import contextvars
import struct
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ramster.errors import IntegrityError
from ramster.rpc.const import KEY_BYTES, MAX_IDENTITY_BYTES, MAX_SEALED_FRAMES, TAG_BYTES
from ramster.types import Buffer, Incarnation, NodeId

_NONCE = struct.Struct(">4xQ")
"""12-byte nonce: four zero bytes, then the 64-bit frame counter of one direction."""

LARGE_FRAME = 64 * 1024
"""Frames above this are opened into a kept buffer rather than a fresh bytes object."""
SMALL_FRAME = 16 * 1024
"""Sealed frames up to this are joined to their header before they are written."""


class Role(Enum):
    """What the peer at the other end of a session may do."""

    NODE = "node"
    """A cluster member: holder calls (as itself only), heartbeats, the coordinator's orders."""
    CLIENT = "client"
    """A program (ramster.Client, the CLI): the frontswap calls and read-only node calls."""


NODES = frozenset({Role.NODE})
"""Methods only nodes may call (the default for a registered method)."""
ANYONE = frozenset(Role)
"""Methods every authenticated peer may call."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who one end of a session says it is; the handshake proves it knows the secret for it."""

    role: Role
    node_id: NodeId = NodeId("")
    incarnation: Incarnation = Incarnation("")

    def __post_init__(self) -> None:
        for name in ("node_id", "incarnation"):
            value: object = getattr(self, name)
            if not isinstance(value, str) or len(value.encode()) > MAX_IDENTITY_BYTES:
                raise ValueError(f"{name} must be a string of at most {MAX_IDENTITY_BYTES} bytes")
        if self.role is Role.CLIENT and (self.node_id or self.incarnation):
            raise ValueError("a client names no node id or incarnation")

    @classmethod
    def node(cls, node_id: str, incarnation: str) -> Identity:
        """A node's identity."""
        if not node_id or not incarnation:
            raise ValueError("a node identity needs a node id and an incarnation")
        return cls(Role.NODE, NodeId(node_id), Incarnation(incarnation))

    @classmethod
    def client(cls) -> Identity:
        """A program's identity (a client names no node)."""
        return cls(Role.CLIENT)

    def __str__(self) -> str:
        if self.role is Role.CLIENT:
            return "client"
        return f"node {self.node_id or '?'} ({self.incarnation or '?'})"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated peer a handler is serving, and where its connection comes from."""

    identity: Identity
    address: str


_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("ramster_rpc_caller")


def caller() -> Caller:
    """The peer whose call is being handled (set by the server around every handler)."""
    try:
        return _CALLER.get()
    except LookupError:
        raise RuntimeError("caller() outside an RPC handler") from None


def set_caller(value: Caller) -> contextvars.Token[Caller]:
    """Make `value` the caller of the handlers run (or tasks created) until reset."""
    return _CALLER.set(value)


def reset_caller(token: contextvars.Token[Caller]) -> None:
    """Undo set_caller."""
    _CALLER.reset(token)


class Sealer:
    """Seals the frames of one direction: AES-256-GCM, counter nonces, in sending order."""

    __slots__ = ("_aead", "_count", "encrypt")

    def __init__(self, key: bytes, encrypt: bool) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a session key is 32 bytes")
        self._aead = AESGCM(key)
        self._count = 0
        self.encrypt = encrypt

    def _nonce(self) -> bytes:
        count = self._count
        if count >= MAX_SEALED_FRAMES:
            raise IntegrityError("session key used up: reconnect for fresh keys")
        self._count = count + 1
        return _NONCE.pack(count)

    def seal(self, header: bytes, body: Buffer) -> list[Buffer]:
        """header (the 4-byte length of what follows) and the sealed body, ready to write."""
        nonce = self._nonce()
        if not self.encrypt:
            return [header, body, self._aead.encrypt(nonce, b"", body)]
        # One AEAD call over the whole body; its output is a fresh bytes object, written as it
        # is (a small frame is joined to its header: one buffer is cheaper to write).
        sealed = self._aead.encrypt(nonce, body, None)
        if len(sealed) <= SMALL_FRAME:
            return [header + sealed]
        return [header, sealed]

    def seal_into(self, header: bytes, body: Buffer, out: memoryview) -> None:
        """Encrypt body into out, after header: out is exactly header + body + tag long."""
        nonce = self._nonce()
        n = len(header)
        out[:n] = header
        self._aead.encrypt_into(nonce, body, None, out[n:])


class Opener:
    """Opens the frames of one direction, in order; IntegrityError for any that fails."""

    __slots__ = ("_aead", "_big", "_count", "encrypt")

    def __init__(self, key: bytes, encrypt: bool) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a session key is 32 bytes")
        self._aead = AESGCM(key)
        self._count = 0
        self._big: bytearray | None = None
        self.encrypt = encrypt

    def open(self, sealed: memoryview, retain: int) -> Buffer:
        """The plaintext of one sealed frame body (valid until the next call)."""
        if sealed.nbytes < TAG_BYTES:
            raise IntegrityError("sealed frame shorter than its tag")
        count = self._count
        if count >= MAX_SEALED_FRAMES:
            raise IntegrityError("session key used up")
        nonce = _NONCE.pack(count)
        size = sealed.nbytes - TAG_BYTES
        try:
            if not self.encrypt:
                body = sealed[:size]
                self._aead.decrypt(nonce, sealed[size:], body)
                plain: Buffer = body
            elif size <= LARGE_FRAME:
                plain = self._aead.decrypt(nonce, sealed, None)
            else:
                plain = self._open_large(nonce, sealed, size, retain)
        except InvalidTag:
            raise IntegrityError("a frame failed its integrity check") from None
        self._count = count + 1
        return plain

    def _open_large(self, nonce: bytes, sealed: memoryview, size: int, retain: int) -> Buffer:
        # A fresh multi-page buffer per frame costs page faults; one kept buffer does not.
        big = self._big
        if big is None or len(big) < size:
            big = bytearray(size)
            if size <= retain:
                self._big = big
        view = memoryview(big)[:size]
        self._aead.decrypt_into(nonce, sealed, None, view)
        return view
