"""Hostile input to a live server: garbage, mutated frames, huge lengths, slow and silent peers,
before the handshake and inside authenticated, encrypted sessions. The server must close the
offender, keep serving everyone else, and keep its memory bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import tracemalloc
from collections.abc import Iterator

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramster.errors import PeerLost
from ramster.rpc import Keys, PageBatch, RpcServer
from ramster.rpc.auth import ClientHandshake
from ramster.rpc.const import PREAUTH_MAX_FRAME, PREAUTH_SCRATCH_BYTES, SCRATCH_BYTES, TAG_BYTES
from tests.rpc.conftest import FAST, SECRET, Harness
from tests.rpc.rawpeer import RawPeer, frame, sealed_frame
from tests.rpc.syncpeer import read_frame, seal, session
from tests.rpc.threaded import ServerThread

HOSTILE = dataclasses.replace(FAST, max_message_bytes=64 * 1024, idle_timeout=0.5)
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def live() -> Iterator[ServerThread]:
    thread = ServerThread(SECRET, HOSTILE)
    thread.start()
    yield thread
    thread.stop()


VALID_FRAMES = [
    frame([2, "ramster.hello", ClientHandshake(SECRET, "test").hello()]),
    frame([2, "ramster.auth", [b"m" * 32]]),
    frame([0, 1, "pages.put", [[0], [1], [1], [1], [4], b"abcd"]]),
    frame([0, 2, "pages.get", [[0], [1]]]),
]
SESSION_MESSAGES = [
    [0, 1, "pages.put", [[0], [1], [1], [1], [4], b"abcd"]],
    [0, 2, "pages.get", [[0], [1]]],
    [0, 3, "pages.drop", [[0], [1]]],
    [0, 4, "rpc.ping", []],
    [2, "ramster.hello", ClientHandshake(SECRET, "test").hello()],
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


def _throw_sealed(port: int, bodies: list[bytes], *, sealed: bool = True) -> None:
    """Send bodies inside an authenticated session (sealed, or raw bytes), then hang up."""
    sock, keys = session(port, SECRET, "test")
    with sock:
        try:
            sock.sendall(b"".join(seal(keys, b) if sealed else b for b in bodies))
            sock.settimeout(0.02)
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionError):
            pass


def _check_server(live: ServerThread) -> None:
    live.run(live.client.ping())
    stats = live.server.statistics()
    bound = HOSTILE.max_message_bytes + TAG_BYTES + SCRATCH_BYTES
    # Every connection's buffers are bounded by the scratch plus one frame at the limit.
    per_connection = live.run(_decoder_bytes(live.server))
    assert all(n <= bound for n in per_connection)
    assert stats.connections <= HOSTILE.max_connections


async def _decoder_bytes(server: RpcServer) -> list[int]:
    return [conn.decoder_bytes for conn in list(server._connections)]


@SETTINGS
@given(st.binary(min_size=1, max_size=2000))
def test_garbage_to_a_live_server(live: ServerThread, data: bytes) -> None:
    _throw(live.server.port, data)
    _check_server(live)


@SETTINGS
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


@SETTINGS
@given(st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=3))
def test_garbage_sealed_inside_a_session(live: ServerThread, bodies: list[bytes]) -> None:
    # Correctly sealed, so it opens: what is inside must be checked as strictly as ever.
    _throw_sealed(live.server.port, bodies)
    _check_server(live)


@SETTINGS
@given(
    st.lists(st.sampled_from(SESSION_MESSAGES), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
)
def test_mutated_messages_sealed_inside_a_session(
    live: ServerThread, messages: list[object], flips: list[tuple[int, int]]
) -> None:
    bodies = [bytearray(msgpack.packb(m, use_bin_type=True)) for m in messages]
    for pos, value in flips:
        body = bodies[pos % len(bodies)]
        body[pos % len(body)] = value
    _throw_sealed(live.server.port, [bytes(b) for b in bodies])
    _check_server(live)


@SETTINGS
@given(st.binary(min_size=1, max_size=2000))
def test_unsealed_bytes_inside_a_session_close_it(live: ServerThread, data: bytes) -> None:
    before = live.server.statistics()
    _throw_sealed(live.server.port, [data], sealed=False)
    _check_server(live)
    after = live.server.statistics()
    # Whatever they are, they were never served: at most they failed to open.
    assert after.calls == before.calls + 1  # the ping of _check_server


def test_a_sealed_frame_with_bytes_flipped_closes_the_session(live: ServerThread) -> None:
    for pos in (0, 5, -1):
        sock, keys = session(live.server.port, SECRET, "test")
        with sock:
            data = bytearray(seal(keys, msgpack.packb([0, 1, "rpc.ping", []])))
            data[4 + pos if pos >= 0 else pos] ^= 0x40
            before = live.server.statistics()
            sock.sendall(bytes(data))
            with pytest.raises((ConnectionError, TimeoutError)):
                read_frame(sock)
        _check_server(live)
        after = live.server.statistics()
        assert after.integrity_failures == before.integrity_failures + 1
        assert after.calls == before.calls + 1


def test_offenders_are_closed_not_kept(live: ServerThread) -> None:
    for _ in range(20):
        _throw(live.server.port, b"\x00\x00\x00\x05garbage")
    live.run(asyncio.sleep(0.2))
    # Only the good client's connection remains.
    stats = live.server.statistics()
    assert stats.connections <= 1
    assert stats.unauthenticated == 0
    assert stats.handshake_failures >= 20


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
async def test_before_the_handshake_a_frame_may_be_one_kib(harness: Harness) -> None:
    for length in (PREAUTH_MAX_FRAME + 1, 8 << 20, 0xFFFFFFF0):
        raw = await RawPeer.connect(harness.server.port)
        await raw.send(struct.pack(">I", length))
        # Refused on its header: no body buffered, nothing decoded.
        refused = await raw.recv()
        assert isinstance(refused, list) and refused[1] == "ramster.refused"
        assert await raw.closed_by_peer()
        await raw.close()
    stats = harness.server.statistics()
    assert stats.handshake_failures == 3
    assert stats.unauthenticated == 0
    await harness.client().ping()


@pytest.mark.asyncio
async def test_an_unauthenticated_connection_holds_a_tiny_buffer(harness: Harness) -> None:
    raw = await RawPeer.connect(harness.server.port)
    await raw.send(frame([2, "ramster.hello", ClientHandshake(SECRET, "test").hello()]))
    assert isinstance(await raw.recv(), list)  # the challenge
    sizes = [c.decoder_bytes for c in harness.server._connections]
    assert sizes == [PREAUTH_SCRATCH_BYTES]
    await raw.close()


@pytest.mark.asyncio
async def test_frame_just_over_the_limit_is_refused(harness: Harness) -> None:
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await raw.send(struct.pack(">I", FAST.max_message_bytes + TAG_BYTES + 1))
    assert await raw.closed_by_peer()
    await raw.close()


@pytest.mark.asyncio
async def test_garbage_after_the_handshake_closes_only_that_connection(harness: Harness) -> None:
    good = harness.client()
    await good.put_pages(PageBatch.of([(0, 1, 1, 1, b"page")]))
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await raw.send_obj([1, 5, None, None])  # a response, from a client (sealed)
    assert await raw.closed_by_peer()
    await raw.close()
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    assert raw.keys is not None
    # 0xc1 is never valid msgpack: sealed, it opens and then fails to decode.
    await raw.send(b"".join(raw.keys.sealer.seal(struct.pack(">I", 3 + 16), b"\xc1\xc1\xc1")))
    assert await raw.closed_by_peer()
    await raw.close()
    raw = await RawPeer.connect(harness.server.port)
    assert await raw.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await raw.send(frame([0, 9, "rpc.ping", []]))  # not sealed at all
    assert await raw.closed_by_peer()
    await raw.close()
    got = await good.get_pages(Keys.of([(0, 1)]))
    assert bytes(got.payloads[0]) == b"page"
    stats = harness.server.statistics()
    assert stats.protocol_errors == 2
    assert stats.integrity_failures == 1


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
        assert raw.keys is not None
        data = sealed_frame(raw.keys, [0, 1, "rpc.ping", []])
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
    assert raw.keys is not None
    await harness.client().put_pages(PageBatch.of([(0, 1, 1, 1, b"x" * 4096)]))
    with pytest.raises((TimeoutError, ConnectionError)):
        async with asyncio.timeout(2):
            while True:
                # ~800 KiB answer each
                await raw.send(sealed_frame(raw.keys, [0, 1, "pages.get", [[0] * 200, [1] * 200]]))
    # The server stopped reading this peer once its answers backed up; memory stays bounded.
    assert harness.server.statistics().calls < 100
    await raw.close()
    await harness.client().ping()


def test_peer_lost_is_a_connection_error() -> None:
    assert issubclass(PeerLost, ConnectionError)
