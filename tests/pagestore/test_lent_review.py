"""Holder rules the third review attacked (pure LentPool, no sockets): a late put of an area's
earlier life, repeated area drops, an area id reused under a sweep, many owners forgotten at
once, and a claim evicted from the claims table."""

from __future__ import annotations

import os
import time

import pytest

from ramster.pagestore import PoolConfig
from ramster.pagestore.codec import checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import FORGETS_PER_PASS, Reclaimed
from ramster.rpc.pages import PageBatch

INC = "00000180-aaaa"


def stored(tag: int) -> tuple[bytes, int]:
    """An incompressible page in stored form and its checksum."""
    raw = bytes([tag]) * 8 + os.urandom(4088)
    return encode(raw, PoolConfig()), checksum(raw)


def test_a_late_put_of_an_areas_earlier_life_never_changes_its_kind() -> None:
    """Area 5 was ephemeral, invalidated and initialised again as persistent. The new life's
    persistent pages reach the holder first; a put of the old life (sent by the spiller before
    the invalidation, answered after it: the area drop is still queued behind it) arrives late.
    The holder takes the owner's word for the kind of the whole area on every put, so the
    persistent copies it acknowledged become ephemeral and another owner's store evicts them."""
    lent = LentPool(PoolConfig(budget_bytes=2 << 20))
    mine = [stored(i) for i in range(64)]
    # The new, persistent life of area 5: acknowledged (versions 100..163).
    ok = lent.put(
        "a",
        INC,
        PageBatch(
            [5] * 64,
            list(range(64)),
            list(range(100, 164)),
            [s for _, s in mine],
            [p for p, _ in mine],
        ),
    )
    assert all(ok)
    # The old, ephemeral life's put, late: a key the new life never stored, an older version.
    old, old_sum = stored(200)
    lent.put("a", INC, PageBatch([5], [1000], [50], [old_sum], [old]), ephemeral=True)
    # Another owner's persistent spill needs room: it evicts ephemeral pages.
    for batch in range(40):
        other = [stored(j) for j in range(16)]
        lent.put(
            "b",
            INC,
            PageBatch(
                [0] * 16,
                list(range(batch * 16, batch * 16 + 16)),
                [1] * 16,
                [s for _, s in other],
                [p for p, _ in other],
            ),
        )
    held = lent.get("a", INC, [5] * 64, list(range(64)))
    lost = [i for i, h in enumerate(held) if h is None]
    assert not lost, f"{len(lost)} acknowledged persistent copies of a were evicted"


def test_repeated_area_drops_keep_one_sweep_per_area() -> None:
    """A member (acting only as itself) keeps one tiny same-filled page per index leaf of an
    area of its own, then sends hold.drop_area for that area again and again (any max_version:
    nothing needs to be dropped). Every call snapshots the area's whole leaf list into a new
    AreaSweep (sorting it: work that grows with the area, in one call) and its own reclaim step
    walks only `step_pages` leaves of the newest sweep; older sweeps wait (LIFO). Even with one
    more reclaim-loop step per call, the backlog grows by about (leaves - 2 * step) per call:
    holder memory grows without bound (never OOM, invariant 3; bounded tables, invariant 10)."""
    lent = LentPool(PoolConfig(budget_bytes=64 << 20))
    leaves = 16_384
    offsets = [i * 64 for i in range(leaves)]  # one page per 64-key index leaf
    for first in range(0, leaves, 4096):
        part = offsets[first : first + 4096]
        ok = lent.put(
            "m",
            INC,
            PageBatch(
                [0] * len(part), part, [5] * len(part), [0] * len(part), [b"\x07" * 8] * len(part)
            ),
        )
        assert all(ok)
    calls = 12
    for _ in range(calls):
        lent.drop_area("m", INC, 0, 1)  # drops nothing: every page is newer than version 1
        lent.reclaim_step()  # the reclaim loop keeps pace: one more step per call
    backlog = sum(len(s.leaves) for s in lent._sweeps.values())
    assert backlog <= leaves, (
        f"{len(lent._sweeps)} area sweeps pending, {backlog} leaf entries queued after "
        f"{calls} drops of one area of {leaves} leaves"
    )


