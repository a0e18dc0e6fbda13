"""Fixtures that start real node processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest_asyncio

from ramster.testing.cluster import Cluster, make_cluster

ClusterFactory = Callable[..., Cluster]


@pytest_asyncio.fixture
async def cluster_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Cluster]]:
    """Make clusters of node processes; every one is stopped after the test."""
    made: list[Cluster] = []

    def factory(n: int = 3, **kwargs: object) -> Cluster:
        cluster = make_cluster(tmp_path / f"c{len(made)}", n, **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.stop_all()
