"""Roles and identities bound to the session: a program may use the frontswap and read the
node's status, nothing else; a node acts only as itself. Every refusal is a typed error
(Forbidden), counted, and changes nothing on the holder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ramster import protocol
from ramster.client import Client
from ramster.errors import AuthError, Forbidden, ProtocolError, RpcError
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Identity, KeyKind, Keys, PageBatch, RpcClient, Secret

SECRET = Secret(b"roles-test-secret-0123456789")
CLIENT_SECRET = Secret(b"roles-client-secret-987654321", KeyKind.CLIENT)
OWNER = Identity.node("owner", "18000000000-aa")
BATCH = PageBatch.of((0, i, 1, 0xABC0 + i, bytes([i]) * 100) for i in range(8))


@pytest_asyncio.fixture
async def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    monkeypatch.setenv("RAMSTER_CLIENT_SECRET", CLIENT_SECRET.value.decode())
    config = NodeConfig(
        node_id="holder", listen="127.0.0.1:0", state_dir=tmp_path, local_budget=1 << 20
    )
    node = Node(config, SECRET)
    await node.start()
    yield node
    await node.close()


def rpc(node: Node, identity: Identity, secret: Secret = SECRET) -> RpcClient:
    host, port = node.address.rsplit(":", 1)
    return RpcClient(host, int(port), secret, identity=identity)


def held(node: Node) -> list[object]:
    """What the holder keeps for the owner (the state refusals must not change)."""
    keys = Keys.of((0, i) for i in range(8))
    return [
        None if p is None else (p[0], p[1], bytes(p[2]))
        for p in node.lent.get(OWNER.node_id, OWNER.incarnation, keys.areas, keys.offsets)
    ]


async def _owner_stores(node: Node, owner: RpcClient) -> list[object]:
    await owner.call(protocol.HELLO, [OWNER.node_id, OWNER.incarnation])
    kept = await owner.call(protocol.HOLD_PUT, [OWNER.node_id, OWNER.incarnation, BATCH.to_wire()])
    assert kept == [True] * 8
    before = held(node)
    assert all(p is not None for p in before)
    return before


def owner_calls(identity_of_victim: Identity = OWNER) -> list[tuple[str, list[object]]]:
    """Calls that would store, drop or take over the owner's pages, in the owner's name."""
    who = [identity_of_victim.node_id, identity_of_victim.incarnation]
    keys = Keys.of((0, i) for i in range(8)).to_wire()
    return [
        (protocol.HOLD_PUT, [*who, BATCH.to_wire()]),
        (protocol.HOLD_DROP, [*who, keys, [99] * 8]),
        (protocol.HOLD_DROP_AREA, [*who, 0, 1 << 40]),
        (protocol.HOLD_GET, [*who, keys]),
        (protocol.HOLD_COPY, [*who, "elsewhere", keys, [1] * 8, [0] * 8]),
        # a made-up newer incarnation would make the holder forget every page of the owner
        (protocol.HELLO, [identity_of_victim.node_id, "ffffffffffffff-00"]),
        (protocol.HELLO, [identity_of_victim.node_id, identity_of_victim.incarnation]),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("secret", [SECRET, CLIENT_SECRET], ids=["cluster", "client"])
async def test_a_client_session_may_not_act_as_a_node(node: Node, secret: Secret) -> None:
    async with rpc(node, OWNER) as owner, rpc(node, Identity.client(), secret) as program:
        before = await _owner_stores(node, owner)
        term = node.election.view.term
        refused: list[tuple[str, list[object]]] = [
            *owner_calls(),
            (protocol.HOLD_PUT_COPY, [OWNER.node_id, OWNER.incarnation, BATCH.to_wire()]),
            (protocol.DRAIN, []),
            (protocol.COORD_REBALANCE, []),
            (protocol.COORD_ORDER, [term + 1, "holder", 1, "move", "holder", "a", "b", 1]),
        ]
        forbidden_before = node.server.statistics().forbidden
        for method, params in refused:
            with pytest.raises(Forbidden):
                await program.call(method, params)
        assert node.server.statistics().forbidden == forbidden_before + len(refused)
        # Nothing changed on the holder: same pages, not draining, no order taken.
        assert held(node) == before
        assert not node.lent.draining
        assert node.follower.done == (0, 0, 0)
        # What a program may do, it still can.
        assert (await program.call(protocol.HELLO, []))["node"] == "holder"  # type: ignore[index]
        await program.call(protocol.STATS, [])
        await program.call(protocol.FS_INIT, [0])
    async with Client(node.address, secret) as client:
        assert await client.store(0, 1, b"p" * 4096)
        assert await client.load(0, 1) == b"p" * 4096
        assert (await client.hello())["node"] == "holder"


@pytest.mark.asyncio
async def test_a_node_session_acts_only_as_itself(node: Node) -> None:
    mallory = Identity.node("mallory", "18000000001-bb")
    async with rpc(node, OWNER) as owner, rpc(node, mallory) as impostor:
        before = await _owner_stores(node, owner)
        for method, params in owner_calls():
            with pytest.raises(Forbidden, match="only as itself"):
                await impostor.call(method, params)
        # Its own incarnation's name, by another run of the same node id, is refused too.
        async with rpc(node, Identity.node("owner", "18000000002-cc")) as later:
            with pytest.raises(Forbidden):
                await later.call(
                    protocol.HOLD_DROP_AREA, [OWNER.node_id, OWNER.incarnation, 0, 1 << 40]
                )
        assert held(node) == before
        # The real owner is still the owner: it reads its pages and drops them.
        got = await owner.call(
            protocol.HOLD_GET,
            [OWNER.node_id, OWNER.incarnation, Keys.of((0, i) for i in range(8)).to_wire()],
        )
        assert len(PageBatch.from_wire(got)) == 8
        assert await owner.call(
            protocol.HOLD_DROP_AREA, [OWNER.node_id, OWNER.incarnation, 0, 1 << 40]
        )
    assert all(p is None for p in held(node))


@pytest.mark.asyncio
async def test_a_holder_forwards_another_owners_copies_with_put_copy(node: Node) -> None:
    survivor = Identity.node("survivor", "18000000003-dd")
    async with rpc(node, survivor) as holder, rpc(node, OWNER) as owner:
        # Not before the owner itself spoke here: a copy never creates an owner.
        with pytest.raises(ProtocolError, match="only the owner advances it"):
            await holder.call(
                protocol.HOLD_PUT_COPY, [OWNER.node_id, OWNER.incarnation, BATCH.to_wire()]
            )
        assert node.lent.statistics().owners == 0
        await owner.call(protocol.HELLO, [OWNER.node_id, OWNER.incarnation])
        # Only copies the owner itself ordered here (hold.expect) are kept.
        assert (
            await holder.call(
                protocol.HOLD_PUT_COPY, [OWNER.node_id, OWNER.incarnation, BATCH.to_wire()]
            )
            == [False] * 8
        )
        keys = Keys(BATCH.areas, BATCH.offsets).to_wire()
        order: list[object] = [OWNER.node_id, OWNER.incarnation, keys, BATCH.versions]
        order.append(BATCH.checksums)
        await owner.call(protocol.HOLD_EXPECT, order)
        kept = await holder.call(
            protocol.HOLD_PUT_COPY, [OWNER.node_id, OWNER.incarnation, BATCH.to_wire()]
        )
        assert kept == [True] * 8
        assert all(p is not None for p in held(node))
        # An owner uses hold.put for its own pages, not the copy path.
        with pytest.raises(Forbidden):
            await owner.call(
                protocol.HOLD_PUT_COPY, [OWNER.node_id, OWNER.incarnation, BATCH.to_wire()]
            )


@pytest.mark.asyncio
async def test_the_client_secret_never_makes_a_node(node: Node) -> None:
    with pytest.raises(ValueError, match="cluster secret"):
        rpc(node, OWNER, CLIENT_SECRET)
    # Crafted anyway (a client secret claiming a node role): the handshake refuses it.
    host, port = node.address.rsplit(":", 1)
    client = RpcClient(host, int(port), Secret(CLIENT_SECRET.value), identity=OWNER)
    async with client:
        with pytest.raises(AuthError):
            await client.call(protocol.STATS, [])
    # The client saw the server's proof fail (another secret) and never sent its own.
    assert node.server.statistics().handshakes == 0


@pytest.mark.asyncio
async def test_debug_damage_needs_the_test_hooks_flag(node: Node) -> None:
    async with rpc(node, OWNER) as owner:
        await _owner_stores(node, owner)
        with pytest.raises(Exception, match="no method"):
            await owner.call(protocol.DEBUG_DAMAGE, [OWNER.node_id, 0, 0, False])


@pytest.mark.asyncio
async def test_the_client_role_is_exactly_the_documented_methods(node: Node) -> None:
    # Every node method outside CLIENT_METHODS is refused to a program, whatever its params
    # (the role is checked before they are even decoded); every one inside is not.
    async with rpc(node, Identity.client()) as program:
        for method in protocol.METHODS:
            try:
                await program.call(method, [])
            except Forbidden:
                assert method not in protocol.CLIENT_METHODS, method
            except RpcError:
                assert method in protocol.CLIENT_METHODS, method  # a bad-params error only
            else:
                assert method in protocol.CLIENT_METHODS, method
