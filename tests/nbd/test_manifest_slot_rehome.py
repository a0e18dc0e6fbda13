"""A takeover by a node that holds a manifest page's older slot must not store it again (a
rehome gives it a version of the new term, above the newest slot), or the next takeover takes
it for the page's state and loses acknowledged writes, overwrites and trims (review of the
slots, finding 1; simulation seed 155). The rebuild keeps only each page's newest slot."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from ramster.cluster.peers import Peers
from ramster.nbd import manifest
from ramster.nbd.export import Export
from ramster.node.export_rebuild import DATA_AREA, MANIFEST_AREA, Rebuilder
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from tests.nbd.test_export_safety import Holders
from tests.nbd.test_export_uncertain import OWNER, PS, SIZE, X, _created, _server, _take_over

pytestmark = pytest.mark.asyncio
S = manifest.SLOT_STRIDE


def _has(lents: dict[str, LentPool], inc: str, area: int, key: int) -> list[str]:
    return [h for h, p in lents.items() if p.get(OWNER, inc, [area], [key])[0] is not None]


async def _take_over_on(lents: dict[str, LentPool], me: str, term: int) -> Export:
    """A takeover by holder `me` itself (as node.exports does when a holder serves next):
    its own lent pool is the Rebuilder's, the other holders are the server's holders."""
    inc = f"t{term}@{me}"
    for lent in lents.values():
        assert lent.claim(OWNER, term, me, SIZE)[0]
    others = {h: p for h, p in lents.items() if h != me}
    export, fs = _server(others, inc, term, Holders(OWNER, inc, others))
    await export.open_areas()

    async def inventory(node: str, identity: object, area: int, start: int, limit: int) -> object:
        return lents[node].inventory(OWNER, inc, area, start, limit)

    peers = cast(Peers, SimpleNamespace(me=me, calls=SimpleNamespace(inventory=inventory)))
    rb = Rebuilder(peers, lents[me], PS, "x", SIZE, fs, OWNER, inc)
    heard = await rb.inventories(sorted(others))
    _, written, lost, unstored = await rb.rebuild(heard, new=False)
    export.restore_index(written, lost, rb.manifest_slots)
    export.hold(rb.kept_here.get(DATA_AREA, {}))
    export.mark_manifest(unstored)
    await rb.settle_uncertain(export)
    assert await fs.settle_drops()
    return export


async def test_a_takeover_by_the_holder_of_an_old_slot_keeps_acknowledged_writes() -> None:
    lents = {h: LentPool(PoolConfig(budget_bytes=16 << 20)) for h in ("h1", "h2", "h3")}
    via = Holders(OWNER, "t1@n0", lents)
    export, _ = await _created(lents, via)
    slot0 = _has(lents, "t1@n0", MANIFEST_AREA, 0)  # the blank page 0
    assert len(slot0) == 2
    # One holder of the blank slot 0 is away while X is first written: slot 1 (X marked)
    # goes to the two others. (Without `down`, placement alone does this often.)
    via.down.add(slot0[0])
    assert await export.write_many([(X * PS, b"acked" + bytes(PS - 5))]) == [0]
    via.down.clear()
    slot1 = _has(lents, "t1@n0", MANIFEST_AREA, S)
    me = next(h for h in slot0 if h not in slot1)
    # Term 2 on `me` (holds the blank slot 0 only): it reads X fine, writes nothing new.
    export2 = await _take_over_on(lents, me, 2)
    assert await export2.read_many([(X * PS, PS)]) == [[b"acked" + bytes(PS - 5)]]
    # Term 3 elsewhere (a restart or a move): X was acknowledged and never changed since.
    export3, _ = await _take_over(lents, "n9", 3)
    assert await export3.read_many([(X * PS, PS)]) == [[b"acked" + bytes(PS - 5)]], (
        "an acknowledged block reads as zeros: the rehomed old slot 0 won"
    )


async def test_a_takeover_by_a_holder_of_both_slots_keeps_acknowledged_writes() -> None:
    """No holder away at the takeover: the new server holds both slots of page 0 (in one
    group); rehome stores them again in key order, slot 0 then slot 1, so slot 1 (the older
    state here: two updates went to slot 1, then slot 0) gets the newer version."""
    lents = {h: LentPool(PoolConfig(budget_bytes=16 << 20)) for h in ("h1", "h2", "h3")}
    via = Holders(OWNER, "t1@n0", lents)
    via.down.add("h3")  # term 1 stores everything on h1 and h2
    export, _ = await _created(lents, via)
    Y = X + 1
    assert await export.write_many([(X * PS, b"X" * PS)]) == [0]  # page 0 -> slot 1
    assert await export.write_many([(Y * PS, b"Y" * PS)]) == [0]  # page 0 -> slot 0
    assert sorted(_has(lents, "t1@n0", MANIFEST_AREA, 0)) == ["h1", "h2"]
    assert sorted(_has(lents, "t1@n0", MANIFEST_AREA, S)) == ["h1", "h2"]
    via.down.clear()
    export2 = await _take_over_on(lents, "h1", 2)  # rehomes both slots to h2, h3
    assert await export2.read_many([(Y * PS, PS)]) == [[b"Y" * PS]]
    export3, _ = await _take_over(lents, "n9", 3)
    assert await export3.read_many([(Y * PS, PS)]) == [[b"Y" * PS]], (
        "an acknowledged block reads as zeros: the rehomed older slot 1 won"
    )


async def test_an_overwrite_after_a_takeover_by_a_holder_of_both_slots_survives() -> None:
    """As above, but term 2 overwrites Y (already marked: no manifest update): term 3 finds
    Y's copy newer than the (wrongly) chosen slot that does not mark it -> EIO."""
    lents = {h: LentPool(PoolConfig(budget_bytes=16 << 20)) for h in ("h1", "h2", "h3")}
    via = Holders(OWNER, "t1@n0", lents)
    via.down.add("h3")
    export, _ = await _created(lents, via)
    Y = X + 1
    assert await export.write_many([(X * PS, b"X" * PS)]) == [0]
    assert await export.write_many([(Y * PS, b"Y" * PS)]) == [0]
    via.down.clear()
    export2 = await _take_over_on(lents, "h1", 2)
    assert await export2.write_many([(Y * PS, b"Z" * PS)]) == [0]  # acknowledged
    export3, _ = await _take_over(lents, "n9", 3)
    assert await export3.read_many([(Y * PS, PS)]) == [[b"Z" * PS]], (
        "an acknowledged overwrite reads as an I/O error after the next takeover"
    )


async def test_a_trim_before_a_takeover_by_a_holder_of_both_slots_stays_a_trim() -> None:
    """The stale state marks a block trimmed (acknowledged) since: term 3 finds it marked
    with no copy and reads it as an I/O error instead of zeros."""
    lents = {h: LentPool(PoolConfig(budget_bytes=16 << 20)) for h in ("h1", "h2", "h3")}
    via = Holders(OWNER, "t1@n0", lents)
    via.down.add("h3")
    export, fs = await _created(lents, via)
    assert await export.write_many([(X * PS, b"X" * PS)]) == [0]  # slot 1: {X}
    assert await export.trim(X * PS, PS) == 0  # slot 0: {} (acknowledged)
    assert await fs.settle_drops()
    via.down.clear()
    export2 = await _take_over_on(lents, "h1", 2)
    assert await export2.read_many([(X * PS, PS)]) == [[bytes(PS)]]
    export3, _ = await _take_over(lents, "n9", 3)
    assert await export3.read_many([(X * PS, PS)]) == [[bytes(PS)]], (
        "an acknowledged trim reads as an I/O error after the next takeover"
    )
