"""Rebuilding an owner's index from its holders' inventories: pure logic, no I/O.

Each holder reports (offset, version, checksum) for the keys it holds. Per key the newest
version wins; the holders of that version (with its checksum) become the key's holder set;
every other copy is stale and is to be dropped. Keys outside `wanted` (when given) are stale
too, and keys in `wanted` that no holder has are lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Inventory = tuple[I64, U64, U64]
"""(offsets, versions, checksums) one holder reported."""
MAX_HOLDERS = 63
"""Holders one rebuild merges (their set is a bit mask)."""


@dataclass(slots=True)
class Rebuilt:
    """The index a rebuild arrives at, grouped by holder set."""

    groups: list[tuple[tuple[str, ...], I64, U64, U64]] = field(default_factory=list)
    """(holders, offsets, versions, checksums): the newest copy of each key and who has it."""
    stale: dict[str, tuple[I64, U64]] = field(default_factory=dict)
    """holder -> (offsets, versions) of copies to drop (older, or no longer wanted)."""
    lost: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Wanted keys with no copy anywhere."""

    @property
    def pages(self) -> int:
        """Keys the rebuilt index holds."""
        return sum(len(g[1]) for g in self.groups)

    @property
    def newest(self) -> int:
        """The highest version among the kept keys (0 if none)."""
        return max((int(g[2].max()) for g in self.groups if len(g[2])), default=0)


def merge(inventories: Mapping[str, Inventory], wanted: I64 | None = None) -> Rebuilt:
    """The newest copy of every key over the holders' inventories (see the module)."""
    nodes = sorted(inventories)
    if len(nodes) > MAX_HOLDERS:
        raise ValueError(f"at most {MAX_HOLDERS} holders per rebuild")
    out = Rebuilt()
    parts = [(i, inventories[n]) for i, n in enumerate(nodes) if len(inventories[n][0])]
    if not parts:
        if wanted is not None:
            out.lost = np.unique(wanted).astype(np.int64)
        return out
    offs = np.concatenate([p[1][0] for p in parts]).astype(np.int64)
    vers = np.concatenate([p[1][1] for p in parts]).astype(np.uint64)
    sums = np.concatenate([p[1][2] for p in parts]).astype(np.uint64)
    who = np.concatenate([np.full(len(p[1][0]), p[0], dtype=np.int64) for p in parts])
    # Newest version first within each key; equal versions by checksum, so the choice is fixed.
    order = np.lexsort((sums, vers.max() - vers, offs))
    offs, vers, sums, who = offs[order], vers[order], sums[order], who[order]
    first = np.ones(len(offs), dtype=np.bool_)
    first[1:] = offs[1:] != offs[:-1]
    head = np.flatnonzero(first)
    key_of = np.cumsum(first) - 1  # which key each copy belongs to
    best_v, best_s = vers[head], sums[head]
    good = (vers == best_v[key_of]) & (sums == best_s[key_of])
    keys = offs[head]
    keep = np.ones(len(keys), dtype=np.bool_)
    if wanted is not None:
        keep = np.isin(keys, wanted)
        out.lost = np.setdiff1d(np.unique(wanted), keys).astype(np.int64)
    # A bit mask of the holders of each key's newest copy.
    mask = np.zeros(len(keys), dtype=np.uint64)
    np.bitwise_or.at(mask, key_of[good], np.left_shift(np.uint64(1), who[good].astype(np.uint64)))
    for m in np.unique(mask[keep]).tolist():
        sel = keep & (mask == np.uint64(m))
        holders = tuple(n for i, n in enumerate(nodes) if m >> i & 1)
        out.groups.append((holders, keys[sel], best_v[sel], best_s[sel]))
    stale = ~good | ~keep[key_of]
    for i, node in enumerate(nodes):
        sel = stale & (who == i)
        if sel.any():
            out.stale[node] = (offs[sel], vers[sel])
    return out
