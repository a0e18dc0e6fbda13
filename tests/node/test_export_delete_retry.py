"""Second review, finding 4: a holder that missed an export's deletion (down, cut off or failing
then) is told again once it answers, rather than keeping the deleted life's copies until
`export_grace`."""

from __future__ import annotations

import pytest

from ramster.node.node import Node
from ramster.testing.wait import wait_until
from tests.nbd.test_export_move_refused import _failing, three

pytestmark = pytest.mark.asyncio
__all__ = ["three"]  # the fixture


def _held(node: Node) -> int:
    return node.lent.pages_by_owner().get("export:swap0", 0)


async def test_a_holder_that_missed_the_delete_is_told_again(three: list[Node]) -> None:
    _, n1, n2 = three
    assert _held(n1)
    n1.lent.delete_export = _failing  # type: ignore[method-assign]  # n1 misses the delete
    try:
        await n2.delete_export("swap0")
        assert _held(n1)  # the deleted life's copies are still there
        assert set(n2.exports.claims.undeleted["export:swap0"][1]) == {"n1"}
    finally:
        del n1.lent.delete_export
    await wait_until(lambda: _held(n1) == 0, 10, "n1 told of the delete again")
    await wait_until(lambda: not n2.exports.claims.undeleted, 5, "nothing left to tell")
