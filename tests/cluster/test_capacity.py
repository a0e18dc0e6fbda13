"""An export's capacity: its holders' budgets over R, every block on distinct holders."""

from __future__ import annotations

import random

from ramster.cluster.capacity import HolderRoom, copies_per_block, replicated_capacity

MiB = 1 << 20


def rooms(*budgets: int) -> list[HolderRoom]:
    return [HolderRoom(f"n{i}", b) for i, b in enumerate(budgets)]


def test_equal_budgets_hold_their_sum_over_r() -> None:
    # Issue 24: three nodes lending 32 MiB, one of them the server: two holders, R=2.
    assert replicated_capacity(rooms(32 * MiB, 32 * MiB), 2) == 32 * MiB
    assert replicated_capacity(rooms(32 * MiB, 32 * MiB, 32 * MiB), 3) == 32 * MiB
    assert replicated_capacity(rooms(32 * MiB, 32 * MiB, 32 * MiB), 2) == 48 * MiB


def test_one_large_budget_cannot_pair_with_itself() -> None:
    assert replicated_capacity(rooms(100, 10), 2) == 10
    assert replicated_capacity(rooms(100, 10, 10), 2) == 20
    assert replicated_capacity(rooms(100, 100, 10), 3) == 10


def test_fewer_holders_than_r_hold_one_copy_each() -> None:
    assert copies_per_block(rooms(32 * MiB), 2) == 1
    assert replicated_capacity(rooms(32 * MiB), 2) == 32 * MiB
    assert copies_per_block(rooms(32 * MiB, 0), 2) == 1  # lending nothing is no holder


def test_no_holders_hold_nothing() -> None:
    assert replicated_capacity([], 2) == 0
    assert replicated_capacity(rooms(0, 0), 1) == 0
    assert copies_per_block([], 2) == 0


def test_a_disk_budget_counts_as_one_more_term() -> None:
    holders = [HolderRoom("a", 8 * MiB, 24 * MiB), HolderRoom("b", 32 * MiB)]
    assert holders[0].total == 32 * MiB
    assert replicated_capacity(holders, 2) == 32 * MiB


def test_matches_the_largest_size_the_budgets_can_keep() -> None:
    """Against the definition: the largest B with sum(min(budget, B)) >= copies * B."""
    rng = random.Random(24)
    for _ in range(2000):
        budgets = [rng.randint(0, 40) for _ in range(rng.randint(0, 6))]
        replicas = rng.randint(1, 5)
        copies = copies_per_block(rooms(*budgets), replicas)
        best = 0
        while copies and sum(min(b, best + 1) for b in budgets) >= copies * (best + 1):
            best += 1
        assert replicated_capacity(rooms(*budgets), replicas) == best, (budgets, replicas)
