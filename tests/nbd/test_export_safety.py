"""A replicated export's safety rules over in-process holders (real lent pools, no sockets): a
fence is absolute, a block marked written with no readable copy is an I/O error, and rehoming
never launders a damaged copy nor drops one it could not store elsewhere."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from ramster.cluster.peers import Peers
from ramster.errors import ExportFenced
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.nbd import const
from ramster.nbd.config import REPLICATED, ExportSpec
from ramster.nbd.export import OPEN_AREAS, Export
from ramster.node.export_rebuild import DATA_AREA, MANIFEST_AREA, Rebuilder
from ramster.pagestore import PoolConfig, checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import Fenced
from ramster.rpc.pages import PageBatch
from ramster.testing.inproc import InProcessHolders

pytestmark = pytest.mark.asyncio
OWNER, INC, PS = "export:x", "t1@me", 4096
BASE = 1 << 40


class Holders(InProcessHolders):
    """In-process holders that answer a fenced put as a node does (ExportFenced)."""

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        try:
            return await super().put(node, batch, ephemeral)
        except Fenced as exc:
            raise ExportFenced(str(exc)) from None


def _cluster(
    n: int = 2,
    holders: type[Holders] = Holders,
) -> tuple[RemoteTier, dict[str, LentPool], Holders]:
    lents = {f"h{i}": LentPool(PoolConfig(budget_bytes=16 << 20)) for i in range(1, n + 1)}
    via = holders(OWNER, INC, lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=8 << 20),
        via,
        SpillConfig(replicas=2),
        max_areas=2,
        rng=random.Random(5),
        replicated=True,
        version_base=BASE,
    )
    return fs, lents, via


async def _export(
    holders: type[Holders] = Holders,
) -> tuple[Export, RemoteTier, dict[str, LentPool], Holders]:
    fs, lents, via = _cluster(holders=holders)
    export = Export(
        fs.frontswap,
        ExportSpec("x", 1 << 20, 0, REPLICATED),
        const.MAX_PAYLOAD,
        area=DATA_AREA,
        manifest_area=MANIFEST_AREA,
        opener=OPEN_AREAS,
        fenced=lambda: fs.fenced,
    )
    await export.open_areas()
    return export, fs, lents, via


async def test_one_fenced_answer_fails_the_whole_batch_and_stops_the_export() -> None:
    export, _, lents, _ = await _export()
    assert await export.write_many([(0, b"a" * PS), (PS, b"b" * PS)]) == [0, 0]
    # h1 hears the new server's term; h2 has not yet, and keeps what it is sent.
    assert lents["h1"].claim(OWNER, 2, "other", 0)[0]
    # An overwrite (no manifest change): h2 alone would meet min_replicas.
    assert await export.write_many([(0, b"c" * PS)]) == [const.EIO]
    assert export.statistics().fenced is not None
    assert await export.write_many([(PS, b"d" * PS)]) == [const.EIO]
    assert await export.read_many([(0, PS)]) == [const.EIO]
    assert await export.flush() == const.EIO


async def test_a_fenced_first_write_with_its_manifest_fails_too() -> None:
    export, _, lents, _ = await _export()
    assert await export.write_many([(0, b"a" * PS)]) == [0]
    assert lents["h1"].claim(OWNER, 2, "other", 0)[0]
    assert await export.write_many([(8 * PS, b"e" * PS)]) == [const.EIO]


async def test_a_written_block_with_no_readable_copy_is_an_io_error_never_zeros() -> None:
    export, _, lents, _ = await _export()
    assert await export.write_many([(0, b"a" * PS)]) == [0]
    for lent in lents.values():
        lent.drop(OWNER, INC, [DATA_AREA], [0])  # every copy gone behind the server's back
    assert await export.read_many([(0, PS)]) == [const.EIO]
    assert await export.read_many([(PS, PS)]) == [[bytes(PS)]]  # never written: zeros


def _rebuilder(fs: RemoteTier, me: LentPool) -> Rebuilder:
    peers = cast(Peers, SimpleNamespace(me="me"))
    return Rebuilder(peers, me, PS, "x", 1 << 20, fs, OWNER, INC)


def _hold(lent: LentPool, key: int, page: bytes, version: int) -> int:
    total = checksum(page)
    ok = lent.put(
        OWNER, INC, PageBatch([DATA_AREA], [key], [version], [total], [encode(page, PoolConfig())])
    )
    assert ok == [True]
    return total


def _group(nodes: tuple[str, ...], key: int, version: int, total: int) -> object:
    return (
        nodes,
        np.asarray([key], dtype=np.int64),
        np.asarray([version], dtype=np.uint64),
        np.asarray([total], dtype=np.uint64),
    )


async def test_rehome_keeps_a_copy_it_could_not_store_elsewhere() -> None:
    fs, lents, via = _cluster()
    await fs.frontswap.init(DATA_AREA)
    me = LentPool(PoolConfig(budget_bytes=16 << 20))
    page = b"k" * PS
    total = _hold(me, 5, page, BASE + 1)
    via.down |= set(lents)  # nowhere else to store it
    rebuilder = _rebuilder(fs, me)
    gone = await rebuilder.rehome(DATA_AREA, [_group(("me",), 5, BASE + 1, total)])
    assert gone == []  # not lost: the server keeps it (Export.hold) and serves it, ...
    assert rebuilder.kept_here == {DATA_AREA: {5: page}}
    held = me.get(OWNER, INC, [DATA_AREA], [5])[0]
    assert held is not None and held[0] == BASE + 1  # ... but never dropped: the only copy
    via.down.clear()
    gone = await _rebuilder(fs, me).rehome(DATA_AREA, [_group(("me",), 5, BASE + 1, total)])
    assert gone == []
    assert await fs.frontswap.load_many(DATA_AREA, [5]) == [page]
    assert me.get(OWNER, INC, [DATA_AREA], [5]) == [None]  # stored elsewhere, then dropped


async def test_rehome_never_launders_a_damaged_copy() -> None:
    fs, lents, _ = _cluster()
    await fs.frontswap.init(DATA_AREA)
    me = LentPool(PoolConfig(budget_bytes=16 << 20))
    page = bytes(random.Random(1).randbytes(PS))
    total = _hold(me, 7, page, BASE + 3)
    assert _hold(lents["h1"], 7, page, BASE + 3) == total
    me.damage_for_test(OWNER, DATA_AREA, 7, stale=False)
    group = _group(("h1", "me"), 7, BASE + 3, total)
    assert await _rebuilder(fs, me).rehome(DATA_AREA, [group]) == []
    # h1's good copy serves the block and is untouched; the bad one is not stored anywhere.
    assert await fs.frontswap.load_many(DATA_AREA, [7]) == [page]
    held = lents["h1"].get(OWNER, INC, [DATA_AREA], [7])[0]
    assert held is not None and held[0] == BASE + 3 and held[1] == total
    assert lents["h2"].get(OWNER, INC, [DATA_AREA], [7]) == [None]


async def test_rehome_queues_the_other_holders_older_copies_to_be_dropped() -> None:
    fs, lents, _ = _cluster(3)
    await fs.frontswap.init(DATA_AREA)
    me = LentPool(PoolConfig(budget_bytes=16 << 20))
    page = b"m" * PS
    total = _hold(me, 9, page, BASE + 4)
    _hold(lents["h3"], 9, page, BASE + 4)
    group = _group(("h3", "me"), 9, BASE + 4, total)
    assert await _rebuilder(fs, me).rehome(DATA_AREA, [group]) == []
    assert await fs.settle_drops(5.0)
    copies = [
        int(v)
        for lent in lents.values()
        for o, v in zip(*lent.inventory(OWNER, INC, DATA_AREA, 0, 64)[:2], strict=True)
        if o == 9
    ]
    # Exactly the R new copies remain: h3's old one went (unless it got a new one in place).
    assert len(copies) == 2 and min(copies) > BASE + 4, copies
    assert await fs.frontswap.load_many(DATA_AREA, [9]) == [page]
