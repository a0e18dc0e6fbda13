"""Request decoding, request checks and replies: no sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ramster.errors import NbdProtocolError
from ramster.nbd import const
from ramster.nbd.wire import PayloadTooLarge, Request, RequestDecoder, check, reply
from tests.nbd.client import request

SIZE = 1 << 20


def encode(r: Request) -> bytes:
    return request(r.cmd, r.offset, r.length, r.handle, r.flags) + r.payload


@st.composite
def requests(draw: st.DrawFn) -> Request:
    cmd = draw(st.sampled_from([0, 1, 3, 4, 6, 5, 7, 42]))
    handle = draw(st.integers(min_value=0, max_value=(1 << 64) - 1))
    offset = draw(st.integers(min_value=0, max_value=(1 << 64) - 1))
    flags = draw(st.integers(min_value=0, max_value=0xFFFF))
    if cmd == const.CMD_WRITE:
        payload = draw(st.binary(max_size=300))
        return Request(handle, cmd, flags, offset, len(payload), payload)
    length = draw(st.integers(min_value=0, max_value=(1 << 32) - 1))
    return Request(handle, cmd, flags, offset, length)


@given(st.lists(requests(), max_size=20), st.lists(st.integers(1, 64), max_size=40))
def test_any_split_decodes_the_same_requests(sent: list[Request], cuts: list[int]) -> None:
    stream = b"".join(encode(r) for r in sent)
    decoder = RequestDecoder(max_payload=4096)
    got: list[Request] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[pos : pos + cut])
        pos += cut
        while (r := decoder.next()) is not None:
            got.append(r)
    assert got == sent
    assert decoder.buffered == 0


def test_bad_magic_is_a_protocol_error() -> None:
    decoder = RequestDecoder()
    decoder.feed(struct.pack(">IHHQQI", 0x12345678, 0, 0, 1, 0, 4096))
    with pytest.raises(NbdProtocolError, match="magic"):
        decoder.next()


def test_oversized_write_is_refused_on_its_header_alone() -> None:
    decoder = RequestDecoder(max_payload=1 << 20)
    decoder.feed(request(const.CMD_WRITE, 0, (1 << 20) + 1, handle=77))
    with pytest.raises(PayloadTooLarge) as info:
        decoder.next()
    assert info.value.handle == 77
    assert isinstance(info.value, NbdProtocolError)


def test_a_write_waits_for_its_whole_payload() -> None:
    decoder = RequestDecoder()
    decoder.feed(request(const.CMD_WRITE, 4096, 4096, handle=5) + b"x" * 4000)
    assert decoder.next() is None
    decoder.feed(b"x" * 96 + request(const.CMD_FLUSH, handle=6))
    first, second = decoder.next(), decoder.next()
    assert first == Request(5, const.CMD_WRITE, 0, 4096, 4096, b"x" * 4096)
    assert second is not None and second.cmd == const.CMD_FLUSH
    assert decoder.next() is None


def test_long_streams_are_compacted() -> None:
    decoder = RequestDecoder()
    for i in range(200):
        decoder.feed(request(const.CMD_WRITE, 0, 4096, handle=i) + bytes(4096))
        got = decoder.next()
        assert got is not None and got.handle == i
    assert decoder.buffered == 0


def test_reply_layout() -> None:
    assert reply(0xDEADBEEF, const.ENOSPC) == struct.pack(">IIQ", 0x67446698, 28, 0xDEADBEEF)


def r(cmd: int, offset: int = 0, length: int = 0, flags: int = 0) -> Request:
    return Request(1, cmd, flags, offset, length)


@pytest.mark.parametrize(
    ("req", "error"),
    [
        (r(const.CMD_READ, 0, 4096), 0),
        (r(const.CMD_READ, SIZE - 512, 512, const.CMD_FLAG_FUA), 0),
        (r(const.CMD_READ, SIZE - 512, 1024), const.EINVAL),
        (r(const.CMD_READ, 0, const.MAX_PAYLOAD + 1), const.EINVAL),
        (r(const.CMD_READ, 0, 4096, const.CMD_FLAG_DF), const.EINVAL),
        (r(const.CMD_WRITE, SIZE, 1), const.ENOSPC),
        (r(const.CMD_WRITE, 0, 4096, const.CMD_FLAG_NO_HOLE), const.EINVAL),
        (r(const.CMD_WRITE_ZEROES, 0, SIZE, const.CMD_FLAG_NO_HOLE | const.CMD_FLAG_FAST_ZERO), 0),
        (r(const.CMD_WRITE_ZEROES, 4096, SIZE), const.ENOSPC),
        (r(const.CMD_TRIM, 0, SIZE), 0),
        (r(const.CMD_TRIM, 1, SIZE), const.EINVAL),
        (r(const.CMD_FLUSH), 0),
        (r(const.CMD_FLUSH, 0, 1), const.EINVAL),
        (r(const.CMD_CACHE, 0, 4096), const.EINVAL),
        (r(const.CMD_BLOCK_STATUS, 0, 4096), const.EINVAL),
        (r(42), const.EINVAL),
        (r(const.CMD_READ, (1 << 64) - 1, 1), const.EINVAL),
    ],
)
def test_checks(req: Request, error: int) -> None:
    assert check(req, SIZE, const.MAX_PAYLOAD) == error
