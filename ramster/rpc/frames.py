"""Sans-IO framing: a 4-byte big-endian length, then one msgpack-RPC message, strictly checked.

The decoder never sees a socket: `feed(bytes)` (or the zero-copy pair `get_buffer()` /
`buffer_updated(n)`) returns whole, schema-checked messages and raises only `ProtocolError`.
An announced length above the limit is refused before a byte of its body is buffered.

Until `authenticate()` a decoder made with `preauth=True` holds a tiny buffer, refuses frames
above PREAUTH_MAX_FRAME and hands out one message at a time (the handshake changes how the
next frame is read); afterwards every frame is opened by the session's `Opener` before it is
decoded, and the encoder seals every frame with the session's `Sealer`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import msgpack  # type: ignore[import-untyped]

from ramster.errors import ProtocolError
from ramster.rpc.const import (
    HEADER_BYTES,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_METHOD_CHARS,
    MAX_MSGID,
    NOTIFICATION,
    PREAUTH_MAX_FRAME,
    PREAUTH_SCRATCH_BYTES,
    REQUEST,
    RESPONSE,
    RETAIN_BYTES,
    SCRATCH_BYTES,
    TAG_BYTES,
)
from ramster.rpc.session import Opener, Sealer
from ramster.types import Buffer

LARGE_SEALED = 64 * 1024
"""Sealed bodies above this are encrypted into the encoder's kept buffer."""

_HEADER = struct.Struct(">I")
_BIN8 = struct.Struct(">BB")
_BIN16 = struct.Struct(">BH")
_BIN32 = struct.Struct(">BI")


@dataclass(slots=True)
class WireError:
    """The error slot of a response: a numeric code and a human-readable message."""

    code: int
    message: str


@dataclass(slots=True)
class Request:
    """`[0, msgid, method, params]`: a call that expects exactly one Response."""

    msgid: int
    method: str
    params: list[object]


@dataclass(slots=True)
class Response:
    """`[1, msgid, error, result]`: the answer to the Request with the same msgid."""

    msgid: int
    error: WireError | None
    result: object


@dataclass(slots=True)
class Notification:
    """`[2, method, params]`: a one-way message (the handshake uses these)."""

    method: str
    params: list[object]


Message = Request | Response | Notification
"""Messages are plain slotted classes (not frozen: frozen dataclasses cost ~3x to build on the
hot path); treat them as read-only."""


class Chunks:
    """A msgpack bin made of several buffers, written unjoined; only as a message's last leaf."""

    __slots__ = ("nbytes", "parts")

    def __init__(self, parts: Sequence[Buffer]) -> None:
        self.parts = parts
        self.nbytes = sum(p.nbytes if type(p) is memoryview else len(p) for p in parts)


def _no_ext(code: int, data: bytes) -> NoReturn:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


def check_plain(obj: object, depth: int = 0) -> None:
    """Raise ProtocolError unless obj is made only of msgpack's plain types (no Timestamp)."""
    if depth > 32:
        raise ProtocolError("message nests too deeply")
    if obj is None or type(obj) in (int, str, bytes, bool, float):
        return
    if type(obj) is list:
        for item in obj:
            check_plain(item, depth + 1)
        return
    if type(obj) is dict:
        for key, value in obj.items():
            check_plain(key, depth + 1)
            check_plain(value, depth + 1)
        return
    raise ProtocolError(f"{type(obj).__name__} is not allowed in a message")


def _check_method(method: object) -> str:
    if type(method) is not str or not 0 < len(method) <= MAX_METHOD_CHARS:
        raise ProtocolError("method must be a non-empty string of at most 128 characters")
    return method


def _check_msgid(msgid: object) -> int:
    if type(msgid) is not int or not 0 <= msgid <= MAX_MSGID:
        raise ProtocolError("msgid must be a 32-bit unsigned integer")
    return msgid


def _check_params(params: object) -> list[object]:
    if type(params) is not list:
        raise ProtocolError("params must be an array")
    return params


