"""A replicated area (an export's frontswap): acknowledged only on remote copies, overwrites in
place on the same holders (no older copy lingers), refused when no holder can take it."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.pagestore import PoolConfig
from ramster.pagestore.lent import LentPool
from ramster.testing.inproc import InProcessHolders

pytestmark = pytest.mark.asyncio
INC = "t1@me"


def _area(holders: int = 4) -> tuple[RemoteTier, dict[str, LentPool], InProcessHolders]:
    lents = {f"h{i}": LentPool(PoolConfig(budget_bytes=16 << 20)) for i in range(holders)}
    via = InProcessHolders("export:x", INC, lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=8 << 20),
        via,
        SpillConfig(replicas=2),
        max_areas=2,
        rng=random.Random(3),
        replicated=True,
        version_base=1 << 40,
    )
    return fs, lents, via


def _copies(lents: dict[str, LentPool], key: int) -> list[tuple[str, int]]:
    out = []
    for node, lent in lents.items():
        offs, vers, _ = lent.inventory("export:x", INC, 0, 0, 1 << 20)
        out += [(node, int(v)) for o, v in zip(offs, vers, strict=True) if o == key]
    return out


async def test_nothing_is_kept_locally_and_overwrites_stay_in_place() -> None:
    fs, lents, _ = _area()
    await fs.frontswap.init(0)
    rng = np.random.default_rng(1)
    for round_ in range(30):
        keys = sorted({int(k) for k in rng.integers(0, 64, 16)})
        pages = [bytes([round_ + 1]) * 4096 for _ in keys]
        assert await fs.frontswap.store_many(0, keys, pages) == [True] * len(keys)
    assert fs.pool.statistics().stored_pages == 0  # the pool keeps only the index
    for key in range(64):
        copies = _copies(lents, key)
        if not copies:
            continue
        # Exactly two copies, both of the newest version: no older one lingers anywhere.
        assert len(copies) == 2 and len({v for _, v in copies}) == 1, copies
        assert min(v for _, v in copies) > 1 << 40
    got = await fs.frontswap.load_many(0, list(range(64)))
    assert all(page is None or len(page) == 4096 for page in got)


async def test_an_overwrite_moves_only_when_a_holder_of_it_is_gone() -> None:
    fs, lents, via = _area()
    await fs.frontswap.init(0)
    assert await fs.frontswap.store_many(0, [5], [b"a" * 4096]) == [True]
    (first, _), _ = _copies(lents, 5)
    via.down.add(first)
    assert await fs.frontswap.store_many(0, [5], [b"b" * 4096]) == [True]
    assert await fs.frontswap.load_many(0, [5]) == [b"b" * 4096]
    copies = _copies(lents, 5)
    newest = max(v for _, v in copies)
    assert first not in {n for n, v in copies if v == newest}
    assert {n for n, v in copies if v < newest} <= {first}  # the old one, on the down holder
    assert fs.orphans_pending() > 0  # ... is queued to be dropped when it answers


async def test_with_no_holder_a_store_is_refused_and_the_old_page_is_gone() -> None:
    fs, _, via = _area()
    await fs.frontswap.init(0)
    assert await fs.frontswap.store_many(0, [1], [b"a" * 4096]) == [True]
    via.down.update(via.lents)
    assert await fs.frontswap.store_many(0, [1], [b"b" * 4096]) == [False]
    assert fs.pool.versions(0, [1]) == [None]  # no stale page left to read


async def test_the_read_cache_never_returns_an_old_version() -> None:
    lents = {f"h{i}": LentPool(PoolConfig(budget_bytes=64 << 20)) for i in range(3)}
    via = InProcessHolders("export:x", INC, lents)
    fs = RemoteTier(
        PoolConfig(budget_bytes=8 << 20),
        via,
        SpillConfig(replicas=2),
        max_areas=2,
        replicated=True,
        cache_bytes=256 << 10,  # a few dozen pages: eviction is exercised
    )
    await fs.frontswap.init(0)
    rng = np.random.default_rng(5)
    model: dict[int, bytes] = {}
    for round_ in range(40):
        keys = sorted({int(k) for k in rng.integers(0, 1000, 64)})
        pages = [rng.bytes(1024) * 4 for _ in keys]
        assert await fs.frontswap.store_many(0, keys, pages) == [True] * len(keys)
        model.update(zip(keys, pages, strict=True))
        if round_ % 3 == 0:
            gone = keys[:4]
            await fs.frontswap.invalidate_many(0, gone)
            for key in gone:
                model.pop(key)
        probe = sorted({int(k) for k in rng.integers(0, 1000, 64)})
        assert await fs.frontswap.load_many(0, probe) == [model.get(k) for k in probe]
    stats = fs.remote_statistics()
    assert stats["cache_hits"] > 0 and stats["cache_evicted"] > 0
    assert stats["cache_bytes"] <= 256 << 10
