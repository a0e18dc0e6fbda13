"""Forgetting copies on holders, in the background: the pages the owner's pool forgot
(overwrites, invalidations, exclusive loads), whole areas, strays of stores that did not
complete, and orphans (copies re-replicated away from a holder that was gone or leaving).

One queue per holder. Nothing in the foreground waits for a drop: a drop is queued and sent
when its holder is alive, retried while it fails, kept while the holder is away (however long:
a holder that comes back may still hold the copies, even ones it took in after reclaiming this
owner, from requests it read late), and given up only when that holder restarted (its copies
are gone) or its queue passes MAX_QUEUED (counted, logged).

Drops are versioned, so a late one never removes a newer copy: a page drop names the version it
forgets, an area drop the owner's version counter when the area was invalidated (every later
store of that area is newer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ramster.errors import PagesReclaimed, RamsterError
from ramster.frontswap.remote.holders import SetMember, Tier, run_all
from ramster.rpc.pages import Keys
from ramster.telemetry.ratelimit import LogLimiter
from ramster.types import NodeId

log = logging.getLogger(__name__)

BATCH = 4096
"""Keys per hold.drop call."""
RETRY = 0.5
"""Seconds before a holder whose drop failed is tried again."""
MAX_QUEUED = 1 << 21
"""Drops kept for one holder (16 bytes each): bounded, even for one that never returns."""


@dataclass(slots=True)
class _Queue:
    """What one holder still has to forget."""

    pages: dict[int, tuple[array[int], array[int]]] = field(default_factory=dict)
    """area -> (offsets, versions)"""
    areas: dict[int, int] = field(default_factory=dict)
    """area -> the owner's version counter when it was invalidated"""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while this holder's drops are sent: one sender per holder."""
    inflight: tuple[int, npt.NDArray[np.uint64], npt.NDArray[np.uint64]] | None = None
    """(area, offsets, versions) of the batch on its way, out of `pages` while it is."""
    landed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever no batch is on its way."""
    retry_at: float = 0.0

    def size(self) -> int:
        return sum(len(o) for o, _ in self.pages.values()) + len(self.areas)


def _reaches(
    drop_offs: npt.NDArray[np.uint64],
    drop_vers: npt.NDArray[np.uint64],
    keys: npt.NDArray[np.uint64],
    vers: npt.NDArray[np.uint64],
    *,
    exact: bool = False,
) -> npt.NDArray[np.bool_]:
    """Per queued drop: it names one of the keys at a version at least that key's (so it
    would remove the copy about to be put); `exact`: at that very version."""
    if not len(drop_offs) or not len(keys):
        return np.zeros(len(drop_offs), dtype=bool)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    at = np.searchsorted(sorted_keys, drop_offs)
    at_ok = np.minimum(at, len(sorted_keys) - 1)
    hit = sorted_keys[at_ok] == drop_offs
    put_vers = vers[order][at_ok]
    out: npt.NDArray[np.bool_] = hit & (
        (drop_vers == put_vers) if exact else (drop_vers >= put_vers)
    )
    return out


