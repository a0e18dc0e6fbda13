"""The server side of the NBD fixed newstyle handshake, without I/O: bytes in, bytes out.

Options served: GO and INFO (with NBD_INFO_EXPORT, NAME, DESCRIPTION and BLOCK_SIZE),
EXPORT_NAME (the old way in), LIST and ABORT. Every other option is answered
NBD_REP_ERR_UNSUP and negotiation goes on. Broken framing (bad magic, unknown client flags,
oversized option) ends the session: the caller closes the socket.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ramster.nbd import const

_OPTION = struct.Struct(">QII")
_REPLY = struct.Struct(">QIII")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")

GREETING = struct.pack(
    ">QQH", const.NBDMAGIC, const.IHAVEOPT, const.FLAG_FIXED_NEWSTYLE | const.FLAG_NO_ZEROES
)
"""What the server says first: NBDMAGIC, IHAVEOPT and its handshake flags."""

OPTION_NAMES = {
    const.OPT_EXPORT_NAME: "EXPORT_NAME",
    const.OPT_ABORT: "ABORT",
    const.OPT_LIST: "LIST",
    const.OPT_STARTTLS: "STARTTLS",
    const.OPT_INFO: "INFO",
    const.OPT_GO: "GO",
    const.OPT_STRUCTURED_REPLY: "STRUCTURED_REPLY",
    const.OPT_LIST_META_CONTEXT: "LIST_META_CONTEXT",
    const.OPT_SET_META_CONTEXT: "SET_META_CONTEXT",
    const.OPT_EXTENDED_HEADERS: "EXTENDED_HEADERS",
}


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What a client learns about an export before transmission."""

    name: str
    size: int
    flags: int
    """Transmission flags (NBD_FLAG_*)."""
    min_block: int
    preferred_block: int
    max_block: int
    description: str = ""


class Phase(enum.Enum):
    """Where a connection is in the handshake."""

    CLIENT_FLAGS = "client flags"
    OPTIONS = "options"
    TRANSMISSION = "transmission"
    CLOSED = "closed"


