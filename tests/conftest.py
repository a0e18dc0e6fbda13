"""Suite-wide fixtures and the RAMSTER_REQUIRE_ALL rule: in CI a missing tool fails, never skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest
import pytest_asyncio

from ramster.testing.cluster import Cluster, make_cluster

REQUIRE_ALL = os.environ.get("RAMSTER_REQUIRE_ALL") == "1"


def need_tool(name: str, install_hint: str) -> str:
    """Path of an executable; skip (or fail under RAMSTER_REQUIRE_ALL=1) when it is missing."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not found ({install_hint})"
        if REQUIRE_ALL:
            pytest.fail(f"RAMSTER_REQUIRE_ALL=1 and {reason}")
        pytest.skip(reason)
    return path


def need_netns() -> None:
    """Skip (or fail under RAMSTER_REQUIRE_ALL=1) unless network namespaces can be built."""
    from ramster.testing.netns import available

    reason = available()
    if reason is not None:
        if REQUIRE_ALL:
            pytest.fail(f"RAMSTER_REQUIRE_ALL=1 and {reason}")
        pytest.skip(reason)


ClusterFactory = Callable[..., Cluster]


@pytest_asyncio.fixture
async def cluster_factory(tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """Make clusters of real node processes; every one is stopped after the test."""
    made: list[Cluster] = []

    def factory(n: int = 3, **kwargs: object) -> Cluster:
        cluster = make_cluster(tmp_path / f"c{len(made)}", n, **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.stop_all()


def run_ramster(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m ramster ARGS` as a user runs it, output as text (never raises on exit codes)."""
    return subprocess.run(
        [sys.executable, "-m", "ramster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else dict(env),
    )


def run_ramster_bytes(
    *args: str, env: Mapping[str, str] | None = None, stdin: bytes = b"", timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """`python -m ramster ARGS` with bytes in and out (pages on stdin and stdout)."""
    return subprocess.run(
        [sys.executable, "-m", "ramster", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=None if env is None else dict(env),
    )