def parse_message(obj: object) -> Message:
    """Check one unpacked msgpack object against the msgpack-RPC shapes; ProtocolError if off."""
    if type(obj) is not list or not obj:
        raise ProtocolError("a message must be a non-empty array")
    kind = obj[0]
    if kind == REQUEST and type(kind) is int and len(obj) == 4:
        return Request(_check_msgid(obj[1]), _check_method(obj[2]), _check_params(obj[3]))
    if kind == RESPONSE and type(kind) is int and len(obj) == 4:
        error = obj[2]
        wire_error = None
        if error is not None:
            if (
                type(error) is not list
                or len(error) != 2
                or type(error[0]) is not int
                or type(error[1]) is not str
            ):
                raise ProtocolError("a response error must be [code, message] or nil")
            wire_error = WireError(error[0], error[1][:MAX_ERROR_MESSAGE_CHARS])
        return Response(_check_msgid(obj[1]), wire_error, obj[3])
    if kind == NOTIFICATION and type(kind) is int and len(obj) == 3:
        return Notification(_check_method(obj[1]), _check_params(obj[2]))
    raise ProtocolError("not a msgpack-RPC request, response or notification")


def decode_body(body: Buffer) -> Message:
    """One frame body (without its length prefix) to a checked message."""
    try:
        obj = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True, ext_hook=_no_ext)
    except ProtocolError:
        raise
    except Exception as exc:
        # msgpack raises a family of ValueError/TypeError/StackError subclasses for bad bytes;
        # every one of them means the same thing here.
        raise ProtocolError(f"undecodable msgpack: {type(exc).__name__}") from exc
    return parse_message(obj)


