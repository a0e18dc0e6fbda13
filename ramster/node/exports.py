"""The replicated exports a node serves: each takes a term, rebuilds its index from the holders,
is kept alive, repaired and, once another server takes it over, fenced and retired.

A replicated export has a frontswap of its own (`ClusterFrontswap(replicated=True)`): its pages
belong to `export:NAME`, not to this process, so they outlive it. Its data area is 0 and its
manifest (which blocks were written, see `nbd.manifest`) area 1.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramster.cluster.calls import ClaimAnswer
from ramster.cluster.exports import ExportHolders, export_owner
from ramster.cluster.peers import Peers
from ramster.errors import ExportTaken, RamsterError
from ramster.frontswap.remote import ClusterFrontswap, SpillConfig
from ramster.frontswap.remote.rebuild import Inventory, Rebuilt, merge
from ramster.nbd import manifest
from ramster.nbd.config import LOCAL, REPLICATED, ExportSpec
from ramster.nbd.export import Export
from ramster.nbd.server import NbdServer
from ramster.node.config import NodeConfig
from ramster.pagestore import PoolConfig
from ramster.pagestore.codec import expand
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import INVENTORY_LIMIT

log = logging.getLogger(__name__)

DATA_AREA, MANIFEST_AREA = 0, 1
TERM_SHIFT = 40
"""Versions of term T start at T << TERM_SHIFT: a newer term's writes are always newer."""
KEEPALIVE_EVERY = 5.0
"""Seconds between an export's claims on every live peer (keeps it alive, notices fencing)."""
REPAIR_EVERY = 2.0
"""Seconds between checks for copies to repair."""
MANIFEST_REPLICAS = 8
"""Copies of each manifest page (at most; as many as there are live peers)."""
EXPORT_COUNTERS = frozenset(
    {
        "direct_remote_stores",
        "direct_remote_refused",
        "under_replicated_stores",
        "stragglers",
        "remote_loads",
        "remote_unavailable",
        "drops_sent",
        "repaired_pages",
        "pages_lost",
        "cache_hits",
        "cache_misses",
        "cache_evicted",
        "cache_pages",
        "cache_bytes",
    }
)
"""The remote tier's counters an export's description shows."""
INDEX_BYTES_PER_PAGE = 64
"""The export's own pool keeps only the index: about this much per block, plus slack."""