def test_an_area_id_reused_under_a_pending_sweep_keeps_the_new_pages() -> None:
    """(Held.) An area drop's sweep is pending; its owner is forgotten (silent past grace)
    together with a larger one, its area id is freed while the larger owner's pages use up
    the step, and handed out again to the same key after the owner's hello: the stale sweep
    resumes on the reused id, but takes only versions at or below its floor, and a node
    owner's later stores are all newer."""
    lent = LentPool(PoolConfig(budget_bytes=64 << 20))
    lent.step_pages = 64
    lent.note_owner("p", INC, now=0.0)
    lent.note_owner("o", INC, now=0.0)
    n = 4096
    same = [b"\x05" * 8] * n
    assert all(lent.put("p", INC, PageBatch([0] * n, list(range(n)), [5] * n, [0] * n, same)))
    assert all(lent.put("o", INC, PageBatch([0] * n, list(range(n)), [5] * n, [0] * n, same)))
    lent.drop_area("o", INC, 0, 10)  # a sweep of 64 leaves, one done
    (sweep,) = lent._sweeps.values()
    lent.reclaim_silent(100.0, 30.0)  # both forgotten: o's area id is freed first (LIFO)
    while sweep.ident not in lent._free_ids:
        lent.reclaim_step()
    lent.note_owner("o", INC, now=101.0)  # hello: told, and back
    (payload, s) = stored(9)
    assert lent.put("o", INC, PageBatch([0], [100], [11], [s], [payload])) == [True]
    # The same key may get the same area id back, under the stale sweep if it is still there.
    while lent.reclaim_pending():
        lent.reclaim_step()
    assert lent.get("o", INC, [0], [100]) == [(11, s, payload)]


def test_a_claim_asked_at_term_zero_names_its_server_after_eviction() -> None:
    """hold.claim at term 0 (how `_attempt` learns who serves an export) answers
    `claims.get(owner) or ExportClaim(known_term, "", 0)`: once the claim moved to the old-terms
    table (MAX_EXPORTS claims, this export with no pages here), the answer names no server.
    `_attempt` then computes current = "" and skips its moved-away check
    (`not takeover and current and newest_term > mine`): a restarted former server resumes
    over a newer server's term, and a takeover does not add the current server to the nodes
    it must hear."""
    lent = LentPool(PoolConfig(budget_bytes=4 << 20))
    assert lent.claim("export:x", 7, "X", 1 << 20)[0]
    for i in range(1024):  # MAX_EXPORTS other exports
        lent.claim(f"export:other-{i}", 1, "m", 0)
    answer = lent.claim("export:x", 0, "s", 0)[1]
    assert (answer.term, answer.node) == (7, "X"), answer


def test_many_silent_exports_are_forgotten_a_few_per_pass() -> None:
    """Any member may claim export names of its making, and fill the holder's area, floor and
    order tables with its own calls (a forget scans them): one pass of the reclaim loop
    forgets at most FORGETS_PER_PASS silent exports, the rest at the next passes, and the
    reclaim epochs it remembers stay bounded."""
    lent = LentPool(PoolConfig(budget_bytes=4 << 20))
    now = [0.0]
    lent.clock = lambda: now[0]
    n = 1 << 18  # MAX_EXPECTED orders of the member's own pages
    lent.expect("m", INC, [0] * n, list(range(n)), [1] * n, [1] * n)
    for area in range(1 << 16):  # MAX_FLOORS area drops of its own
        lent.drop_area("m", INC, area, 1)
    names = 250
    for i in range(names):
        lent.claim(f"export:made-up-{i}", 1, "m", 0)
    now[0] = 10.0
    forgotten = 0
    while forgotten < names:
        started = time.perf_counter()
        done = len(lent.reclaim_exports(5.0))
        took = time.perf_counter() - started
        assert 0 < done <= FORGETS_PER_PASS
        assert took < 0.5, f"one pass of the reclaim loop took {took:.2f} s"
        forgotten += done
    assert lent.reclaim_exports(5.0) == {}


def test_an_exports_keepalive_keeps_the_news_that_its_pages_were_reclaimed() -> None:
    """A holder forgets an export's pages after `export_grace` and marks it. The server's
    keepalive claim (its answer carries no epoch) must not clear the mark: its next data call
    is told (Reclaimed, once), so that it repairs around this holder."""
    now = [0.0]
    lent = LentPool(PoolConfig(budget_bytes=4 << 20))
    lent.clock = lambda: now[0]
    export, inc = "export:disk", "t1@s"
    assert lent.claim(export, 1, "s", 1 << 20)[0]
    (payload, s) = stored(1)
    assert lent.put(export, inc, PageBatch([0], [3], [(1 << 40) + 1], [s], [payload])) == [True]
    now[0] = 100.0
    assert lent.reclaim_exports(50.0) == {export: 1}
    taken, claim = lent.claim(export, 1, "s", 1 << 20)  # the keepalive comes first
    assert taken and claim.term == 1
    with pytest.raises(Reclaimed):
        lent.get(export, inc, [0], [3])
    assert lent.get(export, inc, [0], [3]) == [None]  # told once: the server repairs
