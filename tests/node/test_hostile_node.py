"""Garbage parameters to every node method: a typed error reply, nothing stored, still serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramster import protocol
from ramster.client import Client
from ramster.errors import ProtocolError, RemoteError, RpcError
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import RpcClient, Secret
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
    protocol.DRAIN,
]

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
async def test_garbage_params_get_errors_and_harm_nothing(node: Node) -> None:
    address = node.address
    host, port = address.rsplit(":", 1)
    async with RpcClient(host, int(port), SECRET) as rpc, Client(address, SECRET) as client:
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
                    pass
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


@pytest.mark.asyncio
async def test_orders_from_an_older_term_or_another_coordinator_are_refused(node: Node) -> None:
    host, port = node.address.rsplit(":", 1)
    term = node.election.view.term
    move = ["move", "target", "a", "b", 10]
    async with RpcClient(host, int(port), SECRET) as rpc:
        with pytest.raises(ProtocolError, match="stale order"):
            await rpc.call(protocol.COORD_ORDER, [term, "impostor", 1, *move])
        with pytest.raises(ProtocolError, match="sent to target"):
            await rpc.call(protocol.COORD_ORDER, [term + 1, "x", 1, "move", "other", "a", "b", 1])
        with pytest.raises(ProtocolError, match="malformed order"):
            await rpc.call(protocol.COORD_ORDER, [term, "target", 1, "move", "target", "a"])
        # A newer term than this node knows is followed (it has not heard of the election yet).
        await rpc.call(protocol.COORD_ORDER, [term + 1, "newcomer", 7, *move])
        stats = await rpc.call(protocol.STATS, [])
    assert isinstance(stats, dict)
    assert stats["orders"]["refused"] == 1
    # a and b are unknown here: nothing moved.
    await wait_until(lambda: node.follower.done == (term + 1, 7, 0), 3, "the order followed")
