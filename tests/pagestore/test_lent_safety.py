"""The holder enforces what safety needs, whatever order messages arrive in (invariant 10):
newest wins on every put, area drops reach only what they name and cost bounded steps, and a
copy forwarded for an owner never creates, advances or revives it."""

from __future__ import annotations

import os
import time

import pytest

from ramster.errors import InvalidPage
from ramster.pagestore import PoolConfig
from ramster.pagestore.codec import checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import (
    MAX_OWNERS,
    Fenced,
    StaleIncarnation,
    TooManyOwners,
    export_incarnation,
)
from ramster.rpc.pages import PageBatch

INC = "00000180-aaaa"
NEWER = "00000190-bbbb"
EXPORT = "export:disk"


def page(tag: int) -> bytes:
    return bytes([tag % 251 + 1]) * 8 + os.urandom(1000)


def lent_pool(mib: int = 16) -> LentPool:
    return LentPool(PoolConfig(budget_bytes=mib << 20))


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    """Bug 3 of issue 23: repair's copy of K v1 landed on h2 after the owner's K v2, replaced
    it, and repair's drop at v1 then removed it: two copies recorded, one held."""
    lent = lent_pool()
    v2 = page(2)
    lent.expect("o", INC, [0], [7], [1], [11])  # repair ordered the copy of v1 here
    assert lent.put("o", INC, PageBatch([0], [7], [2], [22], [v2])) == [True]
    # The late copy (from a survivor, over another connection) is refused: the owner's newer
    # store withdrew the order, and newest wins anyway (an older put of the owner's own, late
    # over another connection, is refused and counted).
    assert lent.put("o", INC, PageBatch([0], [7], [1], [11], [page(1)]), copy=True) == [False]
    assert lent.put("o", INC, PageBatch([0], [7], [1], [11], [page(1)])) == [False]
    assert lent.statistics().newer_held == 1
    # The repair's drop of what it thinks it put cannot reach v2 either.
    assert lent.drop("o", INC, [0], [7], [1]) == [False]
    assert lent.get("o", INC, [0], [7]) == [(2, 22, v2)]


def stored(tag: int) -> tuple[bytes, int]:
    """A real page in stored form and its checksum (what a holder can verify)."""
    raw = bytes([tag]) * 64 + os.urandom(64) * 63
    return encode(raw, PoolConfig()), checksum(raw)


def test_the_same_copy_twice_is_kept_as_it_is() -> None:
    lent = lent_pool()
    (v3, s3), (other, s4) = stored(3), stored(4)
    assert lent.put("o", INC, PageBatch([0], [1], [3], [s3], [v3])) == [True]
    assert lent.put("o", INC, PageBatch([0], [1], [3], [s3], [v3])) == [True]  # a duplicate
    assert lent.get("o", INC, [0], [1]) == [(3, s3, v3)]
    # The same version with other bytes is a conflict, never an overwrite.
    assert lent.put("o", INC, PageBatch([0], [1], [3], [s4], [other])) == [False]
    assert lent.get("o", INC, [0], [1]) == [(3, s3, v3)]
    assert lent.put("o", INC, PageBatch([0], [1], [4], [s4], [other])) == [True]


def test_a_damaged_copy_is_replaced_by_the_same_copy_again() -> None:
    """Review: a duplicate was answered as kept over a damaged held copy; a move then counted
    that copy as a replica and dropped the good one elsewhere."""
    lent = lent_pool()
    v3, s3 = stored(3)
    assert lent.put("o", INC, PageBatch([0], [1], [3], [s3], [v3])) == [True]
    lent.damage_for_test("o", 0, 1, stale=False)
    assert lent.get("o", INC, [0], [1]) != [(3, s3, v3)]
    assert lent.put("o", INC, PageBatch([0], [1], [3], [s3], [v3])) == [True]
    assert lent.get("o", INC, [0], [1]) == [(3, s3, v3)]


