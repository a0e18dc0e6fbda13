"""A member that missed an export's deletion and hears of it late, once a new life of the
export claimed it (fourth review, finding 4): the deleted life's copies go, the new life's stay,
and the new life's server stays unfenced."""

from __future__ import annotations

import os

from ramster.pagestore import PoolConfig
from ramster.pagestore.codec import checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import TERM_SHIFT, export_incarnation
from ramster.rpc.pages import PageBatch

OWNER = "export:disk"


def stored(tag: int) -> tuple[bytes, int]:
    raw = bytes([tag]) * 64 + os.urandom(64) * 63
    return encode(raw, PoolConfig()), checksum(raw)


def test_a_deletion_told_late_takes_only_the_deleted_life() -> None:
    n = LentPool(PoolConfig(budget_bytes=8 << 20))
    assert n.claim(OWNER, 1, "a", 1 << 20)[0]
    old, old_sum = stored(1)
    v_old = (1 << TERM_SHIFT) + 5
    assert n.put(
        OWNER, export_incarnation(1, "a"), PageBatch([0], [7], [v_old], [old_sum], [old])
    ) == [True]
    # Deleted under term 2 elsewhere while N was away; a new life (term 3) claims N.
    new_inc = export_incarnation(3, "b")
    assert n.claim(OWNER, 3, "b", 1 << 20)[0]
    new, new_sum = stored(2)
    v_new = (3 << TERM_SHIFT) + 1
    assert n.put(OWNER, new_inc, PageBatch([0], [8], [v_new], [new_sum], [new])) == [True]
    assert n.delete_export(OWNER, 2, "deleter") == 0  # told late: not fenced
    assert n.terms.deleted_term(OWNER) == 2
    offs, vers, _ = n.inventory(OWNER, new_inc, 0, 0, 100)
    assert offs.tolist() == [8] and vers.tolist() == [v_new]
    while n.reclaim_pending():
        n.reclaim_step()
    assert n.get(OWNER, new_inc, [0, 0], [7, 8]) == [None, (v_new, new_sum, new)]
    assert n.statistics().pool.stored_pages == 1
    assert n.claim(OWNER, 3, "b", 1 << 20)[0]  # the new life's server is not fenced
