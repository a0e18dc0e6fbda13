"""A server rebuilding an export sees every copy it holds itself, however many: its own lent
pool's inventory is paged as a holder's is (`LentPool.inventory` answers at most
INVENTORY_LIMIT keys at a time). Before, only the first 65,536 keys were seen: the blocks past
them read as I/O errors though their only copy was right here, or, with an older copy on
another holder, read back that older version without error (review of issue 23).

Real sizes (70,000 blocks, more than INVENTORY_LIMIT), in-process holders: a few seconds."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import cast

import pytest

from ramster.cluster.peers import Peers
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.nbd import const
from ramster.nbd.config import REPLICATED, ExportSpec
from ramster.nbd.export import OPEN_AREAS, Export
from ramster.node.export_rebuild import DATA_AREA, MANIFEST_AREA, Rebuilder
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import INVENTORY_LIMIT
from tests.nbd.test_export_safety import Holders

pytestmark = pytest.mark.asyncio
OWNER, PS = "export:x", 4096
BLOCKS = INVENTORY_LIMIT + 4464
SIZE = BLOCKS * PS
MANIFEST_PAGES = -(-BLOCKS // (1 << 15))


def _server(lents: dict[str, LentPool], inc: str, term: int) -> tuple[Export, RemoteTier, Holders]:
    via = Holders(OWNER, inc, lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=BLOCKS * 64 + (8 << 20)),
        via,
        SpillConfig(replicas=2),
        max_areas=2,
        rng=random.Random(5),
        replicated=True,
        version_base=term << 40,
        cache_bytes=0,
    )
    spec = ExportSpec("x", SIZE, 0, REPLICATED)
    export = Export(
        fs.frontswap,
        spec,
        const.MAX_PAYLOAD,
        area=DATA_AREA,
        manifest_area=MANIFEST_AREA,
        opener=OPEN_AREAS,
        fenced=lambda: fs.fenced,
    )
    return export, fs, via


async def _write_all(export: Export, fs: RemoteTier, page: bytes | None) -> None:
    await export.open_areas()
    rb = Rebuilder(cast(Peers, SimpleNamespace(me="n0")), LentPool(PoolConfig()), PS, "x", SIZE,
                   fs, OWNER, "t1@n0")  # fmt: skip
    assert await rb.new_manifest(MANIFEST_PAGES) == []
    for i in range(0, BLOCKS, 1000):
        blocks = range(i, min(i + 1000, BLOCKS))
        writes = [(b * PS, page or bytes([b % 251 + 1]) * PS) for b in blocks]
        assert await export.write_many(writes) == [0] * len(writes)


async def test_every_copy_the_server_holds_itself_is_seen_past_the_inventory_limit() -> None:
    n1 = LentPool(PoolConfig(budget_bytes=256 << 20))
    # Term 1, served by n0; its only holder is n1 (two nodes: one copy, degraded).
    export, fs, _ = _server({"n1": n1}, "t1@n0", 1)
    await _write_all(export, fs, None)
    # n0 is gone; n1 takes the export over (term 2) and rebuilds from what it holds itself,
    # storing its copies again on a fresh holder n2.
    assert n1.claim(OWNER, 2, "n1", SIZE)[0]
    export2, fs2, _ = _server({"n2": LentPool(PoolConfig(budget_bytes=512 << 20))}, "t2@n1", 2)
    await export2.open_areas()
    rb = Rebuilder(cast(Peers, SimpleNamespace(me="n1")), n1, PS, "x", SIZE, fs2, OWNER, "t2@n1")
    heard = await rb.inventories([])
    assert len(heard.data["n1"][0]) == BLOCKS
    _, written, lost, _ = await rb.rebuild(heard, new=False)
    export2.restore_index(written, lost)
    assert len(lost) == 0
    last = BLOCKS - 1
    got = await export2.read_many([(0, PS), (last * PS, PS)])
    assert got == [[bytes([1]) * PS], [bytes([last % 251 + 1]) * PS]]
    # Every copy was rehomed (stored on n2, then dropped here): none is left behind.
    assert len(n1.inventory(OWNER, "t2@n1", DATA_AREA, 0, INVENTORY_LIMIT)[0]) == 0


async def test_an_overwrite_past_the_inventory_limit_never_reads_back_older() -> None:
    n1 = LentPool(PoolConfig(budget_bytes=256 << 20))
    h3 = LentPool(PoolConfig(budget_bytes=256 << 20))
    export, fs, via = _server({"n1": n1, "h3": h3}, "t1@n0", 1)
    await _write_all(export, fs, b"old!" * 1024)
    # h3 is briefly unreachable; the last block is overwritten (acknowledged, one copy on n1).
    via.down.add("h3")
    last = BLOCKS - 1
    assert await export.write_many([(last * PS, b"NEW!" * 1024)]) == [0]
    via.down.discard("h3")
    # n0 goes; n1 takes the export over (term 2), hearing h3 and itself.
    for lent in (n1, h3):
        assert lent.claim(OWNER, 2, "n1", SIZE)[0]
    export2, fs2, _ = _server(
        {"n2": LentPool(PoolConfig(budget_bytes=512 << 20)), "h3": h3}, "t2@n1", 2
    )
    await export2.open_areas()

    async def inventory(node: str, identity: object, area: int, start: int, limit: int) -> object:
        return {"h3": h3}[node].inventory(OWNER, "t2@n1", area, start, limit)

    peers = cast(Peers, SimpleNamespace(me="n1", calls=SimpleNamespace(inventory=inventory)))
    rb = Rebuilder(peers, n1, PS, "x", SIZE, fs2, OWNER, "t2@n1")
    heard = await rb.inventories(["h3"])
    _, written, lost, _ = await rb.rebuild(heard, new=False)
    export2.restore_index(written, lost)
    assert len(lost) == 0
    assert await export2.read_many([(last * PS, PS)]) == [[b"NEW!" * 1024]]