def test_orders_go_with_the_owners_drops_and_newer_stores() -> None:
    """Review: an order left behind let a copy still on its way in after the owner dropped the
    key (an untracked stray)."""
    lent = lent_pool()
    lent.expect("o", INC, [0, 0], [1, 2], [5, 5], [55, 55])
    assert lent.put("o", INC, PageBatch([0], [1], [5], [55], [page(5)])) == [
        True
    ]  # relayed by the owner
    lent.drop("o", INC, [0], [1], [5])
    lent.put("o", INC, PageBatch([0], [2], [6], [66], [page(6)]))
    assert len(lent.orders) == 0
    assert lent.put("o", INC, PageBatch([0], [1], [5], [55], [page(5)]), copy=True) == [False]
    assert lent.get("o", INC, [0], [1]) == [None]


def test_a_late_copy_of_a_dropped_area_stays_out() -> None:
    lent = lent_pool()
    lent.put("o", INC, PageBatch([0, 0], [1, 2], [5, 9], [0, 0], [page(5), page(9)]))
    lent.expect("o", INC, [0], [1], [5], [0])
    lent.drop_area("o", INC, 0, 6)
    assert lent.get("o", INC, [0, 0], [1, 2])[0] is None
    assert lent.get("o", INC, [0, 0], [1, 2])[1] is not None
    # A copy sent before the area drop, arriving after it, is an orphan nobody would drop.
    assert lent.put("o", INC, PageBatch([0], [1], [5], [0], [page(5)]), copy=True) == [False]
    assert lent.put("o", INC, PageBatch([0], [1], [10], [0], [page(10)])) == [True]


def test_a_copy_never_creates_advances_or_revives_an_owner() -> None:
    """Bug 4: a copy naming a victim with a made-up newer incarnation reclaimed all its
    pages here and locked it out; copies under made-up owners grew the owner table."""
    lent = lent_pool()
    mine = page(1)
    lent.note_owner("victim", INC, now=time.monotonic())
    assert lent.put("victim", INC, PageBatch([0], [1], [1], [1], [mine])) == [True]
    with pytest.raises(StaleIncarnation):
        lent.put("victim", NEWER, PageBatch([0], [2], [1], [1], [page(2)]), copy=True)
    with pytest.raises(StaleIncarnation):
        lent.put("nobody", INC, PageBatch([0], [2], [1], [1], [page(2)]), copy=True)
    assert lent.get("victim", INC, [0], [1]) == [(1, 1, mine)]  # the victim still reads
    assert lent.statistics().owners == 1
    # For an export: a copy names the term this holder knows, and raises none.
    lent.claim(EXPORT, 3, "s", 1 << 20)
    lent.expect(EXPORT, export_incarnation(3, "s"), [0], [1], [1], [1])
    with pytest.raises(Fenced):
        lent.put(
            EXPORT, export_incarnation(4, "s"), PageBatch([0], [1], [1], [1], [mine]), copy=True
        )
    assert lent.claim(EXPORT, 0, "", 0)[1].term == 3
    assert lent.put(
        EXPORT, export_incarnation(3, "s"), PageBatch([0], [1], [1], [1], [mine]), copy=True
    )


def test_empty_batches_change_nothing() -> None:
    lent = lent_pool()
    for owner in ("a", "b", "c"):
        with pytest.raises(InvalidPage):
            lent.put(owner, INC, PageBatch([], [], [], [], []))
    assert lent.statistics().owners == 0


def test_the_owner_table_is_bounded() -> None:
    lent = lent_pool()
    lent.put("keeper", INC, PageBatch([0], [1], [1], [1], [page(1)]))
    for i in range(MAX_OWNERS + 50):
        lent.get(f"passer-{i}", INC, [0], [1])  # an owner that keeps nothing here
    stats = lent.statistics()
    assert stats.owners <= MAX_OWNERS
    assert lent.get("keeper", INC, [0], [1])[0] is not None
    full = lent_pool(64)
    for i in range(MAX_OWNERS):
        full.put(f"o{i}", INC, PageBatch([0], [1], [1], [1], [b"\x01" * 8]))
    with pytest.raises(TooManyOwners):
        full.put("one-more", INC, PageBatch([0], [1], [1], [1], [b"\x01" * 8]))