class Handshake:
    """Feed it the client's bytes; send what data_to_send() returns; stop at TRANSMISSION or
    CLOSED. The first export is also the default one (the empty name). With no exports (a
    node that may adopt moved ones) every name is unknown."""

    def __init__(self, exports: Sequence[ExportInfo]) -> None:
        self._exports = {e.name: e for e in exports}
        self._default = exports[0] if exports else None
        self._in = bytearray()
        self._out = bytearray(GREETING)
        self.phase = Phase.CLIENT_FLAGS
        self.export: ExportInfo | None = None
        """The export chosen, once in TRANSMISSION."""
        self.no_zeroes = False
        self.violation: str | None = None
        """Why the session was ended by the server (None: it ended at the client's wish)."""
        self.options_seen = 0
        self.options_unsupported = 0

    # -- I/O edges -----------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the client and answer every complete option in them."""
        self._in += data
        while self._step():
            pass

    def transmitting(self) -> bool:
        """The client chose an export: what follows are transmission requests."""
        return self.phase is Phase.TRANSMISSION

    def closed(self) -> bool:
        """The session ended during the handshake; the connection must be closed."""
        return self.phase is Phase.CLOSED

    def data_to_send(self) -> bytes:
        """Bytes for the client produced so far (then forgotten here)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def unused(self) -> bytes:
        """Bytes the client sent after the handshake ended (its first requests, if any)."""
        rest = bytes(self._in)
        self._in.clear()
        return rest

    # -- the state machine ---------------------------------------------------------------------

    def _step(self) -> bool:
        """Handle one client message if complete; False when more bytes are needed."""
        if self.phase in (Phase.TRANSMISSION, Phase.CLOSED):
            return False
        if self.phase is Phase.CLIENT_FLAGS:
            if len(self._in) < 4:
                return False
            (flags,) = _U32.unpack_from(self._in)
            del self._in[:4]
            if flags & ~const.KNOWN_CLIENT_FLAGS:
                return self._end(f"unknown client flags {flags:#x}")
            self.no_zeroes = bool(flags & const.CLIENT_NO_ZEROES)
            self.phase = Phase.OPTIONS
            return True
        if len(self._in) < const.OPTION_HEADER:
            return False
        magic, option, length = _OPTION.unpack_from(self._in)
        if magic != const.IHAVEOPT:
            return self._end(f"bad option magic {magic:#x}")
        if length > const.MAX_OPTION_DATA:
            # Checked on the header alone: the data is never buffered.
            return self._end(f"option {option} with {length} bytes of data")
        if len(self._in) < const.OPTION_HEADER + length:
            return False
        data = bytes(self._in[const.OPTION_HEADER : const.OPTION_HEADER + length])
        del self._in[: const.OPTION_HEADER + length]
        self.options_seen += 1
        self._option(option, data)
        return True

    def _end(self, violation: str | None) -> bool:
        self.phase = Phase.CLOSED
        self.violation = violation
        return False

    def _option(self, option: int, data: bytes) -> None:
        if option == const.OPT_EXPORT_NAME:
            self._export_name(data)
        elif option == const.OPT_ABORT:
            self._reply(option, const.REP_ACK)
            self._end(None)
        elif option == const.OPT_LIST:
            if data:
                self._error(option, const.REP_ERR_INVALID, "NBD_OPT_LIST takes no data")
                return
            for name in self._exports:
                raw = name.encode()
                self._reply(option, const.REP_SERVER, _U32.pack(len(raw)) + raw)
            self._reply(option, const.REP_ACK)
        elif option in (const.OPT_INFO, const.OPT_GO):
            self._info_or_go(option, data)
        else:
            self.options_unsupported += 1
            name = OPTION_NAMES.get(option, str(option))
            self._error(option, const.REP_ERR_UNSUP, f"option {name} is not supported")

    def _export_name(self, data: bytes) -> None:
        # EXPORT_NAME cannot be answered with an error: an unknown name ends the session.
        name = _decode_name(data)
        export = self._lookup(name) if name is not None else None
        if export is None:
            self._end(f"NBD_OPT_EXPORT_NAME for unknown export {data[:64]!r}")
            return
        self._out += struct.pack(">QH", export.size, export.flags)
        if not self.no_zeroes:
            self._out += bytes(124)
        self._enter(export)

    def _info_or_go(self, option: int, data: bytes) -> None:
        if len(data) < 6:
            self._error(option, const.REP_ERR_INVALID, "option data too short")
            return
        (name_len,) = _U32.unpack_from(data)
        if name_len > len(data) - 6:
            self._error(option, const.REP_ERR_INVALID, "export name longer than the option")
            return
        (count,) = _U16.unpack_from(data, 4 + name_len)
        if len(data) != 6 + name_len + 2 * count:
            self._error(option, const.REP_ERR_INVALID, "information request count mismatch")
            return
        name = _decode_name(data[4 : 4 + name_len])
        if name is None:
            self._error(option, const.REP_ERR_INVALID, "export name is not a valid string")
            return
        export = self._lookup(name)
        if export is None:
            self._error(option, const.REP_ERR_UNKNOWN, f"no export named {name!r}")
            return
        wanted = {_U16.unpack_from(data, 6 + name_len + 2 * i)[0] for i in range(count)}
        self._info(option, const.INFO_EXPORT, struct.pack(">QH", export.size, export.flags))
        if const.INFO_NAME in wanted:
            self._info(option, const.INFO_NAME, export.name.encode())
        if const.INFO_DESCRIPTION in wanted and export.description:
            self._info(option, const.INFO_DESCRIPTION, export.description.encode())
        # Sent whether asked or not (the spec allows it): clients then know sub-page requests
        # are fine and that 4 KiB is the size that costs least.
        self._info(
            option,
            const.INFO_BLOCK_SIZE,
            struct.pack(">III", export.min_block, export.preferred_block, export.max_block),
        )
        self._reply(option, const.REP_ACK)
        if option == const.OPT_GO:
            self._enter(export)

    def _enter(self, export: ExportInfo) -> None:
        self.export = export
        self.phase = Phase.TRANSMISSION

    def _lookup(self, name: str) -> ExportInfo | None:
        return self._default if name == "" else self._exports.get(name)

    # -- replies -------------------------------------------------------------------------------

    def _reply(self, option: int, kind: int, payload: bytes = b"") -> None:
        self._out += _REPLY.pack(const.OPTION_REPLY_MAGIC, option, kind, len(payload))
        self._out += payload

    def _info(self, option: int, info: int, payload: bytes) -> None:
        self._reply(option, const.REP_INFO, _U16.pack(info) + payload)

    def _error(self, option: int, kind: int, message: str) -> None:
        self._reply(option, kind, message.encode())


def _decode_name(raw: bytes) -> str | None:
    """A spec string: UTF-8, no NUL, at most 4096 bytes; None when it is not one."""
    if len(raw) > const.MAX_STRING or b"\0" in raw:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None
