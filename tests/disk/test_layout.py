"""The disk record format and the extent allocator, against simple models (no I/O)."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ramster.disk.layout import (
    BLOCK,
    HEADER_SIZE,
    ExtentAllocator,
    check_key,
    decode_record,
    encode_record,
    record_blocks,
    tail_records,
)
from ramster.errors import InvalidPage
from ramster.pagestore import PoolConfig, checksum, encode
from ramster.testing import corpus

KEYS = st.tuples(
    st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1)
)


@given(KEYS, st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1), st.binary(max_size=5000))
def test_a_record_opens_to_what_was_sealed(
    key: tuple[int, int, int], version: int, check: int, payload: bytes
) -> None:
    data = encode_record(key, version, check, payload)
    assert len(data) == record_blocks(len(payload)) * BLOCK
    assert len(data) - BLOCK < HEADER_SIZE + len(payload) <= len(data)
    record = decode_record(data)
    assert record is not None
    assert (record.key, record.version, record.checksum, record.payload) == (
        key,
        version,
        check,
        payload,
    )


def test_a_record_carries_the_pools_page_checksum() -> None:
    page = corpus.pages(1, seed=3)[0]
    stored = encode(page, PoolConfig())
    record = decode_record(encode_record((1, 2, 3), 7, checksum(page), stored))
    assert record is not None
    assert record.checksum == checksum(page)
    assert record.payload == stored


def test_every_flipped_byte_of_header_or_payload_fails_the_seal() -> None:
    payload = os.urandom(300)
    data = bytearray(encode_record((9, 1, 42), 5, 77, payload))
    for at in range(HEADER_SIZE + len(payload)):
        data[at] ^= 0x01
        assert decode_record(bytes(data)) is None, at
        data[at] ^= 0x01
    assert decode_record(bytes(data)) is not None


def test_a_short_or_foreign_buffer_is_no_record() -> None:
    data = encode_record((1, 1, 1), 1, 1, b"x" * 600)
    for cut in (0, 10, HEADER_SIZE, HEADER_SIZE + 599):
        assert decode_record(data[:cut]) is None
    assert decode_record(bytes(2 * BLOCK)) is None


def test_keys_outside_the_header_are_refused() -> None:
    check_key((0, 0, 0))
    for bad in ((-1, 0, 0), (0, 1 << 32, 0), (0, 0, 1 << 64)):
        with pytest.raises(InvalidPage):
            check_key(bad)


def _runs(used: list[bool]) -> list[tuple[int, int]]:
    """The model's maximal free runs."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, u in enumerate([*used, True]):
        if not u and start is None:
            start = i
        elif u and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**32))
def test_allocator_against_a_block_model(total: int, seed: int) -> None:
    rng = random.Random(seed)
    alloc = ExtentAllocator(total)
    used = [False] * total
    live: list[tuple[int, int]] = []
    for _ in range(300):
        if live and rng.random() < 0.45:
            start, n = live.pop(rng.randrange(len(live)))
            alloc.free(start, n)
            assert all(used[start : start + n])
            used[start : start + n] = [False] * n
        else:
            n = rng.choice([1, 1, 2, 3, 5, 9, rng.randint(1, 80)])
            below = rng.randrange(total + 1) if rng.random() < 0.2 else None
            fits = [s for s, length in _runs(used) if length >= n and (below is None or s < below)]
            start = alloc.alloc(n, below=below)
            if not fits:
                assert start == -1
                continue
            assert start >= 0, "a free run fits but none was found"
            if below is not None:
                assert start == min(fits)
            assert start + n <= total
            assert not any(used[start : start + n]), "double allocation"
            used[start : start + n] = [True] * n
            live.append((start, n))
        runs = _runs(used)
        assert list(alloc.free_extents()) == runs, "free runs are not coalesced"
        stats = alloc.statistics()
        assert stats.used_blocks == sum(used)
        assert stats.used_blocks + stats.free_blocks == total
        assert stats.free_extents == len(runs)
        assert stats.largest_free_blocks == max((n for _, n in runs), default=0)
        assert 0.0 <= stats.fragmentation < 1.0


def test_allocator_refuses_bad_frees() -> None:
    alloc = ExtentAllocator(64)
    a = alloc.alloc(8)
    with pytest.raises(ValueError, match="double free"):
        alloc.free(a + 8, 4)
    alloc.free(a, 8)
    with pytest.raises(ValueError, match="double free"):
        alloc.free(a, 8)
    for start, n in ((-1, 2), (60, 8), (3, 0)):
        with pytest.raises(ValueError, match="bad extent"):
            alloc.free(start, n)
    assert alloc.statistics().free_blocks == 64


def test_tail_records_walk_down_from_the_end() -> None:
    alloc = ExtentAllocator(100)
    records: dict[int, int] = {}  # end -> start
    for n in (3, 4, 5, 6, 7, 8, 9):
        s = alloc.alloc(n)
        records[s + n] = s
    # Holes low down (the 3- and 5-block records go); the top five records remain.
    for end in (3, 12):
        start = records.pop(end)
        alloc.free(start, end - start)
    got = tail_records(alloc, records.get, 17)
    assert got == [(33, 9), (25, 8)]
    assert tail_records(alloc, records.get, 1) == [(33, 9)], "at least one record"
    assert sum(n for _, n in tail_records(alloc, records.get, 1000)) == 4 + 6 + 7 + 8 + 9
