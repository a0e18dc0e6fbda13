"""Races of the export service the simulation found (`--exports`).

A server learns it is fenced from its own lent pool too: a takeover (or a delete) claims its
new term on every member, the old server among them, and a read that needs no holder call must
not serve the old server's view (the simulation's seed 18 with --exports: a block the new
server wrote read as zeros on the old one until its next keepalive)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from ramster.cluster.exports import export_owner
from ramster.cluster.peers import Peers
from ramster.errors import ExportTaken
from ramster.frontswap.local import LocalFrontswap
from ramster.nbd import NbdServer, const
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
        cast(LocalFrontswap, None),
        lambda *_: None,
        lent,
        ExportRecords(tmp_path),
        None,
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
    assert served.tier.fenced is not None  # the service retires it at its next turn


async def test_a_takeover_that_meets_the_same_term_claimed_by_another_node_takes_a_newer_one(
    tmp_path: Path,
) -> None:
    """A restarted server resuming its export and an operator's move to another node took the
    same term at once; each refused the other and both gave up, so nobody served the export
    (the simulation's seed 1045 with --exports). The move now goes on under a newer term."""
    lent = LentPool(PoolConfig(budget_bytes=1 << 20))
    peers = cast(Peers, SimpleNamespace(me="n1", calls=None, alive=set, peers=list))
    service = ExportService(
        NodeConfig(node_id="n1", state_dir=tmp_path),
        peers,
        cast(LocalFrontswap, None),
        lambda *_: None,
        lent,
        ExportRecords(tmp_path),
        None,
    )
    # Forced: n2, silent here (no RPC in this test), need not be heard once it is the current
    # server; the tie is met either way.
    spec = ExportSpec("e", SIZE, 31, REPLICATED)
    service.build(spec, const.MAX_PAYLOAD, takeover=True, force=True)
    served = service.served["e"]
    # The other node's claim of term 1 reaches this node between its question and its claim.
    lent_claim = lent.claim

    def claim(owner: str, term: int, node: str, size: int) -> object:
        if term == 1 and node == "n1" and lent.terms.claims.get(owner) is None:
            lent_claim(owner, 1, "n2", SIZE)  # n2 got here first
        return lent_claim(owner, term, node, size)

    lent.claim = claim  # type: ignore[assignment,method-assign]
    first = await service.opener._attempt(served)
    assert first.retry and not first.ready
    second = await service.opener._attempt(served)
    assert second.ready, second
    assert served.term == 2


async def test_two_moves_to_one_node_at_once_make_one_takeover(tmp_path: Path) -> None:
    """Two moves to this node at once (an operator retrying with --force while the first
    waited for the claims of a partitioned cluster) both found nothing served here, then both
    built a takeover: the second replaced the first in the service's table, failed, and took
    the entry with it, so the first one served the export untended (no keepalive, no repair,
    never retired: the simulation's seed 1003 with --exports). The second is refused now."""
    lent = LentPool(PoolConfig(budget_bytes=1 << 20))
    peers = cast(Peers, SimpleNamespace(me="n1", calls=None, alive=set, peers=list))

    async def add_export(export: object) -> None:
        await asyncio.Event().wait()  # hearing every node (never, here)

    service = ExportService(
        NodeConfig(node_id="n1", state_dir=tmp_path),
        peers,
        cast(LocalFrontswap, None),
        lambda *_: None,
        lent,
        ExportRecords(tmp_path),
        cast(
            NbdServer,
            SimpleNamespace(
                exports={},
                config=SimpleNamespace(max_payload=const.MAX_PAYLOAD),
                add_export=add_export,
            ),
        ),
    )
    gate = asyncio.Event()

    async def known_size(name: str) -> int:
        await gate.wait()  # the claims of every member take a while
        return SIZE

    service.claims.known_size = known_size  # type: ignore[method-assign]
    first = asyncio.create_task(service.adopt("e", SIZE, 31, force=True))
    second = asyncio.create_task(service.adopt("e", SIZE, 31, force=False))
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(ExportTaken, match="being taken over here already"):
        await asyncio.wait_for(second, 5)  # without the check, it waits to hear for good
    assert service.served["e"].force  # the first one's takeover, still tended
    first.cancel()
    for task in [*service._tasks, first]:
        task.cancel()
    await asyncio.gather(first, *service._tasks, return_exceptions=True)
