"""Garbage parameters to every node method, from a program and from a node, over encrypted and
integrity-only sessions: a typed error reply, nothing stored, still serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramster import protocol
from ramster.client import Client
from ramster.errors import Forbidden, ProtocolError, RemoteError, RpcError
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Identity, Keys, PageBatch, RpcClient, RpcConfig, Secret
from ramster.testing.wait import wait_until

SECRET = Secret(b"hostile-test-secret-0123456789")
METHODS = [
    protocol.HELLO,
    protocol.STATS,
    protocol.HOLD_PUT,
    protocol.HOLD_GET,
    protocol.HOLD_DROP,
    protocol.HOLD_DROP_AREA,
    protocol.FS_INIT,
    protocol.FS_STORE,
    protocol.FS_STORE_ENCODED,
    protocol.FS_LOAD,
    protocol.FS_LOAD_ENCODED,
    protocol.FS_INVALIDATE,
    protocol.FS_INVALIDATE_AREA,
    protocol.COORD_ORDER,
    protocol.COORD_REBALANCE,
    protocol.HOLD_COPY,
    protocol.HOLD_PUT_COPY,
    protocol.HOLD_EXPECT,
    protocol.DRAIN,
    protocol.DEBUG_DAMAGE,
]
FUZZER = Identity.node("fuzzer", "1-f")

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.text(max_size=20)
    | st.binary(max_size=64),
    lambda children: st.lists(children, max_size=6),
    max_leaves=20,
)


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(
        node_id="target", listen="127.0.0.1:0", state_dir=tmp_path, local_budget=1 << 20
    )
    node = Node(config, SECRET)
    await node.start()
    yield node
    await node.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("role", ["client", "node"])
@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "integrity-only"])
async def test_garbage_params_get_errors_and_harm_nothing(
    node: Node, role: str, encrypt: bool
) -> None:
    address = node.address
    host, port = address.rsplit(":", 1)
    identity = FUZZER if role == "node" else Identity.client()
    config = RpcConfig(encrypt=encrypt)
    async with (
        RpcClient(host, int(port), SECRET, config, identity=identity) as rpc,
        Client(address, SECRET) as client,
    ):
        await client.init(0)
        page = bytes(range(256)) * 16
        assert await client.store(0, 1, page)

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(method=st.sampled_from(METHODS), params=st.lists(plain, max_size=6))
        def one(method: str, params: list[object]) -> None:
            async def call() -> None:
                try:
                    await rpc.call(method, params, timeout=5)
                except (ProtocolError, RemoteError):
                    pass  # Forbidden is a RemoteError too
                except RpcError as exc:  # anything else would be a transport failure
                    raise AssertionError(f"{method} {params!r}: {exc!r}") from exc

            pending.append(call())

        pending: list[object] = []
        one()
        for coro in pending:
            await coro  # type: ignore[misc]
        # Still serving. Garbage may happen to be a valid invalidation, never a corruption.
        assert await client.load(0, 1) in (page, None)
        await client.init(3)
        assert await client.store(3, 9, page)
        assert await client.load(3, 9) == page
        st_ = await client.stats()
        assert st_["pool"]["pool_total_size"] <= 1 << 20
        # A program can never drain a node (a node may: node.drain [] is a valid call).
        assert not st_["draining"] or role == "node"
    rpc_stats = node.server.statistics()
    assert rpc_stats.integrity_failures == 0 and rpc_stats.protocol_errors == 0
    assert rpc_stats.encrypted_sessions == rpc_stats.handshakes  # the node asks for it


@pytest.mark.asyncio
async def test_orders_from_an_older_term_or_another_coordinator_are_refused(node: Node) -> None:
    host, port = node.address.rsplit(":", 1)
    term = node.election.view.term
    move = ["move", "target", "a", "b", 10]

    def as_node(name: str) -> RpcClient:
        return RpcClient(host, int(port), SECRET, identity=Identity.node(name, "1-" + name))

    async with as_node("impostor") as impostor, as_node("x") as x, as_node("newcomer") as new:
        with pytest.raises(ProtocolError, match="stale order"):
            await impostor.call(protocol.COORD_ORDER, [term, "impostor", 1, *move])
        with pytest.raises(ProtocolError, match="sent to target"):
            await x.call(protocol.COORD_ORDER, [term + 1, "x", 1, "move", "other", "a", "b", 1])
        with pytest.raises(ProtocolError, match="malformed order"):
            await new.call(protocol.COORD_ORDER, [term, "newcomer", 1, "move", "target", "a"])
        # An order in another coordinator's name is refused before it is even looked at.
        with pytest.raises(Forbidden, match="only as itself"):
            await impostor.call(protocol.COORD_ORDER, [term + 5, "newcomer", 9, *move])
        # A newer term than this node knows is followed (it has not heard of the election yet).
        await new.call(protocol.COORD_ORDER, [term + 1, "newcomer", 7, *move])
        stats = await new.call(protocol.STATS, [])
    assert isinstance(stats, dict)
    assert stats["orders"]["refused"] == 1
    # a and b are unknown here: nothing moved.
    await wait_until(lambda: node.follower.done == (term + 1, 7, 0), 3, "the order followed")


@pytest.mark.asyncio
async def test_a_node_cannot_act_for_another_through_put_copy(node: Node) -> None:
    """Issue 23, bug 4: one hold.put_copy naming a victim with a made-up newer incarnation
    reclaimed the victim's pages here and locked it out; empty batches under made-up owners
    grew the owner table without bound."""
    host, port = node.address.rsplit(":", 1)
    victim_id = Identity.node("victim", "00000180-aaaa")
    payload = bytes(range(256)) * 4
    batch = PageBatch.of([(0, 5, 3, 77, payload)])
    async with (
        RpcClient(host, int(port), SECRET, identity=victim_id) as victim,
        RpcClient(host, int(port), SECRET, identity=Identity.node("mallory", "1-m")) as mallory,
    ):
        assert await victim.call(
            protocol.HOLD_PUT, ["victim", victim_id.incarnation, batch.to_wire()]
        ) == [True]
        made_up = PageBatch.of([(0, 6, 1, 1, payload)])
        with pytest.raises(ProtocolError, match="only the owner advances it"):
            await mallory.call(
                protocol.HOLD_PUT_COPY, ["victim", "7fffffffffffffff-evil", made_up.to_wire()]
            )
        # A copy the victim never ordered, under its real incarnation, changes nothing.
        stale = PageBatch.of([(0, 5, 2, 1, payload[::-1])])
        assert await mallory.call(
            protocol.HOLD_PUT_COPY, ["victim", victim_id.incarnation, stale.to_wire()]
        ) == [False]
        owners = node.lent.statistics().owners
        for i in range(300):
            with pytest.raises(ProtocolError):
                await mallory.call(
                    protocol.HOLD_PUT_COPY, [f"ghost-{i}", "1-g", PageBatch.of([]).to_wire()]
                )
        assert node.lent.statistics().owners == owners
        # The victim still reads its page, as itself, byte for byte.
        got = PageBatch.from_wire(
            await victim.call(
                protocol.HOLD_GET, ["victim", victim_id.incarnation, Keys.of([(0, 5)]).to_wire()]
            )
        )
        assert [(p.version, p.checksum, bytes(p.payload)) for p in got] == [(3, 77, payload)]
    assert node.lent.statistics().unordered_copies == 1