class FrameDecoder:
    """Bytes in, checked messages out; bounded memory; raises only ProtocolError."""

    __slots__ = (
        "_big",
        "_big_filled",
        "_big_len",
        "_big_view",
        "_end",
        "_failed",
        "_full",
        "_max",
        "_opener",
        "_scratch",
        "_start",
        "_step",
        "_view",
    )

    def __init__(
        self,
        max_message_bytes: int,
        scratch_bytes: int = SCRATCH_BYTES,
        *,
        preauth: bool = False,
    ) -> None:
        if max_message_bytes < 1 or scratch_bytes < HEADER_BYTES + 1:
            raise ValueError("max_message_bytes and scratch_bytes must be positive")
        self._full = (max_message_bytes, scratch_bytes)
        self._step = preauth
        """One message per call: the next frame may have to be read another way."""
        self._opener: Opener | None = None
        if preauth:
            max_message_bytes = min(max_message_bytes, PREAUTH_MAX_FRAME)
            scratch_bytes = min(scratch_bytes, PREAUTH_SCRATCH_BYTES)
        self._max = max_message_bytes
        self._scratch = bytearray(scratch_bytes)
        self._view = memoryview(self._scratch)
        self._start = 0
        self._end = 0
        self._big: bytearray | None = None
        """Buffer for frames larger than the scratch; kept for the next one (up to a size)."""
        self._big_view = memoryview(b"")
        self._big_len = 0
        """Length of the large frame being read into _big, or 0 when none is."""
        self._big_filled = 0
        self._failed = False

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete message held right now."""
        if self._big_len:
            return HEADER_BYTES + self._big_filled
        return self._end - self._start

    @property
    def authenticated(self) -> bool:
        """True once authenticate() installed the session's opener."""
        return self._opener is not None

    def authenticate(self, opener: Opener) -> None:
        """From the next frame on: the full limits, and every frame opened by `opener`."""
        max_message_bytes, scratch_bytes = self._full
        pending = self._view[self._start : self._end]
        scratch = bytearray(max(scratch_bytes, pending.nbytes + 1))
        scratch[: pending.nbytes] = pending
        self._view.release()
        self._scratch = scratch
        self._view = memoryview(scratch)
        self._end = pending.nbytes
        self._start = 0
        self._max = max_message_bytes + TAG_BYTES
        self._opener = opener
        self._step = False

    def next_messages(self) -> list[Message]:
        """Messages already buffered but held back (one at a time before authenticate())."""
        if self._failed or self._big_len:
            return []
        try:
            return self._parse_scratch()
        except ProtocolError:
            self._failed = True
            raise

    def _decode(self, body: memoryview) -> Message:
        opener = self._opener
        if opener is None:
            return decode_body(body)
        return decode_body(opener.open(body, RETAIN_BYTES))

    @property
    def allocated_bytes(self) -> int:
        """Bytes of buffers this decoder holds (the scratch plus any large-frame buffer)."""
        return len(self._scratch) + (len(self._big) if self._big is not None else 0)

    def _large_frame_buffer(self, length: int) -> memoryview:
        # A fresh multi-page buffer costs a page fault per 4 KiB on first write, more than
        # the copy itself; reusing one makes large frames cheap. Bounded by RETAIN_BYTES.
        big = self._big
        if big is None or len(big) < length:
            self._big_view.release()
            big = self._big = bytearray(length)
            self._big_view = memoryview(big)
        return self._big_view

    def get_buffer(self) -> memoryview:
        """Where the next bytes should be written (never empty)."""
        if self._failed:
            raise ProtocolError("decoder already failed")
        if self._big_len:
            return self._big_view[self._big_filled : self._big_len]
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> list[Message]:
        """nbytes were written into the last get_buffer(); return the messages now complete."""
        if self._failed:
            raise ProtocolError("decoder already failed")
        try:
            if self._big_len:
                self._big_filled += nbytes
                if self._big_filled < self._big_len:
                    return []
                length = self._big_len
                self._big_len = 0
                with self._big_view[:length] as body:
                    # msgpack copies what it returns: nothing keeps pointing into the buffer.
                    message = self._decode(body)
                if length > RETAIN_BYTES:
                    self._big_view.release()
                    self._big_view = memoryview(b"")
                    self._big = None
                return [message]
            self._end += nbytes
            return self._parse_scratch()
        except ProtocolError:
            self._failed = True
            raise

    def feed(self, data: Buffer) -> list[Message]:
        """Copy data in and return the messages now complete."""
        src = memoryview(data).cast("B")
        out: list[Message] = []
        pos = 0
        total = src.nbytes
        while pos < total:
            dst = self.get_buffer()
            n = min(dst.nbytes, total - pos)
            dst[:n] = src[pos : pos + n]
            pos += n
            out.extend(self.buffer_updated(n))
        return out

    def _parse_scratch(self) -> list[Message]:
        out: list[Message] = []
        view = self._view
        start = self._start
        end = self._end
        while end - start >= HEADER_BYTES:
            (length,) = _HEADER.unpack_from(self._scratch, start)
            if length == 0 or length > self._max:
                raise ProtocolError(f"frame of {length} bytes refused (limit {self._max} bytes)")
            body_start = start + HEADER_BYTES
            body_end = body_start + length
            if body_end <= end:
                out.append(self._decode(view[body_start:body_end]))
                start = body_end
                if self._step:
                    break
                continue
            if HEADER_BYTES + length > len(self._scratch):
                # Too big for the scratch: the rest goes straight into the large-frame buffer.
                have = end - body_start
                big = self._large_frame_buffer(length)
                big[:have] = view[body_start:end]
                self._big_len = length
                self._big_filled = have
                start = end = 0
            break
        if start == end:
            start = end = 0
        elif start > 0:
            # Keep the partial frame at the front so the rest of it fits behind it.
            pending = end - start
            view[:pending] = view[start:end]
            start, end = 0, pending
        self._start = start
        self._end = end
        return out


