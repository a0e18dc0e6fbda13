"""A server learns it is fenced from its own lent pool too: a takeover (or a delete) claims its
new term on every member, the old server among them, and a read that needs no holder call must
not serve the old server's view (the simulation's seed 18 with --exports: a block the new
server wrote read as zeros on the old one until its next keepalive)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from ramster.cluster.exports import export_owner
from ramster.cluster.peers import Peers
from ramster.frontswap.remote import ClusterFrontswap
from ramster.nbd import const
from ramster.nbd.config import REPLICATED, ExportSpec
from ramster.node.config import NodeConfig
from ramster.node.export_records import ExportRecords
from ramster.node.exports import ExportService
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool

pytestmark = pytest.mark.asyncio
SIZE = 64 * 4096


async def test_a_newer_claim_in_the_servers_own_lent_pool_fences_it_at_once(
    tmp_path: Path,
) -> None:
    lent = LentPool(PoolConfig(budget_bytes=1 << 20))
    peers = cast(Peers, SimpleNamespace(me="n1", calls=None))
    service = ExportService(
        NodeConfig(node_id="n1", state_dir=tmp_path),
        peers,
        cast(ClusterFrontswap, None),
        lambda *_: None,
        lent,
        ExportRecords(tmp_path),
    )
    export = service.build(ExportSpec("e", SIZE, 31, REPLICATED), const.MAX_PAYLOAD)
    served = service.served["e"]
    served.term = 1  # serving under term 1 (as _attempt leaves it)
    await export.open_areas()
    assert lent.claim(export_owner("e"), 1, "n1", SIZE)[0]
    assert await export.read_many([(0, 4096)]) == [[bytes(4096)]]  # never written: zeros

    # Another node takes the export over: its claim reaches this node's lent pool first.
    assert lent.claim(export_owner("e"), 2, "n2", SIZE)[0]

    assert await export.read_many([(0, 4096)]) == [const.EIO]
    assert await export.write_many([(0, b"x" * 4096)]) == [const.EIO]
    assert export.fenced is not None
    assert served.fs.fenced is not None  # the service retires it at its next turn
