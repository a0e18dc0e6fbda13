"""The guest (kernel + initramfs, cached across runs) and the acceleration, once per session."""

from __future__ import annotations

import pytest

from ramster.testing.kernel import AssetError, Guest, build, cache_dir, probe_accel
from tests.conftest import REQUIRE_ALL, need_tool

TOOLS = {
    "qemu-system-x86_64": "apt-get install qemu-system-x86 (with qemu-utils at the same version)",
    "gcc": "apt-get install gcc libc6-dev",
    "dpkg-deb": "apt-get install dpkg",
    "apt-get": "a Debian host",
    "depmod": "apt-get install kmod",
    "ldd": "apt-get install libc-bin",
}


@pytest.fixture(scope="session")
def guest() -> Guest:
    """Debian's cloud kernel and the harness's initramfs; skip (fail under
    RAMSTER_REQUIRE_ALL=1) when a tool is missing or the download fails."""
    for tool, hint in TOOLS.items():
        need_tool(tool, hint)
    # nbd-client lives in /usr/sbin, often not on a user's PATH.
    from tests.nbd.tools import need

    need("nbd-client")
    try:
        return build()
    except AssetError as exc:
        if REQUIRE_ALL:
            pytest.fail(f"RAMSTER_REQUIRE_ALL=1 and the guest could not be built: {exc}")
        pytest.skip(f"the guest could not be built: {exc}")


USED: dict[str, str] = {}
"""What the kernel tests ran on, for the terminal summary."""
MEASURED: dict[str, str] = {}
"""Figures a kernel test measured (the stall of a restart...), for the terminal summary."""


@pytest.fixture(scope="session")
def accel(guest: Guest) -> str:
    """kvm if a short real boot works under it, else tcg; said in the test summary."""
    accel = probe_accel(guest, cache_dir())
    USED.update(accel=accel, kernel=guest.release)
    return accel


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which acceleration the guests had (TCG is some 10x slower than KVM)."""
    if USED:
        terminalreporter.write_line(
            f"kernel tests: qemu accel={USED['accel']}, guest kernel {USED['kernel']}"
        )
    for what, figures in MEASURED.items():
        terminalreporter.write_line(f"kernel tests: {what}: {figures}")
