"""A fixed-bucket latency histogram: cheap to observe on every call, exportable as Prometheus
buckets without importing a metrics library here."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

BUCKETS: tuple[float, ...] = (
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Upper bounds in seconds: from a page from RAM (50 us) to a holder timing out (2.5 s)."""


@dataclass(slots=True)
class Histogram:
    """Counts of observations per bucket (the last one is +Inf), their number and sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (inf, total)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float:
        """An upper bound of the q-quantile (the bucket it falls in); 0 with no observations."""
        if not self.total:
            return 0.0
        rank = q * self.total
        for bound, running in self.cumulative():
            if running >= rank:
                return bound if bound != float("inf") else BUCKETS[-1]
        return BUCKETS[-1]
