"""A blocking peer for synchronous (hypothesis) tests: a real handshake over a plain socket,
then sealed frames of the test's choosing."""

from __future__ import annotations

import socket
import struct

import msgpack  # type: ignore[import-untyped]

from ramster.rpc.auth import ClientHandshake, Secret, SessionKeys
from ramster.rpc.const import TAG_BYTES
from ramster.rpc.session import Identity


def read_frame(sock: socket.socket) -> bytes:
    """One frame body (ConnectionError on EOF)."""
    header = _exactly(sock, 4)
    (length,) = struct.unpack(">I", header)
    return _exactly(sock, length)


def _exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return bytes(out)


def _plain(obj: object) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def session(
    port: int, secret: Secret, cluster: str, identity: Identity | None = None
) -> tuple[socket.socket, SessionKeys]:
    """A connected socket past the handshake, and its keys."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    hs = ClientHandshake(secret, cluster, identity)
    sock.sendall(_plain([2, "ramster.hello", hs.hello()]))
    challenge = msgpack.unpackb(read_frame(sock), raw=False)
    sock.sendall(_plain([2, "ramster.auth", hs.challenge(challenge[2])]))
    keys = hs.keys
    assert keys is not None
    ready = msgpack.unpackb(bytes(keys.opener.open(memoryview(read_frame(sock)), 0)), raw=False)
    assert ready == [2, "ramster.ready", []], ready
    return sock, keys


def seal(keys: SessionKeys, body: bytes) -> bytes:
    """body (any bytes, msgpack or not) as the next sealed frame."""
    return b"".join(keys.sealer.seal(struct.pack(">I", len(body) + TAG_BYTES), body))
