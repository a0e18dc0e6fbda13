"""Hostile input to a live server: garbage, mutated frames, huge lengths, slow and silent peers.
The server must close the offender, keep serving everyone else, and keep its memory bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramster.errors import PeerLost
from ramster.rpc import Keys, PageBatch, RpcServer
from ramster.rpc.const import SCRATCH_BYTES
from tests.rpc.conftest import FAST, SECRET, Harness
from tests.rpc.rawpeer import RawPeer, frame
from tests.rpc.threaded import ServerThread

HOSTILE = dataclasses.replace(FAST, max_message_bytes=64 * 1024, idle_timeout=0.5)


@pytest.fixture(scope="module")
def live() -> Iterator[ServerThread]:
    thread = ServerThread(SECRET, HOSTILE)
    thread.start()
    yield thread
    thread.stop()


VALID_FRAMES = [
    frame([2, "ramster.hello", [1, "test", b"n" * 32]]),
    frame([2, "ramster.auth", [b"m" * 32]]),
    frame([0, 1, "pages.put", [[0], [1], [1], [1], [4], b"abcd"]]),
    frame([0, 2, "pages.get", [[0], [1]]]),
]


def _throw(port: int, data: bytes) -> None:
    """Send data on a fresh connection, then give the server a moment and hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        try:
            sock.sendall(data)
            sock.settimeout(0.01)
            sock.recv(65536)
        except (TimeoutError, ConnectionError):
            pass


def _check_server(live: ServerThread) -> None:
    live.run(live.client.ping())
    stats = live.server.statistics()
    bound = HOSTILE.max_message_bytes + SCRATCH_BYTES
    # Every connection's buffers are bounded by the scratch plus one frame at the limit.
    per_connection = live.run(_decoder_bytes(live.server))
    assert all(n <= bound for n in per_connection)
    assert stats.connections <= HOSTILE.max_connections


async def _decoder_bytes(server: RpcServer) -> list[int]:
    return [conn.decoder_bytes for conn in list(server._connections)]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.binary(min_size=1, max_size=2000))
def test_garbage_to_a_live_server(live: ServerThread, data: bytes) -> None:
    _throw(live.server.port, data)
    _check_server(live)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(st.sampled_from(VALID_FRAMES), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=5),
)
def test_mutated_frames_to_a_live_server(
    live: ServerThread, frames: list[bytes], flips: list[tuple[int, int]]
) -> None:
    data = bytearray(b"".join(frames))
    for pos, value in flips:
        data[pos % len(data)] = value
    _throw(live.server.port, bytes(data))
    _check_server(live)


def test_offenders_are_closed_not_kept(live: ServerThread) -> None:
    for _ in range(20):
        _throw(live.server.port, b"\x00\x00\x00\x05garbage")
    live.run(asyncio.sleep(0.2))
    # Only the good client's connection remains.
    assert live.server.statistics().connections <= 1
    assert live.server.statistics().protocol_errors >= 20 or (
        live.server.statistics().handshake_failures >= 20
    )


@pytest.mark.asyncio
async def test_a_huge_announced_length_is_refused_without_allocating(harness: Harness) -> None:
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    tracemalloc.start()
    try:
        await raw.send(struct.pack(">I", 0xFFFFFFF0) + b"\x93")
        assert await raw.closed_by_peer()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing near the announced 4 GiB, nor even the 1 MiB limit
    assert harness.server.statistics().protocol_errors == 1
    await raw.close()
    await harness.client().ping()


@pytest.mark.asyncio
async def test_frame_just_over_the_limit_is_refused(harness: Harness) -> None:
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await raw.send(struct.pack(">I", FAST.max_message_bytes + 1))
    assert await raw.closed_by_peer()
    await raw.close()


@pytest.mark.asyncio
async def test_garbage_after_the_handshake_closes_only_that_connection(harness: Harness) -> None:
    good = harness.client()
    await good.put_pages(PageBatch.of([(0, 1, 1, 1, b"page")]))
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await raw.send(frame([1, 5, None, None]))  # a response, from a client
    assert await raw.closed_by_peer()
    await raw.close()
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await raw.send(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    assert await raw.closed_by_peer()
    await raw.close()
    got = await good.get_pages(Keys.of([(0, 1)]))
    assert bytes(got.payloads[0]) == b"page"
    assert harness.server.statistics().protocol_errors == 2


@pytest.mark.asyncio
async def test_a_bad_request_gets_an_error_reply_and_the_connection_lives(
    harness: Harness,
) -> None:
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await raw.send_obj([0, 7, "pages.put", [[0], [1], [1], [1], [99], b"short"]])
    reply = await raw.recv()
    assert isinstance(reply, list)
    assert reply[:2] == [1, 7]
    assert reply[2][0] == 2  # ProtocolError's code
    await raw.send_obj([0, 8, "rpc.ping", []])
    assert await raw.recv() == [1, 8, None, None]
    await raw.close()


async def _slowloris_server() -> RpcServer:
    server = RpcServer(SECRET, HOSTILE)
    await server.start()
    return server


@pytest.mark.asyncio
async def test_a_silent_client_is_freed_after_the_idle_timeout() -> None:
    server = await _slowloris_server()
    try:
        raw = await RawPeer.connect(server.port)
        assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
        start = asyncio.get_running_loop().time()
        assert await raw.closed_by_peer()
        assert asyncio.get_running_loop().time() - start < 2.0  # idle_timeout is 0.5 s
        await raw.close()
        assert server.statistics().idle_closed == 1
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_a_trickling_client_is_freed_too() -> None:
    server = await _slowloris_server()
    try:
        raw = await RawPeer.connect(server.port)
        assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
        data = frame([0, 1, "rpc.ping", []])
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def trickle() -> None:
            # One byte every 50 ms: bytes keep coming, but no message completes in time.
            for byte in data * 100:
                if raw.reader.at_eof():
                    return
                try:
                    raw.writer.write(bytes([byte]))
                except (RuntimeError, ConnectionError):
                    return
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(trickle())
        try:
            assert await raw.closed_by_peer()
        finally:
            task.cancel()
            await asyncio.wait([task])
        assert loop.time() - start < 3
        await raw.close()
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_a_client_that_never_reads_is_bounded(harness: Harness) -> None:
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await harness.client().put_pages(PageBatch.of([(0, 1, 1, 1, b"x" * 4096)]))
    request = frame([0, 1, "pages.get", [[0] * 200, [1] * 200]])  # ~800 KiB answer each
    with pytest.raises((TimeoutError, ConnectionError)):
        async with asyncio.timeout(2):
            while True:
                await raw.send(request)
    # The server stopped reading this peer once its answers backed up; memory stays bounded.
    assert harness.server.statistics().calls < 100
    await raw.close()
    await harness.client().ping()


def test_peer_lost_is_a_connection_error() -> None:
    assert issubclass(PeerLost, ConnectionError)
