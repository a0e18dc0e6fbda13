"""Suite-wide fixtures and the RAMSTER_REQUIRE_ALL rule: in CI a missing tool fails, never skips."""

from __future__ import annotations

import os
import shutil

import pytest

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
