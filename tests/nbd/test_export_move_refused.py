"""An unforced move never leaves an export served by nobody (review of issue 23).

- A node that must be heard is silent before the move takes a term: the move is refused and
  nothing changed (the current server still acknowledges writes, no record moved).
- One that answered the claim but whose inventory then fails (paused, slow): the term is
  already taken, so the current server is fenced; the move is not given up: its answer says
  so (ExportPending), the new server waits as a resumed export does and serves, with every
  acknowledged block, once that node answers. Records say who serves.

Before the fix, the second case refused the move after fencing the current server: nobody
served, n0's record said not serving, n1's said serving (but it did not, nor ever would)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ramster.errors import ExportPending, ExportTaken
from ramster.node.config import NodeConfig
from ramster.node.node import Node
from ramster.rpc import Secret
from ramster.testing.cluster import free_port
from ramster.testing.wait import wait_until

pytestmark = pytest.mark.asyncio
SECRET = Secret(b"move-refused-secret-0123456789abcdef")
PS = 4096


def _config(tmp: Path, i: int, ports: list[int], **kw: Any) -> NodeConfig:
    return NodeConfig(
        node_id=f"n{i}",
        listen=f"127.0.0.1:{ports[i]}",
        peers=tuple(f"127.0.0.1:{p}" for j, p in enumerate(ports) if j != i),
        state_dir=tmp / f"n{i}",
        admin_listen=None,
        local_budget=16 << 20,
        lent_budget=64 << 20,
        dead_after=1.5,
        owner_grace=5.0,
        **kw,
    )


@pytest_asyncio.fixture
async def three(tmp_path: Path) -> AsyncIterator[list[Node]]:
    """n0 serves swap0 (replicated, R=2) and has written block 0; n1 listens for NBD with no
    export; n2 only holds."""
    ports = [free_port() for _ in range(3)]
    nbd = {"nbd_swap_safety": False}
    nodes = [
        Node(_config(tmp_path, 0, ports, nbd=f"127.0.0.1:{free_port()}",
                     nbd_exports=("swap0:8MiB",), **nbd), SECRET),
        Node(_config(tmp_path, 1, ports, nbd=f"127.0.0.1:{free_port()}", **nbd), SECRET),
        Node(_config(tmp_path, 2, ports), SECRET),
    ]  # fmt: skip
    try:
        for n in nodes:
            await n.start()
        await asyncio.gather(*(n.start_nbd() for n in nodes[:2]))
        await wait_until(lambda: _state(nodes[0]) == "serving", 30, "n0 serves swap0")
        assert await nodes[0].exports.served["swap0"].export.write_many([(0, b"a" * PS)]) == [0]
        yield nodes
    finally:
        for n in reversed(nodes):
            await n.close()


def _state(node: Node) -> str | None:
    served = node.exports.served.get("swap0")
    return None if served is None else served.state


def _failing(*_a: object, **_k: object) -> Any:
    raise ValueError("not available right now")


async def test_a_move_refused_before_its_term_leaves_the_server_serving(
    three: list[Node],
) -> None:
    n0, n1, n2 = three
    before = (n0.exports.records.get("swap0"), n1.exports.records.get("swap0"))
    n2.lent.claim = _failing  # type: ignore[method-assign]  # n2 answers no claim
    try:
        with pytest.raises(ExportTaken, match="cannot hear n2") as refused:
            await n1.adopt_export("swap0", 0, 31)
    finally:
        del n2.lent.claim
    assert not isinstance(refused.value, ExportPending)
    export = n0.exports.served["swap0"].export
    assert await export.write_many([(PS, b"b" * PS)]) == [0]
    assert await export.read_many([(0, PS), (PS, PS)]) == [[b"a" * PS], [b"b" * PS]]
    assert _state(n0) == "serving" and _state(n1) is None
    assert (n0.exports.records.get("swap0"), n1.exports.records.get("swap0")) == before


async def test_a_move_that_took_its_term_is_not_given_up_and_serves_once_it_hears(
    three: list[Node],
) -> None:
    n0, n1, n2 = three
    # n2 answers the claim, but its inventory does not come (paused right then, or slow).
    n2.lent.inventory = _failing  # type: ignore[method-assign]
    try:
        # Asked of n0 (`ramster export move swap0 --to n1` there): the answer crosses the wire.
        with pytest.raises(ExportPending, match="not served yet: cannot hear n2") as pending:
            await n0.move_export("swap0", "n1")
        print("move answered:", pending.value)
        # The term is taken: n0 is fenced, and n1 is the server, waiting to hear n2.
        served = n1.exports.served["swap0"]
        assert served.state == "hearing" and served.waiting == {"n2"}
        record = n1.exports.records.get("swap0")
        assert record is not None and record.serving and record.created and record.term == 2
        assert "n2" in record.holders  # a restart resumes it and hears n2 first
        await asyncio.sleep(1.0)  # it keeps trying: still not served, never given up
        assert _state(n1) == "hearing"
    finally:
        del n2.lent.inventory  # n2 answers again
    await wait_until(lambda: _state(n1) == "serving", 20, "n1 serves swap0 once n2 answers")
    export = n1.exports.served["swap0"].export
    assert await export.read_many([(0, PS)]) == [[b"a" * PS]]
    assert await export.write_many([(PS, b"c" * PS)]) == [0]
    await wait_until(lambda: "swap0" not in n0.exports.served, 20, "n0 retires swap0")
    r0, r1 = n0.exports.records.get("swap0"), n1.exports.records.get("swap0")
    assert r0 is not None and not r0.serving
    assert r1 is not None and r1.serving and r1.term == 2


async def test_a_forced_move_serves_a_waiting_takeover_without_the_silent_node(
    three: list[Node],
) -> None:
    n0, n1, n2 = three
    n2.lent.inventory = _failing  # type: ignore[method-assign]
    try:
        with pytest.raises(ExportPending):
            await n1.adopt_export("swap0", 0, 31)
        assert await n1.adopt_export("swap0", 0, 31, force=True) == 2
        assert _state(n1) == "serving"
        assert await n1.exports.served["swap0"].export.read_many([(0, PS)]) == [[b"a" * PS]]
    finally:
        del n2.lent.inventory
    await wait_until(lambda: "swap0" not in n0.exports.served, 20, "n0 retires swap0")
