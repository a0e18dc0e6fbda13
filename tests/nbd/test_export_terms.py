"""An export's terms and versions have a ceiling the server keeps (review of issue 23).

Versions of term T run from T << 40 to ((T + 1) << 40) - 1, and a version must stay below 2^63:
a term above MAX_EXPORT_TERM (2^23 - 1) is never taken (the move or start is refused, clearly,
and nothing is claimed), and a term that has issued all its versions refuses writes rather than
issue a version of the next term."""

from __future__ import annotations

import random

import pytest

from ramster.cluster.exports import export_owner
from ramster.errors import ExportTaken
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.node.exports import MAX_EXPORT_TERM, TERM_SHIFT
from ramster.node.node import Node
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import MAX_TERM_JUMP
from tests.nbd import test_export_move_refused as moves
from tests.nbd.test_export_safety import Holders

pytestmark = pytest.mark.asyncio
OWNER = export_owner("swap0")
PS = moves.PS
three = moves.three
"""n0 serves swap0 at term 1; n1 listens for NBD; n2 holds."""


async def test_the_last_term_still_has_valid_versions() -> None:
    assert ((MAX_EXPORT_TERM + 1) << TERM_SHIFT) - 1 == (1 << 63) - 1


async def test_a_served_term_issues_no_version_of_the_next_term(three: list[Node]) -> None:
    n0 = three[0]
    served = n0.exports.served["swap0"]
    assert served.term == 1
    assert served.tier.version_limit == (2 << TERM_SHIFT) - 1


async def test_no_term_above_the_last_is_taken_even_by_a_forced_move(
    three: list[Node],
) -> None:
    _, n1, n2 = three
    # Another node's claims up to the last term (a holder takes no jump over MAX_TERM_JUMP, so
    # a hostile or runaway claimer climbs there in steps).
    for node in (n1, n2):
        known = node.lent.claim(OWNER, 0, "", 0)[1].term
        for term in [*range(known + MAX_TERM_JUMP, MAX_EXPORT_TERM, MAX_TERM_JUMP)]:
            assert node.lent.claim(OWNER, term, "n9", 8 << 20)[0]
        assert node.lent.claim(OWNER, MAX_EXPORT_TERM, "n9", 8 << 20)[0]
    before = n1.exports.records.get("swap0")
    with pytest.raises(ExportTaken, match="no term is left") as refused:
        await n1.adopt_export("swap0", 0, 31, force=True)
    assert "delete" in str(refused.value)
    # Nothing above the last term was claimed anywhere, nor recorded.
    for node in three:
        assert node.lent.claim(OWNER, 0, node.node_id, 0)[1].term <= MAX_EXPORT_TERM
    assert n1.exports.records.get("swap0") == before
    assert moves._state(n1) is None


async def test_a_term_whose_versions_are_used_up_refuses_writes_and_never_serves_older() -> None:
    term = MAX_EXPORT_TERM
    lents = {f"h{i}": LentPool(PoolConfig(budget_bytes=16 << 20)) for i in (1, 2)}
    inc = f"t{term}@me"
    fs = RemoteTier(
        PoolConfig(budget_bytes=8 << 20),
        Holders("export:x", inc, lents),
        SpillConfig(replicas=2),
        max_areas=2,
        rng=random.Random(5),
        replicated=True,
    )
    for lent in lents.values():
        assert lent.claim("export:x", term, "me", 1 << 20)[0]
    last = ((term + 1) << TERM_SHIFT) - 1
    # As a served export sets it, its counter 4 versions short of the term's end.
    fs.start_versions_at(term << TERM_SHIFT, last)
    fs.start_versions_at(last - 4)
    await fs.frontswap.init(0)
    assert await fs.frontswap.store_many(0, [0, 1, 2, 3], [b"a" * PS] * 4) == [True] * 4
    assert await fs.frontswap.store_many(0, [0], [b"b" * PS]) == [False]  # would be version 2^63
    assert await fs.frontswap.store_many(0, [5, 6], [b"c" * PS] * 2) == [False, False]
    # The refused overwrite left no stale copy: key 0 is gone, not "a".
    assert await fs.frontswap.load_many(0, [0, 1, 5]) == [None, b"a" * PS, None]
    for lent in lents.values():
        _, versions, _ = lent.inventory("export:x", inc, 0, 0, 1 << 16)
        assert all(int(v) <= last for v in versions)
