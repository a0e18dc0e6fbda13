"""NBD transmission without I/O: request decoding, request checks and simple replies."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ramster.errors import NbdProtocolError
from ramster.nbd import const

_HEADER = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")
_COMPACT_AT = 1 << 16
"""Consumed bytes kept at the buffer's head before it is compacted (amortises the memmove)."""


@dataclass(slots=True)
class Request:
    """One transmission request; `payload` is the data of a WRITE, else empty."""

    handle: int
    cmd: int
    flags: int
    offset: int
    length: int
    payload: bytes = b""


class PayloadTooLarge(NbdProtocolError):
    """A WRITE announced more data than the server accepts; its payload was not read."""

    def __init__(self, handle: int, length: int, limit: int) -> None:
        super().__init__(f"write of {length} bytes (limit {limit})")
        self.handle = handle


class RequestDecoder:
    """Bytes in, Requests out. The length of a WRITE is checked on its header, before any of its
    payload is buffered; bad magic or an oversized write raise NbdProtocolError (the stream
    cannot be trusted any more)."""

    def __init__(self, max_payload: int = const.MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the client."""
        if self._pos:
            if self._pos == len(self._buf):
                self._buf.clear()
                self._pos = 0
            elif self._pos >= _COMPACT_AT:
                del self._buf[: self._pos]
                self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet decoded into a request."""
        return len(self._buf) - self._pos

    def next(self) -> Request | None:
        """The next complete request, or None until more bytes arrive."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < const.REQUEST_HEADER:
            return None
        magic, flags, cmd, handle, offset, length = _HEADER.unpack_from(buf, pos)
        if magic != const.REQUEST_MAGIC:
            raise NbdProtocolError(f"bad request magic {magic:#x}")
        start = pos + const.REQUEST_HEADER
        if cmd != const.CMD_WRITE:
            self._pos = start
            return Request(handle, cmd, flags, offset, length)
        if length > self.max_payload:
            raise PayloadTooLarge(handle, length, self.max_payload)
        end = start + length
        if len(buf) < end:
            return None
        with memoryview(buf) as view:
            payload = view[start:end].tobytes()
        self._pos = end
        return Request(handle, cmd, flags, offset, length, payload)


def reply(handle: int, error: int = 0) -> bytes:
    """A simple reply header (a READ's data follows it when error is 0)."""
    return _REPLY.pack(const.SIMPLE_REPLY_MAGIC, error, handle)


_ALLOWED_FLAGS = {
    const.CMD_READ: const.CMD_FLAG_FUA,
    const.CMD_WRITE: const.CMD_FLAG_FUA,
    const.CMD_DISC: const.CMD_FLAG_FUA,
    const.CMD_FLUSH: const.CMD_FLAG_FUA,
    const.CMD_TRIM: const.CMD_FLAG_FUA,
    const.CMD_WRITE_ZEROES: const.CMD_FLAG_FUA | const.CMD_FLAG_NO_HOLE | const.CMD_FLAG_FAST_ZERO,
}
"""FUA is valid on every command once SEND_FUA is advertised (clients set it on reads too)."""


def check(request: Request, size: int, max_payload: int) -> int:
    """0 when the request can be served on an export of `size` bytes, else the spec's error."""
    cmd = request.cmd
    allowed = _ALLOWED_FLAGS.get(cmd)
    if allowed is None or request.flags & ~allowed:
        return const.EINVAL
    end = request.offset + request.length
    if cmd == const.CMD_READ:
        if request.length > max_payload or end > size:
            return const.EINVAL
    elif cmd in (const.CMD_WRITE, const.CMD_WRITE_ZEROES):
        if end > size:
            return const.ENOSPC
    elif cmd == const.CMD_TRIM:
        if end > size:
            return const.EINVAL
    elif request.offset or request.length:
        return const.EINVAL  # FLUSH and DISC carry no range
    return 0
