"""The handshake as bytes in, bytes out: no sockets, no event loop."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ramster.nbd import const
from ramster.nbd.handshake import GREETING, ExportInfo, Handshake, Phase
from tests.nbd.client import go_data, option

SWAP = ExportInfo("swap0", 8 << 30, 0x0D6D, 512, 4096, 32 << 20, "area 31")
OTHER = ExportInfo("b", 1 << 20, 0x0D6D, 512, 4096, 32 << 20)
FIXED = struct.pack(">I", const.CLIENT_FIXED_NEWSTYLE)
NO_ZEROES = struct.pack(">I", const.CLIENT_FIXED_NEWSTYLE | const.CLIENT_NO_ZEROES)


def replies(data: bytes) -> list[tuple[int, int, bytes]]:
    """Option replies in a server's output: (option, type, data)."""
    out = []
    while data:
        magic, opt, kind, length = struct.unpack_from(">QIII", data)
        assert magic == const.OPTION_REPLY_MAGIC
        out.append((opt, kind, data[20 : 20 + length]))
        data = data[20 + length :]
    return out


def started(flags: bytes = FIXED) -> Handshake:
    hs = Handshake([SWAP, OTHER])
    assert hs.data_to_send() == GREETING
    hs.receive(flags)
    assert hs.phase is Phase.OPTIONS
    return hs


def test_greeting_is_fixed_newstyle_with_no_zeroes() -> None:
    magic, opt, flags = struct.unpack(">QQH", GREETING)
    assert magic == 0x4E42444D41474943
    assert opt == 0x49484156454F5054
    assert flags == const.FLAG_FIXED_NEWSTYLE | const.FLAG_NO_ZEROES


def test_go_answers_export_block_sizes_and_enters_transmission() -> None:
    hs = started()
    hs.receive(option(const.OPT_GO, go_data("swap0", (const.INFO_NAME, const.INFO_DESCRIPTION))))
    out = replies(hs.data_to_send())
    assert [k for _, k, _ in out] == [const.REP_INFO] * 4 + [const.REP_ACK]
    infos = {struct.unpack(">H", d[:2])[0]: d[2:] for _, k, d in out if k == const.REP_INFO}
    assert struct.unpack(">QH", infos[const.INFO_EXPORT]) == (8 << 30, 0x0D6D)
    assert struct.unpack(">III", infos[const.INFO_BLOCK_SIZE]) == (512, 4096, 32 << 20)
    assert infos[const.INFO_NAME] == b"swap0"
    assert infos[const.INFO_DESCRIPTION] == b"area 31"
    assert hs.transmitting() and hs.export == SWAP


def test_info_does_not_end_negotiation_and_empty_name_is_the_default() -> None:
    hs = started()
    hs.receive(option(const.OPT_INFO, go_data("")))
    out = replies(hs.data_to_send())
    assert out[-1][1] == const.REP_ACK
    assert hs.phase is Phase.OPTIONS
    hs.receive(option(const.OPT_GO, go_data("b")))
    hs.data_to_send()
    assert hs.export == OTHER


def test_unknown_export_is_an_error_reply_and_negotiation_goes_on() -> None:
    hs = started()
    hs.receive(option(const.OPT_GO, go_data("nope")))
    ((opt, kind, msg),) = replies(hs.data_to_send())
    assert (opt, kind) == (const.OPT_GO, const.REP_ERR_UNKNOWN)
    assert b"nope" in msg
    assert hs.phase is Phase.OPTIONS


@pytest.mark.parametrize(
    "opt",
    [
        const.OPT_STARTTLS,
        const.OPT_STRUCTURED_REPLY,
        const.OPT_LIST_META_CONTEXT,
        const.OPT_SET_META_CONTEXT,
        const.OPT_EXTENDED_HEADERS,
        4,
        999,
    ],
)
def test_unsupported_options_keep_the_stream(opt: int) -> None:
    hs = started()
    hs.receive(option(opt, b"some data the server skips") + option(const.OPT_GO, go_data("swap0")))
    out = replies(hs.data_to_send())
    assert out[0][:2] == (opt, const.REP_ERR_UNSUP)
    assert out[-1][1] == const.REP_ACK
    assert hs.transmitting()
    assert hs.options_unsupported == 1


