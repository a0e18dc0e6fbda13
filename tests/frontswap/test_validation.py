"""Bad input raises a clear ValueError/TypeError and changes nothing; areas gate stores."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from ramster.errors import InvalidPage
from ramster.frontswap import LocalFrontswap
from ramster.pagestore import MAX_OFFSET, PoolConfig
from ramster.testing import corpus

PAGE = bytes(range(256)) * 16


@pytest_asyncio.fixture
async def fs() -> LocalFrontswap:
    fs = LocalFrontswap(PoolConfig(budget_bytes=8 << 20), max_areas=4)
    await fs.init(0)
    await fs.store_many(0, [0, 1, 2], corpus.pages(3, seed=11))
    return fs


def snapshot(fs: LocalFrontswap) -> object:
    return fs.statistics()


BAD_STORES: list[tuple[str, tuple[Any, ...], type[Exception], str]] = [
    ("short page", (0, 5, b"x" * 4095), ValueError, "exactly 4096 bytes"),
    ("long page", (0, 5, b"x" * 4097), ValueError, "exactly 4096 bytes"),
    ("str page", (0, 5, "x" * 4096), TypeError, "bytes-like"),
    ("none page", (0, 5, None), TypeError, "bytes-like"),
    ("negative offset", (0, -1, PAGE), ValueError, "offset -1 out of range"),
    ("huge offset", (0, MAX_OFFSET + 1, PAGE), ValueError, "out of range"),
    ("float offset", (0, 1.0, PAGE), TypeError, "offset must be an int"),
    ("bool offset", (0, True, PAGE), TypeError, "offset must be an int"),
    ("area too big", (4, 0, PAGE), ValueError, "area 4 out of range"),
    ("negative area", (-1, 0, PAGE), ValueError, "area -1 out of range"),
    ("str area", ("0", 0, PAGE), TypeError, "area must be an int"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("args", "exc", "match"), [b[1:] for b in BAD_STORES], ids=[b[0] for b in BAD_STORES]
)
async def test_bad_store_is_refused_clearly_and_changes_nothing(
    fs: LocalFrontswap, args: tuple[Any, ...], exc: type[Exception], match: str
) -> None:
    before = snapshot(fs)
    with pytest.raises(exc, match=match):
        await fs.store(*args)
    assert snapshot(fs) == before


@pytest.mark.asyncio
async def test_invalid_page_is_a_value_error(fs: LocalFrontswap) -> None:
    with pytest.raises(InvalidPage):
        await fs.store(0, 0, b"short")


@pytest.mark.asyncio
async def test_one_bad_page_in_a_batch_changes_nothing(fs: LocalFrontswap) -> None:
    before = snapshot(fs)
    with pytest.raises(ValueError, match="exactly 4096 bytes"):
        await fs.store_many(0, [0, 1, 9], [PAGE, PAGE, b"short"])
    with pytest.raises(ValueError, match="2 offsets but 1 pages"):
        await fs.store_many(0, [0, 1], [PAGE])
    with pytest.raises(TypeError, match="sequence"):
        await fs.store_many(0, 5, [PAGE])  # type: ignore[arg-type]
    assert snapshot(fs) == before
    assert await fs.load_many(0, [0, 1, 2]) == corpus.pages(3, seed=11)


@pytest.mark.asyncio
async def test_bad_loads_and_invalidations_raise(fs: LocalFrontswap) -> None:
    with pytest.raises(ValueError, match="out of range"):
        await fs.load(0, -5)
    with pytest.raises(TypeError):
        await fs.invalidate_many(0, ["a"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="area 9"):
        await fs.invalidate_area(9)
    assert await fs.load_many(0, [0, 1, 2]) == corpus.pages(3, seed=11)


@pytest.mark.asyncio
async def test_areas_gate_stores_and_invalidate_area_drops_everything(fs: LocalFrontswap) -> None:
    assert await fs.store(1, 0, PAGE) is False  # never initialised
    assert fs.statistics().reject_no_area == 1
    await fs.init(1)
    assert await fs.store(1, 0, PAGE) is True
    await fs.invalidate_area(1)
    assert await fs.load(1, 0) is None
    assert await fs.store(1, 0, PAGE) is False  # invalidated and not re-initialised
    await fs.init(1)
    assert await fs.load(1, 0) is None  # nothing stale comes back
    assert await fs.store(1, 0, PAGE) is True
    assert await fs.load(0, 2) == corpus.pages(3, seed=11)[2]


@pytest.mark.asyncio
async def test_memoryview_and_bytearray_pages_are_accepted(fs: LocalFrontswap) -> None:
    assert await fs.store(0, 10, memoryview(PAGE)) is True
    assert await fs.store(0, 11, bytearray(PAGE)) is True
    assert await fs.load_many(0, [10, 11]) == [PAGE, PAGE]


@pytest.mark.asyncio
async def test_later_duplicate_in_a_batch_wins(fs: LocalFrontswap) -> None:
    a, b = PAGE, bytes(4096)
    assert await fs.store_many(0, [20, 21, 20], [a, a, b]) == [True, True, True]
    assert await fs.load_many(0, [20, 21]) == [b, a]
    assert await fs.load_many(0, [20, 20], exclusive=True) == [b, None]


def test_max_areas_validated() -> None:
    with pytest.raises(ValueError, match="max_areas"):
        LocalFrontswap(max_areas=0)
