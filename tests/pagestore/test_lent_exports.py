"""Export owners in the lent pool: pages outlive terms, older terms are fenced, inventories."""

from __future__ import annotations

import pytest

from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import (
    MAX_EXPORT_TERM,
    MAX_EXPORTS,
    MAX_TERM_JUMP,
    TERM_SHIFT,
    Fenced,
    Reclaimed,
    TooManyExports,
    export_incarnation,
    parse_export_incarnation,
)
from ramster.rpc.pages import PageBatch

OWNER = "export:swap0"


def _put(lent: LentPool, term: int, node: str, offsets: list[int], version: int) -> list[bool]:
    n = len(offsets)
    return lent.put(
        OWNER,
        export_incarnation(term, node),
        PageBatch([0] * n, offsets, [version] * n, [7] * n, [b"x" * 10] * n),
    )


def test_pages_outlive_the_term_that_wrote_them() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    assert _put(lent, 1, "a", [1, 2, 3], 5) == [True] * 3
    # A new server (a restart, or another node) takes term 2: the pages are still there.
    taken, claim = lent.claim(OWNER, 2, "b", 1 << 20)
    assert taken and (claim.term, claim.node, claim.size) == (2, "b", 1 << 20)
    got = lent.get(OWNER, export_incarnation(2, "b"), [0, 0], [1, 4])
    assert got[0] is not None and got[0][0] == 5 and got[1] is None


def test_older_terms_and_other_servers_of_a_term_are_fenced() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    _put(lent, 3, "a", [1], 5)
    with pytest.raises(Fenced):
        _put(lent, 2, "a", [1], 9)  # a stale server, resumed after a pause
    with pytest.raises(Fenced):
        _put(lent, 3, "b", [1], 9)  # the same term claimed by someone else
    with pytest.raises(Fenced):
        lent.drop(OWNER, export_incarnation(2, "a"), [0], [1], [99])
    with pytest.raises(Fenced):
        lent.drop_area(OWNER, export_incarnation(1, "z"), 0, 99)
    taken, claim = lent.claim(OWNER, 2, "c", 0)
    assert not taken and claim.term == 3
    # Nothing the fenced calls sent landed.
    held = lent.get(OWNER, export_incarnation(3, "a"), [0], [1])[0]
    assert held is not None and held[0] == 5
    assert lent.statistics().fenced_requests == 5  # the refused claim counts too
    assert lent.claim(OWNER, 0, "q", 0)[1].term == 3  # term 0 only asks


def test_inventory_is_ascending_and_paged() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    offsets = [9, 3, 100, 7, 55]
    for i, off in enumerate(offsets):
        _put(lent, 1, "a", [off], 10 + i)
    inc = export_incarnation(1, "a")
    offs, vers, sums = lent.inventory(OWNER, inc, 0, 0, 3)
    assert offs.tolist() == [3, 7, 9] and vers.tolist() == [11, 13, 10]
    assert sums.tolist() == [7, 7, 7]
    offs, _, _ = lent.inventory(OWNER, inc, 0, 10, 3)
    assert offs.tolist() == [55, 100]
    assert len(lent.inventory(OWNER, inc, 1, 0, 3)[0]) == 0


def test_delete_keeps_the_term_and_grace_reclaims() -> None:
    now = [0.0]
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    lent.clock = lambda: now[0]
    _put(lent, 1, "a", [1, 2], 5)
    assert lent.delete_export(OWNER, 2, "b") == 2
    with pytest.raises(Fenced):
        _put(lent, 1, "a", [1], 6)
    # A copy of the deleted life (a version below the next term's), however late, stays out.
    assert _put(lent, 2, "b", [4], (3 << TERM_SHIFT) - 1) == [False]
    assert lent.claim(OWNER, 0, "", 0)[1].term == 2
    v = 3 << TERM_SHIFT
    assert _put(lent, 3, "b", [4], v) == [True]
    assert lent.reclaim_exports(0) == {}  # 0: never
    now[0] = 100.0
    assert lent.reclaim_exports(50) == {OWNER: 1}
    with pytest.raises(Reclaimed):
        _put(lent, 3, "b", [4], v + 1)  # told once: its copies here are gone
    assert lent.claim(OWNER, 3, "b", 0)[0]  # a claim is a hello: the reclaim is told
    assert _put(lent, 3, "b", [4], v + 1) == [True]


def test_made_up_export_names_are_bounded() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    for i in range(MAX_EXPORTS):
        lent.claim(f"export:e{i}", 5, "a", 0)
    # Claims of exports with no pages here make room, longest silent first; their terms stay.
    assert lent.claim("export:one-more", 1, "a", 0)[0]
    assert lent.statistics().exports == MAX_EXPORTS
    assert not lent.claim("export:e0", 4, "b", 0)[0]  # still fenced below its last term
    assert not lent.claim("export:e0", 5, "b", 0)[0]  # and its term stays its server's
    assert lent.claim("export:e0", 5, "a", 0)[0]
    # Exports that hold pages here are never evicted.
    full = LentPool(PoolConfig(budget_bytes=64 << 20))
    for i in range(MAX_EXPORTS):
        full.put(
            f"export:e{i}", export_incarnation(1, "a"), PageBatch([0], [1], [1], [1], [b"\x01" * 8])
        )
    with pytest.raises(TooManyExports):
        full.claim("export:one-more", 1, "a", 0)


def test_terms_have_a_ceiling_and_a_bounded_jump() -> None:
    lent = LentPool(PoolConfig(budget_bytes=8 << 20))
    assert not lent.claim(OWNER, MAX_EXPORT_TERM + 1, "a", 0)[0]
    assert lent.claim(OWNER, 10, "a", 0)[0]
    assert not lent.claim(OWNER, 10 + MAX_TERM_JUMP + 1, "b", 0)[0]
    assert lent.claim(OWNER, 10 + MAX_TERM_JUMP, "b", 0)[0]


@pytest.mark.parametrize("bad", ["", "t1", "1@a", "tx@a", "t1@", "t-1@a"])
def test_export_incarnations_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_export_incarnation(bad)


def test_a_restart_that_names_its_dead_predecessor_is_no_twin() -> None:
    from ramster.pagestore.owners import LiveTwin

    lent = LentPool(PoolConfig(budget_bytes=8 << 20), twin_window=2.5)
    lent.note_owner("n0", "1-a", now=10.0)
    with pytest.raises(LiveTwin):
        lent.note_owner("n0", "2-b", now=10.5)  # a second process, or a restart: unknown
    with pytest.raises(LiveTwin):
        lent.note_owner("n0", "2-b", now=10.5, supersedes="0-z")  # names some other run
    lent.note_owner("n0", "2-b", now=10.6, supersedes="1-a")  # its state-dir lock was free
    assert lent.statistics().owners == 1
