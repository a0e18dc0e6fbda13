"""A rebuild that finds a block's copy newer than the manifest page covering it, the block not
marked: that page's update was lost (its only holder died), so the block reads as an I/O error,
never as zeros or older bytes (the simulation's seed 5 with --exports: a write acknowledged with
one copy of its block and of its manifest page; the page's holder crashed, the block was
repaired from the server's cache, and the next server read the block as zeros)."""

from __future__ import annotations

import numpy as np

from ramster.frontswap.remote.rebuild import Rebuilt
from ramster.nbd.manifest import PAGE_BITS
from ramster.node.export_rebuild import newer_than_manifest

T = 1 << 40


def _rebuilt(keys: list[int], versions: list[int]) -> Rebuilt:
    out = Rebuilt()
    out.groups.append(
        (
            ("h",),
            np.array(keys, np.int64),
            np.array(versions, np.uint64),
            np.zeros(len(keys), np.uint64),
        )
    )
    return out


def test_a_block_newer_than_its_unmarking_manifest_page_is_unknown() -> None:
    meta = _rebuilt([0, 1], [T + 0x15, T + 0x30])  # manifest pages 0 and 1
    second = 1 << PAGE_BITS  # the first block of page 1
    data = _rebuilt(
        [3, 12, 20, second, second + 1],
        [T + 0x10, T + 0x16, T + 0x40, T + 0x20, T + 0x31],
    )
    marked = np.array([3, 20, second], np.int64)  # what the pages say was written
    # 12: newer than page 0 and not marked (the page that marked it was lost);
    # second + 1: newer than page 1 and not marked. 20 is marked (an overwrite changes no
    # page); 3 is older than its page (an earlier write the page marks).
    got = newer_than_manifest(data, meta, marked)
    assert got.tolist() == [12, second + 1]


def test_a_block_older_than_its_unmarking_page_was_trimmed() -> None:
    meta = _rebuilt([0], [T + 0x20])  # the trim stored the page after the block's write
    data = _rebuilt([5], [T + 0x10])
    assert newer_than_manifest(data, meta, np.zeros(0, np.int64)).tolist() == []


def test_pages_not_heard_are_left_to_the_caller() -> None:
    meta = _rebuilt([0], [T + 0x20])
    data = _rebuilt([(1 << PAGE_BITS) + 2], [T + 0x30])
    assert newer_than_manifest(data, meta, np.zeros(0, np.int64)).tolist() == []
