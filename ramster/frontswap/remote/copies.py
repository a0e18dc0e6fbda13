"""Copies onto holders: one batch to several holders at once, hedged against stragglers, with
every copy that may have landed but does not count queued to be dropped again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ramster.cluster.calls import Kept
from ramster.errors import ExportFenced, PagesReclaimed, RamsterError
from ramster.frontswap.remote.drops import DropQueue
from ramster.frontswap.remote.holders import RECLAIMED, SetMember, Tier
from ramster.rpc.pages import PageBatch
from ramster.types import Buffer, NodeId


def renewed(t: Tier, node: NodeId, kept: list[bool], epochs: dict[SetMember, int]) -> bool:
    """What `node` kept lives on (the incarnation that answered is the current one, or it did
    not say); burials since `epochs` was taken of the node's other incarnations (this very
    answer buries the old one) do not touch what it kept, and are taken into it."""
    incarnation = kept.incarnation if isinstance(kept, Kept) else None
    if not t.answered(node, incarnation):
        return False
    if incarnation is None or node not in epochs:
        return True
    # Burials of the node's other (older) incarnations since the call began leave what this
    # one kept alone; a reclaim (this owner's pages there, whoever holds them) does not.
    since = t.sets.buried_since(node, epochs[node])
    if since is not None and not any(b == incarnation or b.startswith(RECLAIMED) for b in since):
        epochs[node] = t.sets.epoch(node)
    return True


class Copier:
    """Puts batches on holders for the owner; strays go to its drop queue."""

    def __init__(self, tier: Tier, drops: DropQueue) -> None:
        self._t = tier
        self._drops = drops

    async def put(
        self,
        nodes: Sequence[NodeId],
        area: int,
        offsets: list[int],
        versions: list[int],
        sums: list[int],
        payloads: Sequence[Buffer],
        ephemeral: bool = False,
        *,
        requeue: bool = True,
        epochs: dict[SetMember, int] | None = None,
    ) -> list[tuple[NodeId, ...]]:
        """Send one batch to every node at once; per page, the nodes that kept it (in order).

        A node whose call failed may have kept the pages all the same (its answer was lost),
        and should the caller be cancelled every node may have: those copies are queued to be
        dropped again, so that nothing leaks. Drops queued earlier for these keys on
        these nodes are withdrawn first: a late one must not take a copy put now; with
        `requeue`, those of a node that then kept nothing come back (`DropQueue.not_kept`; a
        caller that placed the pages there some other way too does that itself).
        `epochs` (the caller's, shared): each node's burial count when the caller began; an
        answer from a node's current incarnation renews it there.
        """
        t = self._t
        batch = PageBatch([area] * len(offsets), offsets, versions, sums, payloads)
        epochs = epochs if epochs is not None else {}
        for node in nodes:
            epochs.setdefault(node, t.sets.epoch(node))
        await self._drops.before_put(nodes, area, offsets, versions)

        async def one(node: NodeId) -> list[bool]:
            try:
                kept = await t.holders.put(node, batch, ephemeral)
                return list(kept) if renewed(t, node, kept, epochs) else [False] * len(offsets)
            except PagesReclaimed as exc:
                t.reclaimed(node, exc.epoch)
                return [False] * len(offsets)
            except ExportFenced as exc:
                t.fence(node, str(exc))  # nothing was kept: no strays to drop
                return [False] * len(offsets)
            except RamsterError as exc:
                self._drops.enqueue([node], area, offsets, versions)
                t.log.info(
                    ("put", node),
                    "holder %s refused a batch of %d pages: %s",
                    node,
                    len(offsets),
                    exc,
                )
                return [False] * len(offsets)

        results = await self._gather_hedged(nodes, one, area, offsets, versions)
        # A holder that restarted meanwhile may have answered as its old incarnation (one that
        # did not say which it is): what it kept may be gone.
        fresh = t.sets.unburied(nodes, epochs)
        for node in nodes:
            if node in results and node not in fresh:
                # Or its new incarnation took the pages: then they are strays to drop.
                self._drops.enqueue([node], area, offsets, versions)
        kept_by = [
            tuple(n for n in nodes if n in fresh and n in results and results[n][i])
            for i in range(len(offsets))
        ]
        if requeue:
            answered = [n for n in nodes if n in fresh and n in results]
            self._drops.not_kept(answered, area, offsets, versions, kept_by)
        return kept_by

    async def _gather_hedged(
        self,
        nodes: Sequence[NodeId],
        one: Callable[[NodeId], Coroutine[Any, Any, list[bool]]],
        area: int,
        offsets: list[int],
        versions: list[int],
    ) -> dict[NodeId, list[bool]]:
        """Every node's answer, but for stragglers: once min_replicas have answered, the rest
        get three times as long again (between straggler_min and straggler_timeout). A paused
        holder must not hold up a writer when it is not needed for the answer: a straggler's
        copies are queued to be dropped, and it gets no new copies for straggler_pause."""
        t = self._t
        tasks = {asyncio.ensure_future(one(n)): n for n in nodes}
        results: dict[NodeId, list[bool]] = {}
        pending = set(tasks)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline: float | None = None
        try:
            while pending:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(
                    pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    results[tasks[task]] = task.result()
                if not done:
                    break  # the stragglers' time is up
                if deadline is None and len(results) >= t.config.min_replicas:
                    # Healthy holders answer within a small factor of each other: the others
                    # get three times what the first answers took, within bounds.
                    took = loop.time() - started
                    cfg = t.config
                    grace = min(cfg.straggler_timeout, max(cfg.straggler_min, 3 * took))
                    deadline = loop.time() + grace
        except BaseException:
            self._drops.enqueue(nodes, area, offsets, versions)
            raise
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        late = [tasks[t] for t in pending]
        for node in late:
            t.slow_until[node] = time.monotonic() + t.config.straggler_pause
        if late:
            t.counters["stragglers"] += len(late)
            t.log.info(
                ("straggler", *late), "holder(s) %s too slow for a batch: left out", ",".join(late)
            )
            self._drops.enqueue(late, area, offsets, versions)
        return results
