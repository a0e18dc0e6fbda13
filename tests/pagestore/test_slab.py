"""The slab allocator: objects round-trip, empty slabs go back to the OS, compaction is exact."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from ramster.pagestore.slab import OS_PAGE, SlabAllocator


def test_alloc_view_free_round_trip() -> None:
    a = SlabAllocator(4096, 32)
    blobs = {i: os.urandom(1 + (i * 37) % 4096) for i in range(500)}
    handles = {i: a.alloc(b, owner=i) for i, b in blobs.items()}
    for i, h in handles.items():
        assert bytes(a.view(h, len(blobs[i]))) == blobs[i]
    assert a.statistics().objects == 500
    for h in handles.values():
        a.free(h)
    st = a.statistics()
    assert st.objects == 0
    assert st.slabs == 0
    assert st.resident_bytes == 0
    assert a.resident_bytes == 0


def test_class_sizes_and_costs() -> None:
    a = SlabAllocator(4096, 32)
    assert a.class_size(1) == 32
    assert a.class_size(32) == 32
    assert a.class_size(33) == 64
    assert a.class_size(4096) == 4096
    assert a.alloc(b"x" * 100, owner=1, limit=100) == -1  # a first page costs 4 KiB
    assert a.resident_bytes == 0
    h = a.alloc(b"x" * 100, owner=1)
    used = a.resident_bytes
    assert a.alloc(b"y" * 100, owner=2, limit=used) >= 0  # fits in the page already touched
    a.free(h)


def test_freed_slots_are_reused_before_new_pages() -> None:
    a = SlabAllocator(4096, 32)
    hs = [a.alloc(b"a" * 1000, owner=i) for i in range(50)]
    resident = a.resident_bytes
    for h in hs[::2]:
        a.free(h)
    for i in range(25):
        a.alloc(b"b" * 1000, owner=100 + i)
    assert a.resident_bytes == resident


def test_compaction_moves_objects_and_releases_slabs() -> None:
    a = SlabAllocator(4096, 32)
    blobs = [os.urandom(700) for _ in range(2000)]
    handles = [a.alloc(b, owner=i) for i, b in enumerate(blobs)]
    # Free 3 of every 4 objects, spread over every slab: nothing empties by itself.
    keep = {i for i in range(len(blobs)) if i % 4 == 0}
    for i, h in enumerate(handles):
        if i not in keep:
            a.free(h)
    before = a.statistics()
    assert before.slabs > 0
    moves = a.compact()
    assert moves
    for owner, new_handle in moves:
        handles[owner] = new_handle
    after = a.statistics()
    assert after.objects == len(keep)
    assert after.slabs < before.slabs
    assert after.resident_bytes < before.resident_bytes
    assert a.fragmented_bytes() < after.resident_bytes // 2 + OS_PAGE * 8
    for i in keep:
        assert bytes(a.view(handles[i], 700)) == blobs[i]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 4096)), min_size=1, max_size=400))
def test_statistics_are_running_counts_equal_to_a_full_scan(ops: list[tuple[bool, int]]) -> None:
    # /metrics reads these on every scrape: they must be kept, not recomputed over the slabs.
    alloc = SlabAllocator(4096, 32)
    handles: dict[int, int] = {}  # owner -> handle
    for i, (free, size) in enumerate(ops):
        if free and handles:
            owner = sorted(handles)[size % len(handles)]
            alloc.free(handles.pop(owner))
        else:
            handles[i] = alloc.alloc(b"x" * size, owner=i)
        if i % 50 == 49:
            handles.update(alloc.compact())
        live = [s for s in alloc.table() if s is not None]
        stats = alloc.statistics()
        assert stats.slabs == len(live)
        assert stats.bookkeeping_bytes == alloc._bookkeeping + sum(2 * len(s.free) for s in live)