def test_an_area_drop_takes_bounded_steps() -> None:
    """Bug 7: hold.drop_area freed a whole area in one step (~0.45 s per million pages): a
    large area made its holder look dead to every peer."""
    lent = lent_pool(64)
    n = 200_000
    same = [i.to_bytes(8, "little") for i in range(n)]  # same-filled: cheap to hold
    for first in range(0, n, 8192):
        idx = range(first, min(n, first + 8192))
        lent.put(
            "o",
            INC,
            PageBatch(
                [0] * len(idx), list(idx), [5] * len(idx), [0] * len(idx), [same[i] for i in idx]
            ),
        )
    lent.put(
        "o", INC, PageBatch([0], [n + 1], [9], [0], [page(9)])
    )  # stored after the invalidation
    started = time.perf_counter()
    assert lent.drop_area("o", INC, 0, 8) == n + 1
    first_step = time.perf_counter() - started
    # Gone at once for every reader, freed a bounded step at a time.
    assert lent.get("o", INC, [0, 0], [0, n - 1]) == [None, None]
    assert lent.reclaim_pending()
    steps = 0
    while lent.reclaim_pending():
        lent.reclaim_step()
        steps += 1
    assert steps >= n // 8192
    assert lent.statistics().pool.stored_pages == 1
    assert lent.get("o", INC, [0], [n + 1])[0] is not None
    assert first_step < 0.1


def test_owners_forgotten_together_are_freed_a_bounded_step_at_a_time() -> None:
    """Many silent owners forgotten in one pass (or a restart's old incarnation) free nothing
    in that pass: the reclaim loop frees them a step at a time, whatever their number."""
    lent = lent_pool()
    lent.step_pages = 4
    for o in range(5):
        lent.note_owner(f"o{o}", INC, now=0.0)
        lent.put(
            f"o{o}", INC, PageBatch([0] * 10, list(range(10)), [1] * 10, [0] * 10, [page(1)] * 10)
        )
    assert sorted(lent.reclaim_silent(100.0, 30.0).values()) == [10] * 5
    assert lent.statistics().pool.stored_pages == 50
    lent.note_owner("o9", INC, now=100.0)
    lent.put("o9", INC, PageBatch([0] * 10, list(range(10)), [1] * 10, [0] * 10, [page(1)] * 10))
    assert lent.note_owner("o9", NEWER, now=100.0) == 10
    assert lent.statistics().pool.stored_pages == 60
    freed = []
    while lent.reclaim_pending():
        freed.append(lent.reclaim_step())
    # A step ends once it freed step_pages, at the end of an index leaf: one owner's 10 here.
    assert sum(freed) == 60 and max(freed) <= 10


def test_a_copy_nobody_ordered_is_refused() -> None:
    """A copy needs its owner's order (hold.expect: keys, versions and checksums), sent by the
    owner itself: a member forging a newer copy of another owner's page changes nothing."""
    lent = lent_pool()
    mine = page(1)
    assert lent.put("victim", INC, PageBatch([0], [1], [4], [44], [mine])) == [True]
    forged = (1 << 63) - 1
    assert lent.put("victim", INC, PageBatch([0], [1], [forged], [9], [page(9)]), copy=True) == [
        False
    ]
    assert lent.statistics().unordered_copies == 1
    assert lent.get("victim", INC, [0], [1]) == [(4, 44, mine)]
    assert lent.put("victim", INC, PageBatch([0], [1], [5], [55], [page(5)])) == [True]
    # An order is for those exact bytes, and is used once.
    lent.expect("victim", INC, [0, 0], [2, 3], [6, 6], [66, 67])
    assert lent.put(
        "victim", INC, PageBatch([0, 0], [2, 3], [6, 6], [66, 99], [page(6)] * 2), copy=True
    ) == [
        True,
        False,
    ]
    assert lent.put("victim", INC, PageBatch([0], [2], [6], [66], [page(6)]), copy=True) == [False]
    assert lent.get("victim", INC, [0, 0], [2, 3])[1] is None


