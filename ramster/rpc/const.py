"""Protocol and timing constants of the peer RPC, each with the reason for its value."""

from __future__ import annotations

PROTOCOL_VERSION = 2
"""Bumped on any incompatible change of framing, handshake or method schemas (2: roles and
identities in the handshake, session keys, every frame after it sealed)."""

HEADER_BYTES = 4
"""Each frame starts with its msgpack body length as a 4-byte big-endian unsigned integer:
the reader learns a frame's size before buffering any of it."""

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2
"""msgpack-RPC message types (the first element of every message)."""

MAX_MSGID = (1 << 32) - 1
"""msgpack-RPC message ids are 32-bit unsigned."""

MAX_METHOD_CHARS = 128
"""Method names are short identifiers; a long one is garbage, not a method."""

MAX_ERROR_MESSAGE_CHARS = 1024
"""Error texts sent to a peer are truncated to this, so an error reply stays small."""

NONCE_BYTES = 32
"""Handshake nonces: 256 random bits each, so a transcript never repeats."""

MIN_SECRET_BYTES = 16
"""A cluster secret shorter than 128 bits is refused as too guessable."""

MAX_IDENTITY_BYTES = 128
"""Node ids and incarnations named in the handshake (UTF-8), so that its messages stay small."""

PREAUTH_MAX_FRAME = 1024
"""Largest frame accepted before the handshake is done: its messages are a few hundred bytes,
so an unauthenticated peer can make the server buffer (and decode) at most this much."""

PREAUTH_SCRATCH_BYTES = 2 * 1024
"""Read buffer of a connection until its handshake is done (one pre-auth frame and a header);
the full scratch is allocated only for an authenticated peer."""

TAG_BYTES = 16
"""AES-GCM tag at the end of every sealed frame."""

KEY_BYTES = 32
"""AES-256 session keys, one per direction, and the handshake's proof keys."""

MAX_SEALED_FRAMES = 1 << 32
"""Frames sealed under one session key before the connection is closed (the peer reconnects
with fresh keys); far below AES-GCM's limits for counter nonces, and hours of traffic at
millions of frames per second."""

SCRATCH_BYTES = 64 * 1024
"""Per-connection read buffer: small frames are parsed in place from it; a frame larger than
this is read straight into a buffer of its own exact size (one allocation, no regrowth)."""

WRITE_HIGH_WATER = 1024 * 1024
"""Bytes a connection's transport may hold unsent before writers wait for it to drain (and a
server stops reading that peer): a few 64-page batches, so that pipelined calls keep both ends
busy instead of each batch waiting for the last to leave (the transports' default is 64 KiB,
a quarter of one batch). Bounded per connection all the same."""

RETAIN_BYTES = 512 * 1024
"""A connection keeps its large-frame buffer for the next frame if it is at most this big
(a 64-page batch is ~260 KiB); a bigger one is freed after use."""

MAX_UNAUTHENTICATED = 64
"""Connections a server keeps that have not finished their handshake; past it the oldest is
dropped, so that junk never takes the slots of authenticated peers (they count apart)."""

MAX_UNAUTHENTICATED_PER_SOURCE = 16
"""Connections one address may keep open before finishing their handshakes; more are refused."""

HELLO = "ramster.hello"
CHALLENGE = "ramster.challenge"
AUTH = "ramster.auth"
READY = "ramster.ready"
REFUSED = "ramster.refused"
"""Handshake notifications; no request is served on a connection before READY."""

PING = "rpc.ping"
PUT_PAGES = "pages.put"
GET_PAGES = "pages.get"
DROP_PAGES = "pages.drop"
"""Method names known to the RPC layer itself; later features register their own."""

MAX_AREA = (1 << 16) - 1
MAX_OFFSET = (1 << 32) - 1
MAX_VERSION = (1 << 63) - 1
MAX_CHECKSUM = (1 << 64) - 1  # xxh3-64 of the uncompressed page
"""Ranges of the page batch fields (they match the page store's key space)."""

SILENT_ABORT = 1.0
"""Seconds of silence after which a call's timeout drops its connection: nothing came back
since the call was sent, for this long, so the path or the peer is gone. Shorter silences (a
slow handler on an idle connection) keep it; heartbeats break the silence of a live peer."""
