"""A deleted export stays deleted (review of issue 23): `export delete` run on a node that holds
copies deletes them there too, and copies of the deleted life on a holder that missed the delete
are never taken for data when the export is served again (taken over by a move, which never
starts blank: a block it cannot vouch for is EIO). Before, block 0 read back its deleted bytes."""

from __future__ import annotations

import pytest

from ramster.node.node import Node
from ramster.testing.wait import wait_until
from tests.nbd.test_export_move_refused import PS, _failing, three

pytestmark = pytest.mark.asyncio
__all__ = ["three"]  # the fixture


def _held(node: Node) -> int:
    return node.lent.pages_by_owner().get("export:swap0", 0)


async def test_a_deleted_export_comes_back_blank(three: list[Node]) -> None:
    n0, _, n2 = three
    assert _held(n2)
    await n2.delete_export("swap0")  # run on a node that holds copies itself
    assert [_held(n) for n in three] == [0, 0, 0]
    await wait_until(lambda: "swap0" not in n0.exports.served, 10, "n0 retires swap0")
    await n0.adopt_export("swap0", 8 << 20, 31)
    export = n0.exports.served["swap0"].export
    assert [b"a" * PS] not in await export.read_many([(0, PS), (PS, PS)])
    assert await export.write_many([(0, b"c" * PS)]) == [0]
    assert await export.read_many([(0, PS)]) == [[b"c" * PS]]


async def test_copies_on_a_holder_that_missed_the_delete_stay_dead(three: list[Node]) -> None:
    n0, n1, n2 = three
    held = {n.node_id: _held(n) for n in three}
    assert held["n1"] and held["n2"], held
    n1.lent.delete_export = _failing  # type: ignore[method-assign]  # n1 misses the delete
    try:
        await n2.delete_export("swap0")
    finally:
        del n1.lent.delete_export
    assert _held(n1) == held["n1"]  # the deleted life's copies are still there
    await wait_until(lambda: "swap0" not in n0.exports.served, 10, "n0 retires swap0")
    await n0.adopt_export("swap0", 8 << 20, 31)
    export = n0.exports.served["swap0"].export
    assert await export.read_many([(0, PS)]) != [[b"a" * PS]]  # zeros or EIO, never the old
    assert await export.write_many([(0, b"c" * PS)]) == [0]
    assert await export.read_many([(0, PS)]) == [[b"c" * PS]]
