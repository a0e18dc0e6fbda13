"""What the cluster can hold for one replicated export: its holders' budgets over R. Pure logic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HolderRoom:
    """What one node that may hold an export's copies lends, by tier."""

    node: str
    ram_bytes: int
    """Its lent pool's budget."""
    disk_bytes: int = 0
    """Its disk tier's budget (none is wired yet)."""

    @property
    def total(self) -> int:
        """Every tier's budget."""
        return self.ram_bytes + self.disk_bytes


def copies_per_block(holders: Iterable[HolderRoom], replicas: int) -> int:
    """R, or the number of holders that lend anything when fewer."""
    # Placement stores a block on as many holders as there are (down to min_replicas).
    return min(replicas, sum(1 for h in holders if h.total > 0))


def replicated_capacity(holders: Iterable[HolderRoom], replicas: int) -> int:
    """Bytes whose every block the holders' budgets can keep on `copies_per_block` of them."""
    budgets = sorted((h.total for h in holders if h.total > 0), reverse=True)
    copies = min(replicas, len(budgets))
    if copies <= 0:
        return 0
    # The sum over the copies, unless the largest budgets exceed what the others can pair
    # with: set the j largest aside and the rest still hold (copies - j) of every block.
    return min(sum(budgets[j:]) // (copies - j) for j in range(copies))
