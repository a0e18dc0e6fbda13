"""How the node's exports are built: a local one over the node's frontswap, a replicated one
over a frontswap of its own whose pages belong to the export (`export:NAME`), not to this
process, so that they outlive it."""

from __future__ import annotations

from ramster.cluster.exports import ExportHolders
from ramster.cluster.peers import Peers
from ramster.frontswap.local import LocalFrontswap
from ramster.frontswap.remote import RemoteTier, SpillConfig
from ramster.nbd.config import LOCAL, ExportSpec
from ramster.nbd.export import OPEN_AREAS, Export
from ramster.node.config import NodeConfig
from ramster.node.export_rebuild import MANIFEST_AREA
from ramster.node.export_records import ExportRecords
from ramster.node.export_served import (
    INDEX_BYTES_PER_PAGE,
    MANIFEST_REPLICAS,
    Served,
    ServedHooks,
)
from ramster.pagestore import PoolConfig


class ExportFactory:
    """Builds Exports; a replicated one is registered in `served` and opened through `hooks`."""

    def __init__(
        self,
        config: NodeConfig,
        peers: Peers,
        frontswap: LocalFrontswap,
        records: ExportRecords,
        served: dict[str, Served],
        hooks: ServedHooks,
    ) -> None:
        self.config = config
        self.peers = peers
        self.frontswap = frontswap
        self.records = records
        self.served = served
        """The node's replicated exports by name (shared with the export service)."""
        self.hooks = hooks

    def build(
        self, spec: ExportSpec, max_payload: int, *, takeover: bool = False, force: bool = False
    ) -> Export:
        """The Export for a spec: over the node's frontswap (local) or one of its own."""
        if spec.durability == LOCAL:
            return Export(self.frontswap, spec, max_payload, opener=OPEN_AREAS)
        cfg = self.config
        name, size = spec.name, spec.size

        def remember(nodes: frozenset[str]) -> None:
            self.records.update(name, size, holders=nodes)

        holders = ExportHolders(self.peers, name, 0, remember)
        record = self.records.get(name)
        if record is not None:
            holders.may_hold = frozenset(record.holders)
        pages = spec.size // cfg.page_size
        tier = RemoteTier(
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
        tier.replicas_of[MANIFEST_AREA] = MANIFEST_REPLICAS

        served = Served(
            spec, tier, holders, self.hooks, max_payload, takeover=takeover, force=force
        )
        self.served[spec.name] = served
        return served.export
