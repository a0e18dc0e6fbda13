"""Live handshakes: every bad one is refused, counted, and serves nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from ramster.errors import AuthError, Busy, PeerLost, ProtocolError, VersionMismatch
from ramster.rpc import RpcClient, RpcConfig, RpcServer, Secret
from ramster.rpc.auth import ClientHandshake
from tests.rpc.conftest import FAST, SECRET, Harness
from tests.rpc.rawpeer import RawPeer


def served(harness: Harness) -> int:
    return harness.server.statistics().calls


@pytest.mark.asyncio
async def test_wrong_secret_is_refused(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    client = harness.client(secret=Secret(b"not-the-secret-0123456789"))
    with caplog.at_level(logging.WARNING, logger="ramster.rpc"), pytest.raises(AuthError) as info:
        await client.ping()
    assert isinstance(info.value, PermissionError)
    assert not info.value.retriable
    assert served(harness) == 0
    # The client refused the server's proof, so the server sees a connection that just went.
    raw = await RawPeer.connect(harness.server.port)
    hs = ClientHandshake(Secret(b"not-the-secret-0123456789"), "test")
    await raw.send_obj([2, "ramster.hello", hs.hello()])
    challenge = await raw.recv()
    assert isinstance(challenge, list)
    await raw.send_obj([2, "ramster.auth", [b"\x00" * 32]])
    refused = await raw.recv()
    assert refused == [
        2,
        "ramster.refused",
        [AuthError.code, "the peer does not know the cluster secret"],
    ]
    assert await raw.closed_by_peer()
    await raw.close()
    assert harness.server.statistics().handshake_failures >= 1
    assert "127.0.0.1:" in caplog.text


@pytest.mark.asyncio
async def test_a_call_without_handshake_is_refused(harness: Harness) -> None:
    raw = await RawPeer.connect(harness.server.port)
    await raw.send_obj([0, 1, "rpc.ping", []])
    reply = await raw.recv()
    assert isinstance(reply, list)
    assert reply[:2] == [2, "ramster.refused"]
    assert await raw.closed_by_peer()
    await raw.close()
    assert served(harness) == 0
    assert harness.server.statistics().handshake_failures == 1


@pytest.mark.asyncio
async def test_a_call_before_auth_is_refused(harness: Harness) -> None:
    raw = await RawPeer.connect(harness.server.port)
    await raw.send_obj([2, "ramster.hello", ClientHandshake(SECRET, "test").hello()])
    await raw.send_obj([0, 1, "rpc.ping", []])
    assert isinstance(await raw.recv(), list)  # the challenge
    reply = await raw.recv()
    assert isinstance(reply, list)
    assert reply[1] == "ramster.refused"
    assert await raw.closed_by_peer()
    await raw.close()
    assert served(harness) == 0


@pytest.mark.asyncio
async def test_a_replayed_handshake_is_refused(harness: Harness) -> None:
    # Record a good client's bytes, then replay them on a new connection.
    good = await RawPeer.connect(harness.server.port)
    assert await good.handshake(SECRET, "test") == [2, "ramster.ready", []]
    await good.send_obj([0, 1, "rpc.ping", []])
    assert await good.recv() == [1, 1, None, None]
    recording = list(good.sent)
    await good.close()
    calls_before = served(harness)

    replay = await RawPeer.connect(harness.server.port)
    for data in recording:
        await replay.send(data)
    challenge = await replay.recv()
    assert isinstance(challenge, list)
    assert challenge[1] == "ramster.challenge"
    refused = await replay.recv()
    assert isinstance(refused, list)
    assert refused[1] == "ramster.refused"
    assert await replay.closed_by_peer()
    await replay.close()
    assert served(harness) == calls_before
    assert harness.server.statistics().handshake_failures == 1


@pytest.mark.asyncio
async def test_another_cluster_is_refused(harness: Harness) -> None:
    client = harness.client(dataclasses.replace(FAST, cluster="elsewhere"))
    with pytest.raises(AuthError, match="cluster"):
        await client.ping()
    assert served(harness) == 0
    assert harness.server.statistics().handshake_failures == 1


@pytest.mark.asyncio
async def test_another_protocol_version_is_refused(harness: Harness) -> None:
    raw = await RawPeer.connect(harness.server.port)
    await raw.send_obj([2, "ramster.hello", [99, "test", b"n" * 32]])
    reply = await raw.recv()
    assert isinstance(reply, list)
    assert reply[1] == "ramster.refused"
    assert reply[2][0] == VersionMismatch.code
    assert await raw.closed_by_peer()
    await raw.close()
    assert served(harness) == 0


@pytest.mark.asyncio
async def test_a_server_of_another_version_is_refused_by_the_client() -> None:
    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from tests.rpc.rawpeer import frame

        await reader.read(100)
        writer.write(frame([2, "ramster.challenge", [99, "test", b"n" * 32, b"m" * 32]]))
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(fake_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RpcClient("127.0.0.1", port, SECRET, FAST)
    try:
        with pytest.raises(VersionMismatch) as info:
            await client.ping()
        assert isinstance(info.value, ProtocolError)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_a_silent_connection_is_dropped_after_the_handshake_timeout(
    harness: Harness,
) -> None:
    raw = await RawPeer.connect(harness.server.port)
    start = asyncio.get_running_loop().time()
    assert await raw.closed_by_peer()
    assert asyncio.get_running_loop().time() - start < FAST.handshake_timeout + 1.0
    await raw.close()
    assert harness.server.statistics().handshake_failures == 1


@pytest.mark.asyncio
async def test_refusals_do_not_disturb_good_clients(harness: Harness) -> None:
    good = harness.client()
    await good.ping()
    for secret in (Secret(b"bad-secret-number-one-xx"), Secret(b"bad-secret-number-two-xx")):
        with pytest.raises(AuthError):
            await harness.client(secret=secret).ping()
    await good.ping()
    assert harness.server.statistics().handshakes == 1


@pytest.mark.asyncio
async def test_a_full_server_refuses_with_busy_before_the_handshake() -> None:
    server = RpcServer(SECRET, RpcConfig(cluster="test", max_connections=1))
    await server.start()
    first = RpcClient("127.0.0.1", server.port, SECRET, FAST)
    second = RpcClient("127.0.0.1", server.port, SECRET, FAST)
    try:
        await first.ping()
        with pytest.raises(Busy):
            await second.ping()
        with pytest.raises(PeerLost):
            await second.ping()  # backing off
    finally:
        await first.close()
        await second.close()
        await server.close()
