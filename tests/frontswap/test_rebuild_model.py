"""A model of the rebuild: random write histories (overwrites, trims) across terms, holders
holding different versions (drops not yet delivered, copies lost); the rebuilt index must be
exactly the newest acknowledged state wherever a copy of it survives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ramster.frontswap.remote.rebuild import merge

HOLDERS = ("h0", "h1", "h2", "h3")
KEYS = 24

op = st.tuples(
    st.sampled_from(["write", "write", "write", "trim", "term"]),
    st.integers(0, KEYS - 1),
    st.sets(st.sampled_from(HOLDERS), min_size=1, max_size=2),  # where the copies went
    st.sets(st.sampled_from(HOLDERS), max_size=4),  # holders whose old copy was not dropped
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=80), st.sets(st.sampled_from(HOLDERS), max_size=2))
def test_rebuild_is_the_newest_acknowledged_state(
    ops: list[tuple[str, int, set[str], set[str]]], lost: set[str]
) -> None:
    term = 1
    seq = 0
    held: dict[str, dict[int, tuple[int, int]]] = {h: {} for h in HOLDERS}  # key -> (ver, sum)
    newest: dict[int, tuple[int, int]] = {}  # the acknowledged state (the manifest's keys)
    for kind, key, placed, lingering in ops:
        if kind == "term":
            term += 1  # a restart: versions of the new term are above every older one
            continue
        for h in HOLDERS:
            # A background drop of the old copy reached the holder, or not (yet).
            if key in held[h] and h not in lingering:
                del held[h][key]
        if kind == "trim":
            newest.pop(key, None)
            continue
        seq += 1
        version = (term << 40) + seq
        content = hash((key, version)) & 0xFFFF
        for h in placed:
            held[h][key] = (version, content)
        newest[key] = (version, content)
    inventories = {}
    for h in HOLDERS:
        if h in lost:
            continue  # the holder died with the server
        keys = sorted(held[h])
        inventories[h] = (
            np.array(keys, dtype=np.int64),
            np.array([held[h][k][0] for k in keys], dtype=np.uint64),
            np.array([held[h][k][1] for k in keys], dtype=np.uint64),
        )
    wanted = np.array(sorted(newest), dtype=np.int64)
    rebuilt = merge(inventories, wanted)
    index: dict[int, tuple[int, int, tuple[str, ...]]] = {}
    for holders, offs, vers, sums in rebuilt.groups:
        for o, v, s in zip(offs.tolist(), vers.tolist(), sums.tolist(), strict=True):
            assert o not in index, "a key in two groups"
            index[o] = (v, s, holders)
    lost_keys = set(rebuilt.lost.tolist())
    for key, (version, content) in newest.items():
        survivors = {h for h in HOLDERS if h not in lost and held[h].get(key) == (version, content)}
        if survivors:
            # Exactly the newest, and every live holder of it named (reads go there).
            assert index[key] == (version, content, tuple(sorted(survivors)))
        elif key in index:
            # The newest copies all died and an older one lingered: older, never newer or other.
            v, s, _ = index[key]
            assert v < version
        else:
            assert key in lost_keys  # never zeros for a written block
    for key in index:
        assert key in newest, "a trimmed or never-written block came back"
    assert lost_keys <= set(newest)
    # Every copy not kept is queued to be dropped, and no kept copy is.
    for h, (offs, vers) in rebuilt.stale.items():
        for o, v in zip(offs.tolist(), vers.tolist(), strict=True):
            assert held[h][o][0] == v
            assert o not in index or index[o][0] != v or h not in index[o][2]
    kept = sum(len(index[k][2]) for k in index)
    stale = sum(len(v[0]) for v in rebuilt.stale.values())
    assert kept + stale == sum(len(inv[0]) for inv in inventories.values())


def test_no_inventories_means_every_written_block_is_lost() -> None:
    rebuilt = merge({}, np.array([5, 1, 5], dtype=np.int64))
    assert rebuilt.lost.tolist() == [1, 5] and rebuilt.pages == 0
