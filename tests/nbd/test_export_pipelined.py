"""Pipelined mutations of a replicated export: a write waiting on its holders holds up only the
writes of its own blocks; those keep their order; the manifest marks every acknowledged block
even when its page is stored by several writes at once."""

from __future__ import annotations

import asyncio

import pytest

from ramster.frontswap.remote import RemoteTier
from ramster.nbd import manifest
from ramster.nbd.export import Export
from ramster.node.export_rebuild import DATA_AREA, MANIFEST_AREA
from ramster.pagestore.lent import LentPool
from ramster.rpc.pages import PageBatch
from tests.nbd import test_export_safety as safety
from tests.nbd.test_export_safety import PS, Holders

pytestmark = pytest.mark.asyncio


class GatedHolders(Holders):
    """Puts of the gated (area, offset) keys wait until their gate opens."""

    def __init__(self, owner: str, incarnation: str, lents: dict[str, LentPool]) -> None:
        super().__init__(owner, incarnation, lents)
        self.gates: dict[tuple[int, int], asyncio.Event] = {}
        self.puts: list[tuple[int, int]] = []

    async def put(self, node: str, batch: PageBatch, ephemeral: bool = False) -> list[bool]:
        for key in zip(batch.areas, batch.offsets, strict=True):
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
        self.puts += list(zip(batch.areas, batch.offsets, strict=True))
        return await super().put(node, batch, ephemeral)


async def _export() -> tuple[Export, RemoteTier, GatedHolders]:
    export, tier, _, via = await safety._export(GatedHolders)
    assert isinstance(via, GatedHolders)
    return export, tier, via


async def test_a_write_waiting_on_its_holders_does_not_hold_up_other_blocks() -> None:
    export, _, via = await _export()
    assert await export.write_many([(0, b"a" * PS), (5 * PS, b"b" * PS)]) == [0, 0]
    via.gates[(DATA_AREA, 0)] = asyncio.Event()
    slow = asyncio.create_task(export.write_many([(0, b"c" * PS)]))
    await asyncio.sleep(0.01)
    assert not slow.done()
    # Another block is written and answered meanwhile (one lock per export waited here).
    fast = await asyncio.wait_for(export.write_many([(5 * PS, b"d" * PS)]), 1.0)
    assert fast == [0] and not slow.done()
    via.gates[(DATA_AREA, 0)].set()
    assert await slow == [0]
    assert await export.read_many([(0, PS), (5 * PS, PS)]) == [[b"c" * PS], [b"d" * PS]]


async def test_writes_of_one_block_keep_the_order_they_came_in() -> None:
    export, _, via = await _export()
    assert await export.write_many([(0, b"a" * PS)]) == [0]
    via.gates[(DATA_AREA, 0)] = asyncio.Event()
    first = asyncio.create_task(export.write_many([(0, b"1" * PS)]))
    await asyncio.sleep(0)
    second = asyncio.create_task(export.write_many([(0, b"2" * PS)]))
    trim = asyncio.create_task(export.trim(PS, PS))  # another block: not held up
    await asyncio.sleep(0.01)
    assert trim.done() and not first.done() and not second.done()
    assert via.puts.count((DATA_AREA, 0)) == 2, "the second write started before the first ended"
    via.gates[(DATA_AREA, 0)].set()
    assert await first == [0] and await second == [0]
    assert await export.read_many([(0, PS)]) == [[b"2" * PS]]


async def test_first_writes_sharing_a_manifest_page_are_all_marked() -> None:
    """Blocks 0 and 1 share manifest page 0. The first write's manifest store waits at its
    holders while the second write marks the page again: the second must not be answered on
    the strength of a manifest page stored without it."""
    export, tier, via = await _export()
    slot = manifest.slot_key(0, 1)  # a new export's blank page is in slot 0: updates go to 1
    via.gates[(MANIFEST_AREA, slot)] = asyncio.Event()
    first = asyncio.create_task(export.write_many([(0, b"a" * PS)]))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(export.write_many([(PS, b"b" * PS)]))
    await asyncio.sleep(0.01)
    assert not first.done() and not second.done()
    via.gates[(MANIFEST_AREA, slot)].set()
    assert await first == [0] and await second == [0]
    # The second update went to the other slot, 0 (the first's stands in slot 1).
    page = (await tier.frontswap.load_many(MANIFEST_AREA, [0]))[0]
    assert page is not None
    assert sorted(manifest.decode(0, page).tolist()) == [0, 1]