def test_a_copy_never_changes_an_areas_kind() -> None:
    lent = lent_pool()
    lent.put("o", INC, PageBatch([0], [1], [1], [1], [page(1)]), ephemeral=True)
    lent.expect("o", INC, [0], [2], [2], [2])
    assert lent.put("o", INC, PageBatch([0], [2], [2], [2], [page(2)]), copy=True) == [True]
    assert lent.pool.statistics().ephemeral_pages == 2


def test_a_put_that_runs_after_a_later_drop_is_refused() -> None:
    """The simulation's seed 1024: the owner's put of K v4 to a slow holder straggled, so the
    owner dropped it there (a later call); the drop ran first, the put 5 s later, and the copy
    stayed for good, referenced by no one. The call sequence tells them apart."""
    lent = lent_pool()
    assert lent.drop("o", INC, [0], [3], [4], seq=11) == [False]  # nothing held yet
    assert lent.put("o", INC, PageBatch([0], [3], [4], [44], [page(4)]), seq=10) == [False]
    assert lent.get("o", INC, [0], [3]) == [None]
    assert lent.refused_for_order == 1  # not for room: the handler says so
    # The same version put again after the drop (a spill or repair retried) is kept, and a
    # newer version from before the drop too (the drop reached v4 only).
    assert lent.put("o", INC, PageBatch([0], [3], [4], [44], [page(4)]), seq=12) == [True]
    assert lent.put("o", INC, PageBatch([0], [5], [6], [66], [page(6)]), seq=9) == [True]
    assert lent.drop("o", INC, [0], [5], [5], seq=13) == [False]
    assert lent.put("o", INC, PageBatch([0], [5], [7], [77], [page(7)]), seq=8) == [True]
    # Without a sequence (an older caller) nothing changes.
    assert lent.put("o", INC, PageBatch([0], [9], [1], [11], [page(1)])) == [True]


def test_a_drop_that_runs_after_a_later_put_leaves_its_copy() -> None:
    """The simulation's seed 1024 again: a drop of K v1 timed out on a slow holder and was sent
    again; repair then put K v1 there and recorded it, and the first drop, run last, took it."""
    lent = lent_pool()
    v1 = page(1)
    assert lent.put("o", INC, PageBatch([0], [58], [1], [11], [v1]), seq=30) == [True]
    assert lent.drop("o", INC, [0], [58], [1], seq=20) == [False]
    assert lent.get("o", INC, [0], [58]) == [(1, 11, v1)]
    # A drop sent after the put still takes it.
    assert lent.drop("o", INC, [0], [58], [1], seq=31) == [True]
    assert lent.get("o", INC, [0], [58]) == [None]


def test_a_drop_that_runs_after_a_later_ordered_copy_leaves_it() -> None:
    """The same for a repair's holder-to-holder copy: the owner's order (hold.expect) is its
    call, and the copy that lands counts as a put of that call."""
    lent = lent_pool()
    data, sum_ = stored(5)
    lent.expect("o", INC, [0], [58], [1], [sum_], 30)
    assert lent.put("o", INC, PageBatch([0], [58], [1], [sum_], [data]), copy=True) == [True]
    assert lent.drop("o", INC, [0], [58], [1], seq=20) == [False]
    assert lent.get("o", INC, [0], [58]) == [(1, sum_, data)]
    assert lent.drop("o", INC, [0], [58], [1], seq=31) == [True]


def test_call_marks_are_per_incarnation_and_bounded() -> None:
    from ramster.pagestore import claims

    lent = lent_pool()
    lent.drop("o", INC, [0], [3], [4], seq=11)
    # Another incarnation's sequence is another counter: its put is not judged by this drop.
    assert lent.put("o", NEWER, PageBatch([0], [3], [4], [44], [page(4)]), seq=1) == [True]
    marks = claims.CallMarks()
    for i in range(claims.MAX_CALL_MARKS + 10):
        marks.dropped("o", INC, 0, [i], [1], i + 1)
        marks.kept("o", INC, 0, [i], i + 1)
    assert len(marks) == 2 * claims.MAX_CALL_MARKS
    marks.forget("o")
    assert len(marks) == 0
