"""A degraded (min_replicas=1) acknowledged manifest update, then the loss of its only holder
(review of the slots, finding 2; open). Before slots the refusing holder dropped its older copy
of the page (`_begin_put`), so the page had no copy left and its range read as I/O errors
(unknown). With slots the older state survives in the other slot and is taken as the truth: a
block written and acknowledged reads as zeros (invariant 11: unknown is not empty)."""

from __future__ import annotations

import pytest

from ramster.nbd import const
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from tests.nbd.test_export_refused import _fill
from tests.nbd.test_export_uncertain import PS, X, _created, _take_over

pytestmark = pytest.mark.asyncio


@pytest.mark.xfail(
    strict=True,
    reason="open (issue 24): a manifest update kept by fewer holders than asked flips its slot; "
    "a holder that refused it keeps the older slot, which a rebuild takes for the page's state "
    "once every copy of the newer one is lost (the fix: that older slot must go before the "
    "write is acknowledged, or a rebuild must be able to tell it was superseded)",
)
async def test_a_lost_degraded_manifest_update_never_reads_as_zeros() -> None:
    lents = {h: LentPool(PoolConfig(budget_bytes=1 << 20)) for h in ("h1", "h2")}
    export, _ = await _created(lents)  # blank page 0 on h1 and h2
    _fill(lents["h1"])  # h1 has no room: X and its manifest mark go to h2 alone (degraded)
    got = await export.write_many([(X * PS, b"acked" + bytes(PS - 5))])
    assert got == [0]  # acknowledged with one copy (min_replicas 1)
    lents["h1"].drop_area("junk", "j1", 0)
    # h2 is lost (restarted empty): X is gone; which blocks page 0 marked is unknown.
    lents["h2"] = LentPool(PoolConfig(budget_bytes=1 << 20))
    export2, _ = await _take_over(lents, "n1", 2)
    (read,) = await export2.read_many([(X * PS, PS)])
    assert read == const.EIO or read == [b"acked" + bytes(PS - 5)], (
        f"an acknowledged block reads as {'zeros' if read == [bytes(PS)] else read!r}"
    )
