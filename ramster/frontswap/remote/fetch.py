"""Remote loads: a page's holders are asked one after another, and a copy is used only if its
version is the owner's and it expands to the owner's checksum."""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ramster.errors import PagesReclaimed, PageUnavailable, RamsterError
from ramster.frontswap.remote.holders import SetMember, Tier, run_all
from ramster.pagestore import checksum, expand
from ramster.rpc.pages import Keys
from ramster.types import Buffer, NodeId

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
LATENCY_SAMPLES = 8192
"""Remote fetch latencies kept for percentiles: the recent past, bounded."""
Entry = tuple[int, int, int, int]
"""(index into the batch, version, checksum, holder set) of a page held remotely only."""
Wanted = tuple[int, int, int]
"""(index, version, checksum) of a page to fetch."""


def _rotated(nodes: tuple[SetMember, ...], first: int) -> tuple[SetMember, ...]:
    return nodes[first:] + nodes[:first]


RANK = {"alive": 0, "suspect": 1, "unknown": 1, "dead": 2}
"""Holders are asked live ones first; a suspect or dead one only when the others failed."""


class Fetcher:
    """Reads verified copies of remote pages from their holders."""

    def __init__(self, tier: Tier) -> None:
        self._t = tier
        self.latency_us: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    async def fetch(
        self,
        area: int,
        offs: I64,
        entries: list[Entry],
        verify: bool = True,
        partial: bool = False,
    ) -> dict[int, Buffer]:
        """Pages of the entries from their holders, each verified; PageUnavailable if none is
        (unless `partial`, for ephemeral pages: then a page without a good copy is a miss, and
        a dead holder is not even asked).

        With verify=False only the version is checked and the stored form is returned, for a
        caller that checks the checksum itself (and comes back with verify=True if it fails).
        """
        sets = self._t.sets
        # Spread reads over every holder of a set (by offset), so that they work in parallel;
        # each key still falls back on the other holders in turn.
        groups: dict[tuple[int, int], list[Wanted]] = defaultdict(list)
        keyed = offs.tolist()
        for i, version, sum_, set_id in entries:
            groups[(set_id, keyed[i] % len(sets[set_id]))].append((i, version, sum_))
        out: dict[int, Buffer] = {}
        state = self._t.holders.state_of
        results = await run_all(
            self.fetch_group(
                area,
                offs,
                tuple(
                    n
                    for n in self.order(_rotated(sets[s], first))
                    if not partial or state(n) != "dead"
                ),
                g,
                verify,
                partial=partial,
            )
            for (s, first), g in groups.items()
        )
        for part in results:
            out.update(part)
        return out

    def order(self, nodes: Sequence[SetMember]) -> tuple[NodeId, ...]:
        """The holders to ask, live ones first (stable: the spread by offset stays); never
        a tombstone (an incarnation whose copies are gone)."""
        state = self._t.holders.state_of
        holder = self._t.sets.holder
        alive = [h for h in map(holder, nodes) if h is not None]
        return tuple(sorted(alive, key=lambda n: RANK.get(state(n), 1)))

    async def fetch_group(
        self,
        area: int,
        offs: I64,
        nodes: tuple[NodeId, ...],
        wanted: list[Wanted],
        verify: bool,
        want_stored: bool = False,
        partial: bool = False,
    ) -> dict[int, Buffer]:
        """Good copies by index into `wanted`; PageUnavailable if any is missing (unless
        `partial`: then the missing ones are just absent)."""
        t = self._t
        c = t.counters
        ps = t.page_size
        out: dict[int, Buffer] = {}
        left = wanted
        keyed = offs.tolist()  # plain ints: a numpy scalar costs ~100 ns per access
        tried: list[str] = []  # per holder asked, why it gave no good copy of what was left
        for node in nodes:
            if not left:
                break
            keys = [keyed[i] for i, _, _ in left]
            started = time.perf_counter()
            try:
                got = await t.holders.get(node, Keys([area] * len(keys), keys))
                self.latency_us.append((time.perf_counter() - started) * 1e6)
            except PagesReclaimed as exc:
                t.reclaimed(node, exc.epoch)
                tried.append(f"{node} (reclaimed them)")
                continue
            except RamsterError as exc:
                tried.append(f"{node} (unreachable: {type(exc).__name__})")
                c["remote_unreachable"] += 1
                t.log.info(
                    ("unreachable", node),
                    "holder %s unreachable for %d pages: %s",
                    node,
                    len(keys),
                    exc,
                )
                continue
            still = []
            bad = 0
            for (i, version, sum_), item in zip(left, got, strict=True):
                if item is not None and item[0] == version:
                    if not verify:
                        out[i] = item[2]  # a view into the holder's reply: no copy
                        continue
                    page = expand(item[2], ps)
                    if checksum(page) == sum_:
                        out[i] = item[2] if want_stored else page
                        continue
                if item is not None:
                    bad += 1
                    c["remote_bad_copies"] += 1
                    t.log.warning(
                        ("bad copy", node),
                        "holder %s returned a stale or corrupt copy of area %d offset %d",
                        node,
                        area,
                        int(offs[i]),
                    )
                still.append((i, version, sum_))
            if still:
                tried.append(f"{node} ({len(still) - bad} not held, {bad} stale or corrupt)")
            left = still
        c["remote_loads"] += len(out)
        if left and not partial:
            c["remote_unavailable"] += len(left)
            i = left[0][0]
            raise PageUnavailable(
                f"{len(left)} page(s) of area {area} (first offset {int(offs[i])}) have no good "
                f"copy on their holders: {', '.join(tried) or 'none asked'}",
                area=area,
                offset=int(offs[i]),
            )
        return out

    def percentiles(self) -> dict[str, float]:
        """fetch_p50_us and fetch_p99_us of the recent fetches (0 without any)."""
        samples = sorted(self.latency_us)
        return {
            name: round(samples[min(len(samples) - 1, int(q * len(samples)))], 1)
            if samples
            else 0.0
            for name, q in (("fetch_p50_us", 0.50), ("fetch_p99_us", 0.99))
        }