class FrameEncoder:
    """Messages to lists of buffers ready for `writelines`; the msgpack packer is reused.

    Once `sealer` is set every frame is sealed by it, in the order frames are encoded: encode
    a frame only to write it at once."""

    __slots__ = ("_max", "_out", "_packer", "_plain", "lent", "sealer")

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        self.sealer: Sealer | None = None
        self._plain: bytearray | None = None
        """Kept buffer a multi-part body is gathered in before it is encrypted."""
        self._out: bytearray | None = None
        """Kept buffer large frames are encrypted into (fresh ones cost cache misses)."""
        self.lent = False
        """The last frame is in _out: call written() once it was handed to the transport."""

    def request(self, msgid: int, method: str, params: list[object]) -> list[Buffer]:
        """Frame `[0, msgid, method, params]`."""
        return self._encode([REQUEST, msgid, method, params])

    def response(self, msgid: int, error: WireError | None, result: object) -> list[Buffer]:
        """Frame `[1, msgid, error, result]`."""
        wire_error = None if error is None else [error.code, error.message]
        return self._encode([RESPONSE, msgid, wire_error, result])

    def notification(self, method: str, params: list[object]) -> list[Buffer]:
        """Frame `[2, method, params]`."""
        return self._encode([NOTIFICATION, method, params])

    def _encode(self, message: list[object]) -> list[Buffer]:
        packer = self._packer
        try:
            tail = _pack(packer, message)
            body = packer.bytes()
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"cannot encode message: {exc}") from exc
        finally:
            packer.reset()
        sealer = self.sealer
        if tail is None:
            size = len(body)
            if size > self._max:
                raise ProtocolError(f"message of {size} bytes exceeds the limit of {self._max}")
            if sealer is not None:
                header = _HEADER.pack(size + TAG_BYTES)
                if sealer.encrypt and size > LARGE_SEALED:
                    return self._seal_into(sealer, header, body, size)
                return sealer.seal(header, body)
            return [_HEADER.pack(size) + body]
        bin_header = _bin_header(tail.nbytes)
        size = len(body) + len(bin_header) + tail.nbytes
        if size > self._max:
            raise ProtocolError(f"message of {size} bytes exceeds the limit of {self._max}")
        if sealer is not None:
            header = _HEADER.pack(size + TAG_BYTES)
            if not sealer.encrypt:
                # In the clear the body itself is written: it must be a buffer of its own.
                return sealer.seal(header, b"".join((body, bin_header, *tail.parts)))
            # One AEAD call over the whole body, gathered in a kept buffer (fresh ones of a few
            # hundred KiB cost page faults and cache misses, more than the copy).
            with self._gather(size, (body, bin_header, *tail.parts)) as plain:
                if size > LARGE_SEALED:
                    return self._seal_into(sealer, header, plain, size)
                return sealer.seal(header, plain)
        return [b"".join((_HEADER.pack(size), body, bin_header)), *tail.parts]

    def _seal_into(self, sealer: Sealer, header: bytes, body: Buffer, size: int) -> list[Buffer]:
        total = HEADER_BYTES + size + TAG_BYTES
        out = None if self.lent else self._out  # a lent buffer may still be the transport's
        if out is None or len(out) < total:
            out = bytearray(total)
        self._out = out if total <= RETAIN_BYTES else None
        self.lent = self._out is not None
        view = memoryview(out)[:total]
        sealer.seal_into(header, body, view)
        return [view]

    def written(self, flushed: bool) -> None:
        """The frame of the kept buffer was given to the transport; flushed: all of it went
        to the kernel (the transport keeps no reference), so the buffer can be used again."""
        if not flushed:
            self._out = None
        self.lent = False

    def _gather(self, size: int, parts: Sequence[Buffer]) -> memoryview:
        plain = self._plain
        if plain is None or len(plain) < size:
            plain = bytearray(size)
            if size <= RETAIN_BYTES:
                self._plain = plain
        view = memoryview(plain)[:size]
        pos = 0
        for part in parts:
            end = pos + (part.nbytes if type(part) is memoryview else len(part))
            view[pos:end] = part
            pos = end
        return view


def _pack(packer: msgpack.Packer, obj: object) -> Chunks | None:
    """Pack obj; a Chunks at the very end of the nested lists becomes a bin header only."""
    if type(obj) is list and obj:
        last = obj[-1]
        if type(last) is Chunks or (type(last) is list and _ends_with_chunks(last)):
            packer.pack_array_header(len(obj))
            for item in obj[:-1]:
                packer.pack(item)
            if type(last) is Chunks:
                return last  # its bin header is appended by the caller
            return _pack(packer, last)
    packer.pack(obj)
    return None


def _bin_header(size: int) -> bytes:
    """msgpack's bin 8/16/32 header (the Packer has no public call for a bare header)."""
    if size < 0x100:
        return _BIN8.pack(0xC4, size)
    if size < 0x10000:
        return _BIN16.pack(0xC5, size)
    if size < 0x100000000:
        return _BIN32.pack(0xC6, size)
    raise ProtocolError("a bin cannot exceed 4 GiB")


def _ends_with_chunks(obj: list[object]) -> bool:
    while obj:
        last = obj[-1]
        if type(last) is Chunks:
            return True
        if type(last) is not list:
            return False
        obj = last
    return False
