"""A manifest page's two slots: an update goes to the slot without the last stored state, a
refused one keeps that state, and a rebuild takes each page's newest slot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from ramster.nbd import manifest
from ramster.nbd.manifest_store import ManifestStore
from ramster.nbd.pagemap import PageMap

S = manifest.SLOT_STRIDE


def test_the_newest_slot_of_each_page_wins_and_stray_keys_are_ignored() -> None:
    keys = np.array([0, S, 1, 2 + S, 3 * S, -1], dtype=np.int64)
    versions = np.array([5, 9, 7, 3, 99, 99], dtype=np.uint64)
    numbers, chosen, at = manifest.newest_slots(keys, versions)
    assert numbers.tolist() == [0, 1, 2]
    assert chosen.tolist() == [S, 1, 2 + S]
    assert at.tolist() == [1, 2, 3]
    # A manifest from before slots (slot 0 only) reads as it is.
    numbers, chosen, _ = manifest.newest_slots(np.array([0, 1]), np.array([1, 2], np.uint64))
    assert numbers.tolist() == chosen.tolist() == [0, 1]
    empty = manifest.newest_slots(np.zeros(0, np.int64), np.zeros(0, np.uint64))
    assert [len(a) for a in empty] == [0, 0, 0]


@pytest.mark.asyncio
async def test_updates_alternate_slots_and_a_refused_one_is_tried_in_the_same_slot() -> None:
    stored: list[list[int]] = []
    refuse = False

    async def store_many(area: int, keys: Sequence[int], pages: Sequence[bytes]) -> list[bool]:
        stored.append(list(keys))
        return [not refuse] * len(keys)

    pages = PageMap()
    store = ManifestStore("x", 1, store_many)
    store.stored_in({0: 1})  # a rebuild found page 0's state in slot 1
    store.mark([0, 2])
    assert await store.persist(pages)
    assert stored[-1] == [0, 2 + S]  # each into the slot that does not hold its state
    refuse = True
    store.mark([0])
    assert not await store.persist(pages)
    assert store.failures == 1
    assert store.pending()  # still to store
    assert stored[-1] == [S]  # slot 0 holds the last stored state: never overwritten
    refuse = False
    assert await store.persist(pages)
    assert stored[-1] == [S]
    assert not store.pending()
    store.mark([0])
    assert await store.persist(pages)
    assert stored[-1] == [0]
