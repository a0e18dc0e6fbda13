"""A rebuild whose term this node's own lent pool no longer admits (a move took a newer one
meanwhile) fails as ExportTaken, as a holder's refusal does: the lent pool's Fenced escaped
instead, out of the resume task and through the export service's task group, and took down the
node's background work: heartbeats, spiller and all (simulation seed 82)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import cast

import pytest

from ramster.cluster.peers import Peers
from ramster.errors import ExportTaken
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.node.export_rebuild import Rebuilder
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.testing.inproc import InProcessHolders

pytestmark = pytest.mark.asyncio
OWNER, PS, SIZE = "export:x", 4096, 64 * 4096


async def test_a_newer_term_taken_meanwhile_is_export_taken_not_a_crash() -> None:
    lent = LentPool(PoolConfig(budget_bytes=1 << 20))
    assert lent.claim(OWNER, 2, "n1", SIZE)[0]
    assert lent.claim(OWNER, 3, "n2", SIZE)[0]  # the move, meanwhile
    tier = RemoteTier(
        PoolConfig(budget_bytes=1 << 20),
        InProcessHolders(OWNER, "t2@n1", {}),
        SpillConfig(replicas=2),
        max_areas=2,
        rng=random.Random(1),
        replicated=True,
    )
    peers = cast(Peers, SimpleNamespace(me="n1"))
    rb = Rebuilder(peers, lent, PS, "x", SIZE, tier, OWNER, "t2@n1")
    with pytest.raises(ExportTaken, match="term 3 by n2"):
        await rb.inventories([])