@dataclass(slots=True)
class Served:
    """One replicated export served here."""

    spec: ExportSpec
    fs: ClusterFrontswap
    holders: ExportHolders
    export: Export
    term: int = 0
    state: str = "starting"
    """starting, rebuilding, serving, fenced or deleted."""
    rebuild: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class ExportService:
    """Builds the node's exports (local ones over the node's frontswap) and tends replicated
    ones; `run()` is owned by the node's TaskGroup."""

    def __init__(
        self,
        config: NodeConfig,
        peers: Peers,
        frontswap: ClusterFrontswap,
        events: Callable[[str, str, str, int], object],
        lent: LentPool,
    ) -> None:
        self.config = config
        self.lent = lent
        """This node as a holder: it may hold copies of an export it takes over."""
        self.peers = peers
        self.frontswap = frontswap
        self._event = events
        self.served: dict[str, Served] = {}
        self.nbd: NbdServer | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._max_payload = 32 << 20

    # -- building ----------------------------------------------------------------------------------

    def build(self, spec: ExportSpec, max_payload: int) -> Export:
        """The Export for a spec: over the node's frontswap (local) or one of its own."""
        self._max_payload = max_payload
        if spec.durability == LOCAL:
            return Export(self.frontswap, spec, max_payload)
        cfg = self.config
        holders = ExportHolders(self.peers, spec.name, 0)
        pages = spec.size // cfg.page_size
        fs = ClusterFrontswap(
            PoolConfig(
                page_size=cfg.page_size,
                budget_bytes=pages * INDEX_BYTES_PER_PAGE + (8 << 20),
            ),
            holders,
            SpillConfig(replicas=cfg.replicas),
            max_areas=2,
            replicated=True,
            cache_bytes=cfg.export_cache,
        )
        # The manifest is tiny (4 KiB per 128 MiB) and tells lost blocks from unwritten ones:
        # it goes to every live peer (up to MANIFEST_REPLICAS), not just R.
        fs.replicas_of[MANIFEST_AREA] = MANIFEST_REPLICAS

        def fenced() -> str | None:
            return fs.fenced

        export = Export(
            fs,
            spec,
            max_payload,
            area=DATA_AREA,
            manifest_area=MANIFEST_AREA,
            fenced=fenced,
        )
        served = Served(spec, fs, holders, export)
        self.served[spec.name] = served
        export.prepare = lambda: self._prepare(served)
        return export

    # -- start: claim, rebuild ---------------------------------------------------------------------

    async def _prepare(self, served: Served) -> None:
        """Before the export takes connections: the next term, then the rebuilt index."""
        started = time.monotonic()
        await self._await_peers()
        served.state = "claiming"
        served.term = await self.claim(served.spec.name, served.spec.size)
        served.holders.set_term(served.term)
        served.fs.start_versions_at(served.term << TERM_SHIFT)
        served.state = "rebuilding"
        log.info("export %s: term %d, rebuilding from the holders", served.spec.name, served.term)
        await served.export.open_areas()
        rebuilt = await self._rebuild(served)
        served.rebuild["seconds"] = time.monotonic() - started
        served.state = "serving"
        log.info(
            "export %s: serving (term %d): %d pages rebuilt in %.2f s (%.0f pages/s), %d lost, "
            "%d stale copies to drop",
            served.spec.name,
            served.term,
            rebuilt.pages,
            served.rebuild["seconds"],
            served.rebuild.get("pages_per_s", 0.0),
            len(rebuilt.lost),
            sum(len(v[0]) for v in rebuilt.stale.values()),
        )
        self._event(
            "export-serving",
            served.spec.name,
            f"term {served.term}, {rebuilt.pages} pages, {len(rebuilt.lost)} lost",
            logging.WARNING if len(rebuilt.lost) else logging.INFO,
        )
        if self._tg is not None:
            served.task = self._tg.create_task(
                self._tend(served), name=f"export {served.spec.name}"
            )

    async def _await_peers(self) -> None:
        """Wait (at most dead_after) until every configured peer answered a heartbeat once."""
        deadline = time.monotonic() + self.config.dead_after
        while time.monotonic() < deadline:
            seeds = [p for p in self.peers.peers() if p.seed]
            if seeds and all(p.node_id is not None for p in seeds):
                return
            if not seeds and self.peers.alive():
                return
            await asyncio.sleep(0.05)

    async def claim(self, name: str, size: int) -> int:
        """Take the next term of an export on every live peer; ExportTaken if one refuses."""
        owner = export_owner(name)
        nodes = sorted(self.peers.alive())
        asked = await self._each(nodes, lambda n: self.peers.calls.claim(n, owner, 0, 0))
        here = self.lent.claim(owner, 0, self.peers.me, 0)[1].term
        term = max((a.term for a in asked.values()), default=here) + 1
        term = max(term, here + 1)
        taken = await self._each(nodes, lambda n: self.peers.calls.claim(n, owner, term, size))
        # This node's own lent pool is a holder too (of the previous server's copies).
        ok, claim = self.lent.claim(owner, term, self.peers.me, size)
        if not ok:
            raise ExportTaken(f"export {name}: term {claim.term} by {claim.node} is newer")
        refused = {n: a for n, a in taken.items() if not a.taken}
        if refused:
            node, answer = next(iter(refused.items()))
            raise ExportTaken(
                f"export {name}: {node} knows term {answer.term} by {answer.node}, "
                f"newer than {term}"
            )
        if not taken:
            log.warning("export %s: no live peer to claim it on: term %d", name, term)
        return term

    async def _each(self, nodes: list[str], call: Callable[[str], Any]) -> dict[str, ClaimAnswer]:
        """The answers of the nodes that answered (the others are left out, and logged)."""
        results = await asyncio.gather(*(call(n) for n in nodes), return_exceptions=True)
        out: dict[str, ClaimAnswer] = {}
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, ClaimAnswer):
                out[node] = result
            elif isinstance(result, RamsterError):
                log.warning("export claim: %s did not answer: %s", node, result)
            elif isinstance(result, BaseException):
                raise result
        return out

    async def _inventories(self, served: Served, area: int) -> dict[str, Inventory]:
        """Every live holder's inventory of one area, a batch at a time."""
        nodes = sorted(self.peers.alive())
        identity = served.holders.owner_identity

        async def one(node: str) -> Inventory:
            parts: list[Inventory] = []
            start = 0
            while True:
                offs, vers, sums = await self.peers.calls.inventory(
                    node, identity, area, start, INVENTORY_LIMIT
                )
                parts.append((offs, vers, sums))
                if len(offs) < INVENTORY_LIMIT:
                    break
                start = int(offs[-1]) + 1
            return (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]),
            )

        results = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
        out: dict[str, Inventory] = {}
        own = self.lent.inventory(served.holders.owner, identity[1], area, 0, 1 << 62)
        if len(own[0]):
            out[self.peers.me] = own
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, tuple):
                out[node] = result
            elif isinstance(result, RamsterError):
                log.error("export %s: no inventory from %s: %s", served.spec.name, node, result)
            elif isinstance(result, BaseException):
                raise result
        return out

    async def _rebuild(self, served: Served) -> Rebuilt:
        """The index from the holders: the manifest first, then the data, newest wins."""
        fs, export, name = served.fs, served.export, served.spec.name
        t0 = time.monotonic()
        meta = merge(await self._inventories(served, MANIFEST_AREA))
        fs.adopt(MANIFEST_AREA, [g for g in meta.groups if self.peers.me not in g[0]])
        self._drop_stale(fs, MANIFEST_AREA, meta)
        await self._rehome(served, MANIFEST_AREA, [g for g in meta.groups if self.peers.me in g[0]])
        numbers = sorted(int(o) for g in meta.groups for o in g[1])
        written: list[np.ndarray] = []
        unreadable: list[int] = []
        for i in range(0, len(numbers), 256):
            chunk = numbers[i : i + 256]
            try:
                pages = await fs.load_many(MANIFEST_AREA, chunk)
            except RamsterError as exc:
                log.error("export %s: manifest pages unreadable: %s", name, exc)  # noqa: TRY400
                pages = [None] * len(chunk)
            for number, page in zip(chunk, pages, strict=True):
                if page is None:
                    unreadable.append(number)
                else:
                    written.append(manifest.decode(number, page))
        data_inv = await self._inventories(served, DATA_AREA)
        total = max(1, -(-(served.spec.size // self.config.page_size) // manifest.SPAN))
        if not numbers and not any(len(inv[0]) for inv in data_inv.values()):
            await self._new_manifest(served, total)  # a new export (or one with nothing left)
        else:
            # Every manifest page exists from the export's first start: one missing lost its
            # copies everywhere, and its range is as unknown as an unreadable one's.
            unreadable += sorted(set(range(total)) - set(numbers))
        wanted = np.concatenate(written) if written else np.zeros(0, dtype=np.int64)
        if unreadable:
            # Which blocks those pages marked is unknown: every copy found in their ranges is
            # kept, and every other block there reads as an I/O error (never as zeros).
            log.error(
                "export %s: %d manifest pages have no good copy: blocks in their ranges that no "
                "holder has read as I/O errors",
                name,
                len(unreadable),
            )
            pages_total = served.spec.size // self.config.page_size
            spans = [
                np.arange(n << manifest.PAGE_BITS, min((n + 1) << manifest.PAGE_BITS, pages_total))
                for n in unreadable
            ]
            wanted = np.union1d(wanted, np.concatenate(spans))
        data = merge(data_inv, wanted)
        fs.adopt(DATA_AREA, [g for g in data.groups if self.peers.me not in g[0]])
        self._drop_stale(fs, DATA_AREA, data)
        export.restore_index(wanted, data.lost)
        await self._rehome(served, DATA_AREA, [g for g in data.groups if self.peers.me in g[0]])
        took = max(time.monotonic() - t0, 1e-6)
        served.rebuild.update(
            pages=float(data.pages),
            lost=float(len(data.lost)),
            holders=float(len(data_inv)),
            rebuild_s=took,
            pages_per_s=data.pages / took,
        )
        return data

    async def _new_manifest(self, served: Served, total: int) -> None:
        """Store every manifest page of a new export (all clear: pages of one repeated byte
        cost a few bytes each), so that a missing one later means lost, not never written."""
        blank = bytes(self.config.page_size)
        for i in range(0, total, 1024):
            numbers = list(range(i, min(i + 1024, total)))
            kept = await served.fs.store_many(MANIFEST_AREA, numbers, [blank] * len(numbers))
            # What could not be stored (no peer yet) is stored before the first write's answer.
            served.export.mark_manifest([n for n, ok in zip(numbers, kept, strict=True) if not ok])

    def _drop_stale(self, fs: ClusterFrontswap, area: int, rebuilt: Rebuilt) -> None:
        for node, (offs, vers) in rebuilt.stale.items():
            if node != self.peers.me:
                fs.queue_drops(node, area, offs.tolist(), [int(v) for v in vers])
        own = rebuilt.stale.get(self.peers.me)
        if own is not None and len(own[0]):
            owner, inc = fs.holders.owner_identity  # type: ignore[attr-defined]
            self.lent.drop(owner, inc, [area] * len(own[0]), own[0].tolist(), own[1].tolist())

    async def _rehome(self, served: Served, area: int, groups: list[Any]) -> None:
        """Copies this node held of the export it now serves: a server never holds its own
        pages, so they are stored again (R copies elsewhere), then dropped here."""
        owner, inc = served.holders.owner_identity
        ps = self.config.page_size
        for _, offs, _, _ in groups:
            for i in range(0, len(offs), 1024):
                part = offs[i : i + 1024].tolist()
                held = self.lent.get(owner, inc, [area] * len(part), part)
                found = [(o, expand(h[2], ps)) for o, h in zip(part, held, strict=True) if h]
                keys = [o for o, page in found if len(page) == ps]
                pages = [page for _, page in found if len(page) == ps]
                kept = await served.fs.store_many(area, keys, pages)
                if not all(kept):
                    log.error(
                        "export %s: %d blocks held only here could not be stored elsewhere",
                        served.spec.name,
                        kept.count(False),
                    )
                self.lent.drop(owner, inc, [area] * len(keys), keys)

    # -- serving -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Own the exports' background work (drops, keepalives, repair) until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for served in self.served.values():
                if served.state == "serving" and served.task is None:
                    served.task = tg.create_task(self._tend(served))
            await asyncio.Event().wait()

    async def _tend(self, served: Served) -> None:
        """Drops, keepalive claims and repairs of one export until it is fenced or retired."""
        drops = asyncio.create_task(served.fs.spill_forever(), name="export drops")
        try:
            last_claim = last_repair = time.monotonic()
            while True:
                await asyncio.sleep(min(self.config.heartbeat, 0.5))
                now = time.monotonic()
                if served.fs.fenced is not None:
                    self.retire(served.spec.name, served.fs.fenced)
                    return
                if now - last_claim >= KEEPALIVE_EVERY:
                    last_claim = now
                    why = await self._keepalive(served)
                    if why is not None:
                        self.retire(served.spec.name, why)
                        return
                if now - last_repair >= REPAIR_EVERY:
                    last_repair = now
                    try:
                        await served.fs.repair(self.peers.gone(), self.peers.leaving())
                    except RamsterError as exc:
                        log.warning("export %s: repair failed: %s", served.spec.name, exc)
        finally:
            drops.cancel()
            await asyncio.gather(drops, return_exceptions=True)

    async def _keepalive(self, served: Served) -> str | None:
        """Claim the term again everywhere: why the export is fenced, or None."""
        owner = export_owner(served.spec.name)
        nodes = sorted(self.peers.alive())
        answers = await self._each(
            nodes, lambda n: self.peers.calls.claim(n, owner, served.term, served.spec.size)
        )
        for node, answer in answers.items():
            if not answer.taken:
                return f"{node} knows term {answer.term} by {answer.node}"
        return None

    def retire(self, name: str, why: str) -> None:
        """Stop serving an export here (fenced, moved or deleted): connections are closed."""
        served = self.served.get(name)
        if served is None:
            return
        served.state = "fenced" if why != "deleted" else "deleted"
        served.export.fence(why)
        if self.nbd is not None:
            self.nbd.remove_export(name)
        del self.served[name]
        if served.task is not None and served.task is not asyncio.current_task():
            served.task.cancel()
        self._event("export-fenced", name, why, logging.WARNING)

    # -- operations --------------------------------------------------------------------------------

    async def adopt(self, name: str, size: int, area: int) -> int:
        """Take an export over: the next term (the old server is fenced), rebuild, serve."""
        if self.nbd is None:
            raise ExportTaken("this node serves no NBD (start it with --nbd HOST:PORT)")
        if name in self.served or name in self.nbd.exports:
            raise ExportTaken(f"export {name} is served here already")
        known = await self._known_size(name)
        spec = ExportSpec(name, size or known, area, REPLICATED)
        export = self.build(spec, self.nbd.config.max_payload)
        try:
            await self.nbd.add_export(export)
        except BaseException:
            self.served.pop(name, None)
            raise
        return self.served[name].term

    async def _known_size(self, name: str) -> int:
        owner = export_owner(name)
        nodes = sorted(self.peers.alive())
        answers = await self._each(nodes, lambda n: self.peers.calls.claim(n, owner, 0, 0))
        size = max((a.size for a in answers.values()), default=0)
        if not size:
            raise ExportTaken(f"export {name}: no holder knows its size (give --size)")
        return size

    async def delete(self, name: str) -> int:
        """Forget an export cluster-wide: fence its server, drop every copy; pages dropped."""
        served = self.served.get(name)
        if served is not None:
            self.retire(name, "deleted")
        term = await self.claim(name, 0)
        owner = export_owner(name)
        dropped = 0
        for node in sorted(self.peers.alive()):
            try:
                dropped += await self.peers.calls.delete_export(node, owner, term)
            except RamsterError as exc:
                log.warning("export %s: %s did not delete its copies: %s", name, node, exc)
        self._event("export-deleted", name, f"{dropped} pages dropped", logging.WARNING)
        return dropped

    def holder_restarted(self, node: str, old_incarnation: str) -> None:
        """A holder restarted: its copies of every export are gone."""
        for served in self.served.values():
            served.fs.holder_restarted(node, old_incarnation)

    def describe(self) -> list[dict[str, Any]]:
        """The exports served here, as plain data."""
        out = []
        for name, served in sorted(self.served.items()):
            stats = served.export.statistics()
            out.append(
                {
                    "name": name,
                    "server": self.peers.me,
                    "term": served.term,
                    "durability": served.spec.durability,
                    "size": served.spec.size,
                    "state": served.state,
                    "pages": stats.pages_mapped,
                    "pages_lost": stats.pages_lost,
                    "under_replicated": served.fs.under_replicated(
                        self.peers.gone(), self.peers.leaving()
                    ),
                    "rebuild": dict(served.rebuild),
                    "counters": {
                        k: int(v)
                        for k, v in served.fs.remote_statistics().items()
                        if k in EXPORT_COUNTERS
                    },
                }
            )
        return out