class DropQueue:
    """Versioned drops per holder, sent by `run` (a task of the owner's TaskGroup)."""

    def __init__(self, tier: Tier) -> None:
        self._t = tier
        self._q: dict[NodeId, _Queue] = {}
        self._wake = asyncio.Event()
        self._log = LogLimiter(log)

    def _queue(self, node: NodeId) -> _Queue:
        q = self._q.get(node)
        if q is None:
            q = self._q[node] = _Queue()
        return q

    # -- queueing (synchronous: callers never wait) ------------------------------------------------

    def enqueue(
        self, nodes: Sequence[SetMember], area: int, offsets: list[int], versions: list[int]
    ) -> None:
        """Have each node forget its copies of the keys, no newer than the versions."""
        if not offsets:
            return
        for member in nodes:
            node = self._t.sets.holder(member)
            if node is None:
                continue  # a tombstone: that incarnation's copies are gone already
            q = self._queue(node)
            offs, vers = q.pages.setdefault(area, (array("Q"), array("Q")))
            offs.extend(offsets)
            vers.extend(versions)
            over = len(offs) - MAX_QUEUED
            if over > 0:
                del offs[:over]
                del vers[:over]
                self._t.counters["drops_given_up"] += over
                self._log.error(
                    ("given up", node),
                    "%d drops for %s given up: its queue is full (copies may stay there until "
                    "it restarts or reclaims this owner)",
                    over,
                    node,
                )
        self._wake.set()

    def not_kept(
        self,
        nodes: Sequence[NodeId],
        area: int,
        offsets: list[int],
        versions: list[int],
        kept_by: Sequence[tuple[SetMember, ...]],
    ) -> None:
        """After a put or copy onto `nodes` that some did not keep: such a node may still hold
        an earlier stray copy of the page whose drop `before_put` withdrew (a straggler's,
        say); queue that drop again, unless this owner records the node as holding that very
        version (another call placed it there meanwhile)."""
        width = len(nodes)
        short = [i for i, kept in enumerate(kept_by) if len(kept) < width]
        if not short:
            return
        sets = self._t.sets
        held = {
            short[j]: (version, sets[set_id])
            for j, version, _, set_id in self._t.pool.remote_entries(
                area, [offsets[i] for i in short]
            )
        }
        for node in nodes:
            idx = [
                i
                for i in short
                if node not in kept_by[i]
                and not (i in held and held[i][0] == versions[i] and node in held[i][1])
            ]
            if idx:
                self.enqueue([node], area, [offsets[i] for i in idx], [versions[i] for i in idx])

    def collect(self) -> None:
        """Queue the drops the pool recorded (pages it forgot that had remote copies)."""
        drops = self._t.pool.drain_remote_drops()
        if not drops:
            return
        per_node: dict[tuple[SetMember, int], tuple[list[int], list[int]]] = {}
        sets = self._t.sets
        for set_id, area, offset, version in drops:
            for node in sets[set_id]:
                offsets, versions = per_node.setdefault((node, area), ([], []))
                offsets.append(offset)
                versions.append(version)
        for (node, area), (offsets, versions) in per_node.items():
            self.enqueue([node], area, offsets, versions)

    def enqueue_area(self, area: int, max_version: int) -> None:
        """Have every holder forget the area's pages no newer than `max_version`."""
        for node in self._t.holders.all_holders():
            q = self._queue(node)
            q.areas[area] = max(max_version, q.areas.get(area, 0))
            q.pages.pop(area, None)  # the area drop covers them
        self._wake.set()

    def _discard_if_idle(self, node: NodeId, q: _Queue) -> None:
        """Remove an emptied queue, unless its sender holds it (a batch may be on its way,
        and `before_put` must still find it there)."""
        if not q.lock.locked():
            del self._q[node]

    async def before_put(
        self, nodes: Sequence[NodeId], area: int, offsets: list[int], versions: list[int]
    ) -> None:
        """Pages about to be copied onto `nodes` must not be forgotten there by a drop queued
        earlier of their version (a drop of an older version cannot touch them): take such
        drops out of the queues. A drop of a newer version stays: the owner had that version,
        so a put of an older one is of a batch read before (a repair's), which the owner will
        not record, and the newer copy still has to go. Only if a drop that reaches the pages
        is on its way to a node right now does this wait for it to land (a slow holder's
        other drops hold nothing up)."""
        keys = np.asarray(offsets, dtype=np.uint64)
        vers = np.asarray(versions, dtype=np.uint64)
        for node in nodes:
            q = self._q.get(node)
            if q is None:
                continue
            self._withdraw(q, area, keys, vers)
            flight = q.inflight
            if (
                flight is not None
                and flight[0] == area
                and _reaches(flight[1], flight[2], keys, vers).any()
            ):
                await q.landed.wait()
                self._withdraw(q, area, keys, vers)  # a batch that failed came back

    @staticmethod
    def _withdraw(
        q: _Queue, area: int, keys: npt.NDArray[np.uint64], vers: npt.NDArray[np.uint64]
    ) -> None:
        pending = q.pages.get(area)
        if pending is None:
            return
        offs = np.frombuffer(pending[0], dtype=np.uint64)
        dvers = np.frombuffer(pending[1], dtype=np.uint64)
        keep = ~_reaches(offs, dvers, keys, vers, exact=True)
        if keep.all():
            return
        if not keep.any():
            del q.pages[area]
            return
        q.pages[area] = (array("Q", offs[keep].tobytes()), array("Q", dvers[keep].tobytes()))

    def pending(self) -> int:
        """Drops queued and not yet delivered (orphans on away holders included)."""
        return sum(q.size() for q in self._q.values())

    # -- delivery ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver queued drops until cancelled."""
        while True:
            try:
                async with asyncio.timeout(RETRY):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.deliver()

    async def deliver(self) -> int:
        """One round: every queue of a live holder, sent in batches; drops delivered."""
        self.collect()  # what the pool forgot in a call that was cancelled before it could
        now = time.monotonic()
        todo = []
        for node, q in list(self._q.items()):
            if not q.size():
                self._discard_if_idle(node, q)
                continue
            if self._t.holders.state_of(node) != "alive":
                continue  # kept until it answers again (or restarts)
            if now >= q.retry_at:
                todo.append((node, q))
        results = await run_all(self._send(node, q) for node, q in todo)
        return sum(results)

    async def _send(self, node: NodeId, q: _Queue) -> int:
        t = self._t
        sent = 0
        async with q.lock:
            try:
                for area, max_version in list(q.areas.items()):
                    await t.holders.drop_area(node, area, max_version)
                    if q.areas.get(area) == max_version:
                        del q.areas[area]
                    sent += 1
                for area in list(q.pages):
                    while (pending := q.pages.get(area)) is not None and len(pending[0]):
                        # The batch leaves the queue while it is on its way; a failure puts
                        # it back. before_put may rewrite the queue meanwhile.
                        offs, vers = pending[0][:BATCH], pending[1][:BATCH]
                        del pending[0][: len(offs)]
                        del pending[1][: len(offs)]
                        if not len(pending[0]):
                            del q.pages[area]
                        q.inflight = (
                            area,
                            np.frombuffer(offs, dtype=np.uint64),
                            np.frombuffer(vers, dtype=np.uint64),
                        )
                        q.landed.clear()
                        try:
                            await t.holders.drop(
                                node, Keys([area] * len(offs), list(offs)), list(vers)
                            )
                        except BaseException:
                            back = q.pages.setdefault(area, (array("Q"), array("Q")))
                            back[0].extend(offs)
                            back[1].extend(vers)
                            raise
                        finally:
                            q.inflight = None
                            q.landed.set()
                        sent += len(offs)
                        t.counters["drops_sent"] += len(offs)
            except PagesReclaimed as exc:
                # The holder forgot this owner's pages: the copies to drop are gone, and the
                # owner must repair around it (the holder says so to puts and gets too).
                t.reclaimed(node, exc.epoch)
                q.retry_at = time.monotonic() + RETRY
            except RamsterError as exc:
                t.counters["drop_failures"] += 1
                q.retry_at = time.monotonic() + RETRY
                self._log.info(("drop", node), "drops to %s failed, will retry: %s", node, exc)
        return sent

    async def settle(self, within: float = 10.0) -> bool:
        """Deliver until nothing is queued for a live holder (tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            await self.deliver()
            if not any(
                q.size() and self._t.holders.state_of(n) == "alive" for n, q in self._q.items()
            ):
                return True
            await asyncio.sleep(0.01)
        return False
