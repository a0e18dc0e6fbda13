"""An export's reclaimed mark (the news its server must hear to repair around this holder) is
cleared by an inventory only once the caller's term stands: a stale server's inventory, refused
as fenced, never spends the live server's news (fifth review, finding B).

No sockets: one LentPool."""

from __future__ import annotations

import pytest

from ramster.pagestore import PoolConfig, checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import Fenced, Reclaimed
from ramster.rpc.pages import PageBatch

OWNER = "export:x"
PS = 4096


def _page(lent: LentPool) -> tuple[int, int, bytes]:
    data = b"live" * (PS // 4)
    return 1 << 41, checksum(data), encode(data, lent.pool.config)


def test_a_stale_inventory_swallows_the_reclaim_news_of_the_live_server() -> None:
    now = [0.0]
    lent = LentPool(PoolConfig(budget_bytes=1 << 20))
    lent.clock = lambda: now[0]
    assert lent.claim(OWNER, 1, "a", 1 << 20)[0]  # the old server
    assert lent.claim(OWNER, 2, "b", 1 << 20)[0]  # the live server now (term 2)
    v, s, p = _page(lent)
    assert lent.put(OWNER, "t2@b", PageBatch([0], [7], [v], [s], [p])) == [True]
    # b is cut off from this holder past the export grace: its pages here are reclaimed.
    now[0] = 100.0
    assert lent.reclaim_exports(60.0) == {OWNER: 1}
    # The fenced old server a (term 1) asks an inventory (a rebuild attempt it loses): refused.
    with pytest.raises(Fenced):
        lent.inventory(OWNER, "t1@a", 0, 0, 16)
    # b's next data call must still hear that its pages here were reclaimed.
    with pytest.raises(Reclaimed):
        lent.get(OWNER, "t2@b", [0], [7])
