"""The deployment tests need a Docker engine with Compose, and root (debootstrap, secret owners).

Skipped with the reason where missing, a failure under RAMSTER_REQUIRE_ALL=1 (CI).
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import REQUIRE_ALL
from tests.deploy.compose import docker_unavailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: runs containers on the local Docker engine (needs root and Compose)"
    )


@pytest.fixture(scope="session")
def docker() -> None:
    """Skip (or fail under RAMSTER_REQUIRE_ALL=1) without an engine, Compose or root."""
    reason = docker_unavailable()
    if reason is None and os.geteuid() != 0:
        reason = "the deployment test needs root (debootstrap; secrets owned by the image's uid)"
    if reason is not None:
        if REQUIRE_ALL:
            pytest.fail(f"RAMSTER_REQUIRE_ALL=1 and {reason}")
        pytest.skip(reason)
