"""The owner call sequences (CallMarks) and the copy orders (hold.expect) against reordered,
late and flooded calls (fourth review, findings 1 and 2): an order sent before a drop that ran
first orders nothing, and marks pushed out of their bounded table leave a safe-side floor."""

from __future__ import annotations

import os

from ramster.pagestore import PoolConfig, claims
from ramster.pagestore.codec import checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.rpc.pages import PageBatch

INC = "00000180-aaaa"
MALLORY_INC = "00000180-mmmm"


def lent_pool(mib: int = 64) -> LentPool:
    return LentPool(PoolConfig(budget_bytes=mib << 20))


def stored(tag: int) -> tuple[bytes, int]:
    raw = bytes([tag]) * 64 + os.urandom(64) * 63
    return encode(raw, PoolConfig()), checksum(raw)


def test_an_order_sent_before_a_drop_that_ran_first_brings_no_stray() -> None:
    """Finding 1. The owner ordered a copy of K v1 onto holder T (hold.expect, call 20), then
    dropped K v1 there (hold.drop, call 21: e.g. the copy timed out and repair gave up, or the
    owner invalidated K). The drop runs on T first (reordered / the expect was a slow or resent
    call), the order after it. The drop withdrew no order (none yet), and the expect is not
    judged against the drop mark: the forwarded copy lands and stays, a copy the owner dropped
    (exactly the straggler case CallMarks was made for, through the copy path). Invariant 10
    (whatever order messages arrive in), leak of a dropped copy; for an export a later rebuild
    inventories it back."""
    lent = lent_pool()
    data, sum_ = stored(5)
    lent.put(
        "o", INC, PageBatch([0], [1], [1], [1], [stored(1)[0]]), seq=1
    )  # the owner is known here
    assert lent.drop("o", INC, [0], [58], [1], seq=21) == [False]  # nothing held yet
    lent.expect("o", INC, [0], [58], [1], [sum_], 20)  # sent before the drop, runs after
    kept = lent.put("o", INC, PageBatch([0], [58], [1], [sum_], [data]), copy=True)
    assert kept == [False], "a copy ordered before a drop that reached its version was kept"
    assert lent.get("o", INC, [0], [58]) == [None]


def test_another_owner_cannot_flush_a_victims_drop_marks() -> None:
    """Finding 2a. The marks are one table for every owner, bounded at MAX_CALL_MARKS, oldest
    first. Victim: put K v4 (call 10) straggles; drop K v4 (call 11) runs first. Any member
    (a hostile one with its own identity, or just busy honest owners) then sends drops of
    MAX_CALL_MARKS keys of its own that it never put: no budget, no pages needed. The victim's
    drop mark is evicted, and the straggling put is kept: the copy no owner references (the
    simulation's seed 1024 bug) is back."""
    lent = lent_pool()
    data, sum_ = stored(4)
    assert lent.drop("victim", INC, [0], [3], [4], seq=11) == [False]
    n = claims.MAX_CALL_MARKS
    step = 8192
    for start in range(0, n, step):
        offs = list(range(start, start + step))
        lent.drop("mallory", MALLORY_INC, [0] * step, offs, [1] * step, seq=start + 1)
    assert lent.put("victim", INC, PageBatch([0], [3], [4], [sum_], [data]), seq=10) == [False], (
        "another owner's drops of keys it never held evicted the victim's drop mark: the "
        "straggling put that the victim's later drop undid was kept"
    )


def test_another_owner_cannot_flush_a_victims_put_marks() -> None:
    """Finding 2b. Victim: put K v1 (call 10) kept; drop K v1 (call 11) is slow; the victim
    puts K v1 again (call 12: a spill or repair retried, which CallMarks is documented to keep)
    and counts holder H as a replica. Another member puts and drops MAX_CALL_MARKS keys of its
    own (room for one batch at a time suffices), evicting the victim's put mark. The slow drop
    (call 11) now runs and takes the copy put by call 12: the victim's acknowledged replica is
    gone while it counts it (invariant 1: R=2 no longer survives one more holder loss)."""
    lent = lent_pool()
    data, sum_ = stored(7)
    assert lent.put("victim", INC, PageBatch([0], [3], [1], [sum_], [data]), seq=10) == [True]
    assert lent.put("victim", INC, PageBatch([0], [3], [1], [sum_], [data]), seq=12) == [True]
    n = claims.MAX_CALL_MARKS
    step = 4096
    junk, junk_sum = stored(9)
    for start in range(0, n, step):
        offs = list(range(start, start + step))
        ok = lent.put(
            "mallory",
            MALLORY_INC,
            PageBatch([0] * step, offs, [1] * step, [junk_sum] * step, [junk] * step),
            seq=start + 1,
        )
        assert all(ok)
        lent.drop("mallory", MALLORY_INC, [0] * step, offs, [1] * step)  # no seq: no drop mark
        lent.reclaim_step(1 << 20)
    lent.drop("victim", INC, [0], [3], [1], seq=11)  # sent before call 12, runs last
    assert lent.get("victim", INC, [0], [3]) == [(1, sum_, data)], (
        "a drop sent before the re-put took the re-put copy once another owner's puts "
        "evicted the victim's put mark"
    )


def test_ordinary_spill_traffic_does_not_expire_a_put_mark() -> None:
    """Finding 2c: the same without any hostile member. The victim's own spill of 256 MiB
    (65,536 pages, a fraction of a second of traffic to one holder) after its re-put evicts the
    re-put's mark; the slow drop (call 11) then takes the copy the victim counts."""
    lent = lent_pool(mib=300)
    data, sum_ = stored(7)
    assert lent.put("victim", INC, PageBatch([0], [3], [1], [sum_], [data]), seq=10) == [True]
    assert lent.put("victim", INC, PageBatch([0], [3], [1], [sum_], [data]), seq=12) == [True]
    step = 4096
    junk, junk_sum = stored(9)
    seq = 13
    for start in range(1 << 20, (1 << 20) + claims.MAX_CALL_MARKS, step):
        offs = list(range(start, start + step))
        ok = lent.put(
            "victim",
            INC,
            PageBatch([1] * step, offs, [2] * step, [junk_sum] * step, [junk] * step),
            seq=seq,
        )
        seq += 1
        assert all(ok)
    lent.drop("victim", INC, [0], [3], [1], seq=11)  # sent before call 12, runs last
    assert lent.get("victim", INC, [0], [3]) == [(1, sum_, data)], (
        "the victim's own spill traffic expired its put mark; a drop sent before the re-put "
        "took the copy"
    )
