"""How the remote tier behaves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpillConfig:
    """How the remote tier behaves; fractions are of the local budget, times in seconds."""

    replicas: int = 2
    min_replicas: int = 1
    """Copies a spilled or remote page needs at least while fewer than `replicas` holders can
    take it (degraded mode): such pages count as under-replicated and are repaired as soon as
    capacity returns."""
    high_watermark: float = 0.85
    low_watermark: float = 0.70
    batch_pages: int = 256
    """Pages per spill call: enough to amortise a round trip, small enough to stay responsive."""
    depth: int = 4
    """Spill batches in flight at once."""
    retry_delay: float = 0.2
    """Pause before trying again when no holder could take a batch."""
    repair_batch_pages: int = 256
    """Pages per re-replication or move batch. Measured (benchmarks/recovery.py): 1024-page
    batches, 6 in flight, were no faster but raised a foreground load's p99 from 2 to 138 ms;
    256 x 4 keeps it near 20 ms."""
    repair_depth: int = 4
    """Re-replication batches in flight at once."""
    direct_copy: bool = True
    """Re-replicate holder to holder (the surviving holder verifies and sends) rather than
    through the owner; pages a direct copy misses still go through the owner."""
    repair_pause: float = 0.0
    """Pause after each re-replication batch; 0 still yields, so foreground calls get their
    turn between batches."""
    straggler_timeout: float = 0.25
    straggler_min: float = 0.02
    straggler_pause: float = 2.0
    """Seconds a holder that straggled is not chosen for new copies."""
    """Once min_replicas holders of a batch answered, the others get three times what those
    took, within these bounds (seconds): a paused or overloaded holder costs a writer that
    much, not the call timeout (its copies are dropped, the pages repaired to R later)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.replicas:
            raise ValueError(
                f"min_replicas must be within 1..{self.replicas} (replicas), "
                f"got {self.min_replicas}"
            )
