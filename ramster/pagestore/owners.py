"""Who owns held pages, as a holder sees it, the refusals a holder answers with, its bounds,
and the small records the lent pool keeps. Pure.

Two kinds of owner: a node (its pages die with its incarnation: a newer one reclaims them) and
an export (`export:NAME`, see EXPORT_PREFIX): its pages outlive the process that serves it and
belong to the export, guarded by a term. The incarnation an export's calls carry is
`t<term>@<node>`; a holder refuses (Fenced) any call with an older term than it has seen, or
the same term from another node, so that a stale server can never change a newer one's pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ramster.pagestore.pool import PoolStatistics


def incarnation_order(incarnation: str) -> int:
    """The start time an incarnation id begins with (hex nanoseconds); 0 if it has none."""
    head = incarnation.split("-", 1)[0]
    try:
        return int(head, 16)
    except ValueError:
        return 0


EXPORT_PREFIX = "export:"
"""Owners named so are exports, not nodes."""
TERM_SHIFT = 40
"""An export's versions of term T start at T << TERM_SHIFT: a newer term's writes are newer."""
MAX_EXPORT_TERM = (1 << (63 - TERM_SHIFT)) - 1
"""The highest term an export may take: its versions stay below 2^63."""
MAX_TERM_JUMP = 1 << 16
"""How far above the newest term a holder knows one claim may go (a wild term would end the
export's life at once)."""
MAX_EXPORTS = 1024
"""Exports one holder keeps pages or terms for: bounded against a flood of made-up names."""
INVENTORY_LIMIT = 65536
"""Keys one inventory answer carries at most (about 1.3 MiB on the wire)."""


def is_export(owner: str) -> bool:
    """Is this owner an export (whose pages outlive the process serving it)?"""
    return owner.startswith(EXPORT_PREFIX)


def export_incarnation(term: int, node: str) -> str:
    """What an export's server puts where a node puts its incarnation."""
    return f"t{term}@{node}"


def parse_export_incarnation(incarnation: str) -> tuple[int, str]:
    """(term, serving node) of an export incarnation; ValueError if it is none."""
    head, sep, node = incarnation.partition("@")
    if not sep or not node or not head.startswith("t") or not head[1:].isdigit():
        raise ValueError(f"not an export incarnation (t<term>@<node>): {incarnation!r}")
    return int(head[1:]), node


@dataclass(frozen=True, slots=True)
class ExportClaim:
    """What a holder knows of an export: the newest term and its server, the size."""

    term: int
    node: str
    size: int


class Fenced(Exception):
    """A call for an export from an older term (or the same term from another server) than
    this holder has seen: the caller no longer serves that export."""

    def __init__(self, owner: str, claim: ExportClaim) -> None:
        super().__init__(
            f"{owner} is served under term {claim.term} by {claim.node}: older terms are fenced"
        )
        self.claim = claim


class TooManyExports(Exception):
    """This holder keeps MAX_EXPORTS exports already."""


class StaleIncarnation(Exception):
    """A request from an incarnation older than the one this holder knows for that owner (or,
    for a copy, any incarnation but the current one: only an owner advances its own)."""


class TooManyOwners(Exception):
    """This holder keeps MAX_OWNERS owners with pages already."""


class LiveTwin(Exception):
    """A newer incarnation of an owner spoke while the older one is still heard from: two
    processes run under one node id. The older one keeps its pages; the newer is refused."""


class Reclaimed(Exception):
    """This owner incarnation's pages were reclaimed (it was silent past the owner grace), and
    it has not said hello since: it must learn that its copies here are gone."""


MAX_REMEMBERED = 4096
"""Owners whose reclaims a holder remembers (epochs and markers): bounded against a flood."""
FORGETS_PER_PASS = 8
"""Owners (or exports) one pass of the reclaim loop forgets at most; the rest wait a pass."""
MAX_OWNERS = 4096
"""Owners a holder knows at once; past it, one without pages here is forgotten to make room."""
MAX_FLOORS = 65536
"""Area drops a holder remembers (each refuses late copies older than the drop)."""
RECLAIM_STEP_PAGES = 4096
"""Pages a forgotten owner's reclaim frees per step: each step is a short pause of the loop."""


@dataclass(frozen=True, slots=True)
class LentStatistics:
    """What this node holds for others."""

    pool: PoolStatistics
    owners: int
    areas: int
    reclaimed_pages: int
    stale_requests: int
    twins_refused: int
    reclaim_pending_pages: int
    """Pages of forgotten owners not yet freed (freed a step at a time)."""
    exports: int = 0
    fenced_requests: int = 0
    """Export calls refused for an older term (a stale server fenced)."""
    newer_held: int = 0
    """Pages refused because this holder keeps a newer version of the key (or dropped the
    key's area at a newer one): a late copy never replaces a newer one."""
    unordered_copies: int = 0
    """Copies forwarded by another holder that their owner had not ordered here (hold.expect)."""


def keyed_incarnation(owner: str, incarnation: str) -> str:
    """The incarnation part of a page's key: an export's pages outlive its terms."""
    return "" if is_export(owner) else incarnation


@dataclass(slots=True)
class AreaSweep:
    """An area drop freeing its pages no newer than `floor`, a leaf at a time."""

    key: tuple[str, str, int]
    ident: int
    floor: int
    leaves: list[int]
    """First offsets of the leaves left to sweep, the next one last."""


def by_area(areas: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Indices grouped by area, in first-seen order."""
    if len(areas) and areas.count(areas[0]) == len(areas):
        return [(areas[0], list(range(len(areas))))]
    arr = np.asarray(areas)
    return [(int(a), np.flatnonzero(arr == a).tolist()) for a in dict.fromkeys(areas)]
