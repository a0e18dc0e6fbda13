"""The server over real sockets with a hand-driven client: good and bad clients at once."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Sequence
from typing import Any

import pytest

from ramster.frontswap import LocalFrontswap
from ramster.nbd import NbdConfig, NbdServer, const, local_exports, parse_exports
from ramster.pagestore import PoolConfig
from tests.nbd.client import RawNbd, go_data, option, request
from tests.nbd.conftest import ServerFactory, port_of

pytestmark = pytest.mark.asyncio

PAGE = 4096


async def test_reads_writes_and_range_commands(nbd_server: NbdServer) -> None:
    c = await RawNbd.open(port_of(nbd_server), "swap0")
    assert c.size == 64 << 20
    assert c.flags & const.FLAG_CAN_MULTI_CONN and c.flags & const.FLAG_SEND_TRIM
    assert await c.read(8192, 4096) == bytes(4096)
    assert await c.write(8192, b"\xab" * 8192) == 0
    assert await c.write(8192 + 100, b"hello", flags=const.CMD_FLAG_FUA) == 0
    assert await c.command(const.CMD_FLUSH) == 0
    want = bytearray(b"\xab" * 8192)
    want[100:105] = b"hello"
    assert await c.read(8192, 8192) == bytes(want)
    assert await c.command(const.CMD_WRITE_ZEROES, 8192 + 4000, 200) == 0
    want[4000:4200] = bytes(200)
    assert await c.read(8192, 8192) == bytes(want)
    assert await c.command(const.CMD_TRIM, 8192, 8192) == 0
    assert await c.read(8192, 8192) == bytes(8192)
    await c.disconnect()
    stats = nbd_server.statistics()
    assert stats.requests["write"] == 2 and stats.requests["disc"] == 1
    assert stats.errors == {}


async def test_pipelined_writes_zeroes_and_trims_apply_in_order(nbd_server: NbdServer) -> None:
    c = await RawNbd.open(port_of(nbd_server), "swap0")
    big = const.BATCHED_RANGE + PAGE  # goes alone, through the page map
    await c.send(
        request(const.CMD_WRITE, 0, 4 * PAGE, handle=1)
        + b"\xa1" * (4 * PAGE)
        + request(const.CMD_WRITE_ZEROES, 100, 200, handle=2)
        + request(const.CMD_TRIM, PAGE + 1, 2 * PAGE, handle=3)
        + request(const.CMD_WRITE, 2 * PAGE + 10, 10, handle=4)
        + b"\xb2" * 10
        + request(const.CMD_WRITE, 8 * PAGE, PAGE, handle=5)
        + b"\xc3" * PAGE
        + request(const.CMD_WRITE_ZEROES, 8 * PAGE, big, handle=6)
        + request(const.CMD_WRITE, 8 * PAGE + 512, 512, handle=7)
        + b"\xd4" * 512
    )
    assert sorted([await c.reply() for _ in range(7)]) == [(0, h) for h in range(1, 8)]
    want = bytearray(b"\xa1" * (4 * PAGE))
    want[100:300] = bytes(200)
    want[2 * PAGE : 3 * PAGE] = bytes(PAGE)  # the one whole page inside the TRIM
    want[2 * PAGE + 10 : 2 * PAGE + 20] = b"\xb2" * 10
    assert await c.read(0, 4 * PAGE) == bytes(want)
    assert await c.read(8 * PAGE, PAGE) == bytes(512) + b"\xd4" * 512 + bytes(3072)
    await c.disconnect()


async def test_out_of_range_and_unknown_requests_get_errors_and_the_stream_goes_on(
    nbd_server: NbdServer, caplog: pytest.LogCaptureFixture
) -> None:
    c = await RawNbd.open(port_of(nbd_server), "small")
    assert await c.read(1 << 20, 4096) == const.EINVAL
    assert await c.read(0, const.MAX_PAYLOAD + 1) == const.EINVAL
    assert await c.write((1 << 20) - 512, bytes(1024)) == const.ENOSPC
    assert await c.command(const.CMD_CACHE, 0, 4096) == const.EINVAL
    assert await c.command(99) == const.EINVAL
    assert await c.command(const.CMD_FLUSH, 0, 1) == const.EINVAL
    assert await c.write(0, b"still here") == 0
    assert await c.read(0, 10) == b"still here"
    await c.disconnect()
    errors = nbd_server.statistics().errors
    assert errors == {"EINVAL": 5, "ENOSPC": 1}
    logged = [r.getMessage() for r in caplog.records if "answered" in r.getMessage()]
    assert len(logged) == 2  # the first of each kind on the connection; the rest are counted
    assert "read answered EINVAL" in logged[0] and "write answered ENOSPC" in logged[1]


async def test_unsupported_options_and_unknown_exports_keep_the_handshake(
    nbd_server: NbdServer,
) -> None:
    c = await RawNbd.connect(port_of(nbd_server))
    await c.greeting()
    await c.send(option(const.OPT_STRUCTURED_REPLY))
    assert (await c.option_reply())[1] == const.REP_ERR_UNSUP
    await c.send(option(const.OPT_GO, go_data("nope")))
    assert (await c.option_reply())[1] == const.REP_ERR_UNKNOWN
    await c.go("")  # the default export: the first one
    assert c.size == 64 << 20
    await c.disconnect()


async def test_clients_off_the_allow_list_are_closed_and_counted(
    nbd_factory: ServerFactory,
) -> None:
    server = await nbd_factory(allow=("10.0.0.0/8", "::1"))
    c = await RawNbd.connect(port_of(server))
    assert await c.reader.read(100) == b""
    await c.close()
    stats = server.statistics()
    assert stats.connections_refused == 1 and stats.connections_accepted == 0


async def test_connections_beyond_the_limit_are_closed_and_counted(
    nbd_factory: ServerFactory,
) -> None:
    server = await nbd_factory(max_connections=1)
    first = await RawNbd.open(port_of(server))
    second = await RawNbd.connect(port_of(server))
    assert await second.reader.read(100) == b""
    await second.close()
    assert await first.write(0, b"x" * 512) == 0
    await first.disconnect()
    assert server.statistics().connections_busy == 1


async def test_a_silent_client_is_closed_after_the_handshake_timeout(
    nbd_factory: ServerFactory,
) -> None:
    server = await nbd_factory(handshake_timeout=0.2)
    c = await RawNbd.connect(port_of(server))
    assert await c.closed_by_server()
    await c.close()
    assert server.statistics().handshakes_failed == 1


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x00\x00\x00\x80", id="unknown-client-flags"),
        pytest.param(b"\x00\x00\x00\x01" + b"NOTMAGIC" + bytes(8), id="bad-option-magic"),
        pytest.param(
            b"\x00\x00\x00\x01"
            + struct.pack(">QII", const.IHAVEOPT, const.OPT_GO, 1 << 30)
            + bytes(1000),
            id="oversized-option",
        ),
    ],
)
async def test_a_broken_handshake_closes_only_that_client(
    nbd_server: NbdServer, garbage: bytes
) -> None:
    good = await RawNbd.open(port_of(nbd_server))
    bad = await RawNbd.connect(port_of(nbd_server))
    await bad.recv(18)
    await bad.send(garbage)
    assert await bad.closed_by_server()
    await bad.close()
    assert await good.write(0, b"ok" * 256) == 0
    assert await good.read(0, 512) == b"ok" * 256
    await good.disconnect()
    assert nbd_server.statistics().handshakes_failed == 1


async def test_bad_request_magic_closes_the_connection_and_nothing_else(
    nbd_server: NbdServer,
) -> None:
    good = await RawNbd.open(port_of(nbd_server))
    assert await good.write(0, b"\x11" * PAGE) == 0
    bad = await RawNbd.open(port_of(nbd_server))
    assert await bad.write(PAGE, b"\x22" * PAGE) == 0
    await bad.send(b"\xde\xad\xbe\xef" + bytes(24))
    assert await bad.closed_by_server()
    await bad.close()
    assert await good.read(0, 2 * PAGE) == b"\x11" * PAGE + b"\x22" * PAGE
    await good.disconnect()
    assert nbd_server.statistics().protocol_errors == 1


async def test_an_oversized_write_gets_einval_then_a_close_before_its_payload_is_read(
    nbd_server: NbdServer,
) -> None:
    c = await RawNbd.open(port_of(nbd_server))
    await c.send(request(const.CMD_WRITE, 0, const.MAX_PAYLOAD + 4096, handle=9))
    assert await c.reply() == (const.EINVAL, 9)
    assert await c.closed_by_server()
    await c.close()
    stats = nbd_server.statistics()
    assert stats.protocol_errors == 1 and stats.errors == {"EINVAL": 1}


async def test_a_client_that_vanishes_mid_write_harms_nothing(nbd_server: NbdServer) -> None:
    c = await RawNbd.open(port_of(nbd_server))
    assert await c.write(0, b"\x33" * PAGE) == 0
    await c.send(request(const.CMD_WRITE, 0, PAGE) + b"\x44" * 1000)
    c.writer.transport.abort()
    other = await RawNbd.open(port_of(nbd_server))
    assert await other.read(0, PAGE) == b"\x33" * PAGE
    await other.disconnect()


async def test_disc_and_eof_answer_what_was_sent_before(nbd_server: NbdServer) -> None:
    c = await RawNbd.open(port_of(nbd_server))
    pipelined = b"".join(
        request(const.CMD_WRITE, i * PAGE, PAGE, handle=i) + bytes([i + 1]) * PAGE
        for i in range(50)
    )
    await c.send(pipelined + request(const.CMD_DISC))
    assert [await c.reply() for _ in range(50)] == [(0, i) for i in range(50)]
    assert await c.closed_by_server()
    await c.close()
    half = await RawNbd.open(port_of(nbd_server))
    await half.send(request(const.CMD_WRITE, 60 * PAGE, PAGE, handle=60) + b"\x99" * PAGE)
    half.writer.write_eof()
    assert await half.reply() == (0, 60)
    assert await half.closed_by_server()
    await half.close()
    check = await RawNbd.open(port_of(nbd_server))
    for i in range(50):
        assert await check.read(i * PAGE, PAGE) == bytes([i + 1]) * PAGE
    assert await check.read(60 * PAGE, PAGE) == b"\x99" * PAGE
    await check.disconnect()


async def test_requests_in_flight_are_bounded_and_all_answered(
    nbd_factory: ServerFactory,
) -> None:
    server = await nbd_factory(max_inflight=4)
    c = await RawNbd.open(port_of(server))
    assert await c.write(0, b"\x5a" * PAGE) == 0
    count = 2000
    await c.send(b"".join(request(const.CMD_READ, 0, PAGE, handle=i) for i in range(count)))
    for i in range(count):
        assert await c.reply() == (0, i)
        assert await c.recv(PAGE) == b"\x5a" * PAGE
    await c.disconnect()
    assert server.statistics().inflight_peak <= 4


async def test_two_connections_see_each_others_writes_after_flush(
    nbd_server: NbdServer,
) -> None:
    a = await RawNbd.open(port_of(nbd_server), "swap0")
    b = await RawNbd.open(port_of(nbd_server), "swap0")
    assert a.flags & const.FLAG_CAN_MULTI_CONN
    assert await b.read(0, PAGE) == bytes(PAGE)
    assert await a.write(0, b"\x77" * PAGE) == 0
    assert await a.write(PAGE + 512, b"\x78" * 512) == 0
    assert await a.command(const.CMD_FLUSH) == 0
    assert await b.read(0, 2 * PAGE) == b"\x77" * PAGE + bytes(512) + b"\x78" * 512 + bytes(3072)
    assert await b.write(0, b"\x79" * 512) == 0
    assert await b.command(const.CMD_FLUSH) == 0
    assert await a.read(0, 1024) == b"\x79" * 512 + b"\x77" * 512
    await a.disconnect()
    await b.disconnect()


async def test_a_full_pool_answers_enospc_to_that_write_only(nbd_factory: ServerFactory) -> None:
    server = await nbd_factory("swap0:64MiB", budget=1 << 20)
    c = await RawNbd.open(port_of(server))
    kept: dict[int, bytes] = {}
    refused = 0
    for i in range(400):
        page = os.urandom(PAGE)  # incompressible: 400 of them do not fit in 1 MiB
        code = await c.write(i * PAGE, page, handle=i)
        if code == 0:
            kept[i] = page
        else:
            assert code == const.ENOSPC
            refused += 1
    assert refused and kept
    for i, page in kept.items():
        assert await c.read(i * PAGE, PAGE) == page
    await c.disconnect()
    assert server.statistics().errors["ENOSPC"] == refused


class BrokenFrontswap(LocalFrontswap):
    """The real pool, except that storing at offset 13 raises a bug-like error."""

    async def store_many(
        self, area: int, offsets: Sequence[int], pages: Sequence[Any]
    ) -> list[bool]:
        if 13 in offsets:
            raise RuntimeError("a bug in the storage layer")
        return await super().store_many(area, offsets, pages)


async def test_an_internal_error_closes_one_connection_and_is_counted(
    nbd_factory: ServerFactory,
) -> None:
    server = await nbd_factory(frontswap=BrokenFrontswap(PoolConfig(budget_bytes=8 << 20)))
    good = await RawNbd.open(port_of(server))
    bad = await RawNbd.open(port_of(server))
    await bad.send(request(const.CMD_WRITE, 13 * PAGE, PAGE) + b"x" * PAGE)
    assert await bad.closed_by_server()
    await bad.close()
    assert await good.write(0, b"y" * PAGE) == 0
    assert await good.read(0, PAGE) == b"y" * PAGE
    await good.disconnect()
    assert server.statistics().internal_errors == 1


async def test_close_ends_idle_and_half_open_connections(nbd_factory: ServerFactory) -> None:
    server = await nbd_factory()
    idle = await RawNbd.open(port_of(server))
    shaking = await RawNbd.connect(port_of(server))
    await shaking.recv(18)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await server.close()
    await server.close()  # idempotent
    assert loop.time() - t0 < 2
    assert await idle.closed_by_server() and await shaking.closed_by_server()
    await idle.close()
    await shaking.close()
    assert server.statistics().connections_active == 0


async def test_close_after_a_failed_start_is_safe(nbd_server: NbdServer) -> None:
    config = NbdConfig(
        exports=parse_exports(["a:1MiB"]), listen=nbd_server.address, swap_safety=False
    )
    busy = NbdServer(config)
    with pytest.raises(OSError, match="address already in use"):
        await busy.start(local_exports(LocalFrontswap(PoolConfig(budget_bytes=1 << 20)), config))
    await busy.close()
    await busy.close()
