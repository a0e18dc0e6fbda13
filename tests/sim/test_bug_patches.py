"""The known bugs of issue 23, kept as patches that put each back (tests/sim/hunt_bugs.py counts
the seeds the simulation needs to find each): they must keep applying to the code as it grows."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.sim.hunt_bugs import BUGS, ROOT, patches


@pytest.mark.parametrize("patch", patches([]), ids=lambda p: p.stem)
def test_a_bug_patch_still_applies(patch: Path) -> None:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "apply", "--check", str(patch)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "BUG" in patch.read_text(), "a bug patch marks the line it changes"


def test_every_bug_has_its_patch() -> None:
    assert [p.name.split("-")[0] for p in sorted(BUGS.glob("*.patch"))] == list("1234567")