def test_list_names_every_export() -> None:
    hs = started()
    hs.receive(option(const.OPT_LIST))
    out = replies(hs.data_to_send())
    names = [d[4 : 4 + struct.unpack(">I", d[:4])[0]] for _, k, d in out if k == const.REP_SERVER]
    assert names == [b"swap0", b"b"]
    assert out[-1][1] == const.REP_ACK
    hs.receive(option(const.OPT_LIST, b"x"))
    assert replies(hs.data_to_send())[0][1] == const.REP_ERR_INVALID


def test_abort_is_acknowledged_and_ends_without_blame() -> None:
    hs = started()
    hs.receive(option(const.OPT_ABORT))
    assert replies(hs.data_to_send()) == [(const.OPT_ABORT, const.REP_ACK, b"")]
    assert hs.closed() and hs.violation is None


@pytest.mark.parametrize("flags", [FIXED, NO_ZEROES])
def test_export_name_fallback(flags: bytes) -> None:
    hs = started(flags)
    hs.receive(option(const.OPT_EXPORT_NAME, b"swap0") + b"early request bytes")
    out = hs.data_to_send()
    assert struct.unpack(">QH", out[:10]) == (8 << 30, 0x0D6D)
    assert out[10:] == (b"" if flags == NO_ZEROES else bytes(124))
    assert hs.transmitting()
    assert hs.unused() == b"early request bytes"


def test_export_name_unknown_ends_the_session() -> None:
    hs = started()
    hs.receive(option(const.OPT_EXPORT_NAME, b"nope"))
    assert hs.data_to_send() == b""
    assert hs.closed() and hs.violation is not None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00",
        struct.pack(">I", 100) + b"swap0" + b"\x00\x00",  # name longer than the option
        struct.pack(">I", 5) + b"swap0" + struct.pack(">H", 3) + b"\x00\x00",  # count mismatch
        struct.pack(">I", 2) + b"\xff\xfe" + b"\x00\x00",  # not UTF-8
        struct.pack(">I", 2) + b"a\x00" + b"\x00\x00",  # NUL in the name
    ],
)
def test_malformed_go_is_invalid_not_fatal(data: bytes) -> None:
    hs = started()
    hs.receive(option(const.OPT_GO, data))
    ((_, kind, _),) = replies(hs.data_to_send())
    assert kind == const.REP_ERR_INVALID
    assert hs.phase is Phase.OPTIONS


def test_unknown_client_flags_end_the_session() -> None:
    hs = Handshake([SWAP])
    hs.receive(struct.pack(">I", 1 << 7))
    assert hs.closed() and "client flags" in (hs.violation or "")


def test_bad_option_magic_ends_the_session() -> None:
    hs = started()
    hs.receive(struct.pack(">QII", 0x1234, const.OPT_GO, 0))
    assert hs.closed() and "magic" in (hs.violation or "")


def test_oversized_option_ends_the_session_before_its_data() -> None:
    hs = started()
    hs.receive(struct.pack(">QII", const.IHAVEOPT, const.OPT_GO, const.MAX_OPTION_DATA + 1))
    assert hs.closed() and "bytes of data" in (hs.violation or "")


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60))
def test_any_split_of_the_client_bytes_gives_the_same_answer(cuts: list[int]) -> None:
    stream = (
        FIXED
        + option(const.OPT_STRUCTURED_REPLY)
        + option(const.OPT_LIST)
        + option(const.OPT_INFO, go_data("b"))
        + option(const.OPT_GO, go_data("swap0"))
        + b"tail"
    )
    whole = Handshake([SWAP, OTHER])
    whole.receive(stream)
    expected = whole.data_to_send()
    pieces = Handshake([SWAP, OTHER])
    pos = 0
    out = b""
    for cut in cuts:
        pieces.receive(stream[pos : pos + cut])
        out += pieces.data_to_send()
        pos += cut
    pieces.receive(stream[pos:])
    out += pieces.data_to_send()
    assert out == expected
    assert pieces.export == SWAP
    assert pieces.unused() == b"tail"
