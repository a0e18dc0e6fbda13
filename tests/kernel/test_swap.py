"""A real Linux kernel swaps to ramster over NBD: a Debian kernel in qemu, nbd-client -swap,
a workload twice the guest's RAM whose every page is verified (see ramster.testing.kernel).

The three boots take about a minute each under TCG; the guest and the KVM probe are shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ramster.testing.kernel import (
    Guest,
    Outcome,
    RamsterCluster,
    RamsterNbd,
    Restart,
    Target,
    Workload,
    run_target,
)
from tests.kernel.conftest import MEASURED

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MEMORY_MIB = 96
"""Guest RAM: 56 MiB free for processes once the kernel and the initramfs are in."""
WORKLOAD = Workload(mib=192, passes=1, seed=13, rewrite_percent=25)
"""Twice the guest's RAM: about 150 MiB goes out to swap and most of it comes back."""
EXPORT_SIZE = "448MiB"
BOOT_TIMEOUT = 420.0
"""Seconds for one boot; a healthy one takes 60-100 s under TCG on 2 shared cores."""
LOCAL_BUDGET = "16MiB"
"""The export node's own pool: most swapped pages have to live on the two peers."""
KILL_LOCAL_BUDGET = "40MiB"
KILL_WATERMARKS = ("--high-watermark=0.5", "--low-watermark=0.4")
"""k0 spills above 20 MiB and keeps 20 MiB of headroom below its budget."""
KILL_AT = "PROGRESS 1 25"
"""A quarter into the verify pass. By then some 35,000 pages have been spilled (the rest of the
pass loads pages from the surviving holder k2) and k0's pool sits at its high watermark, so the
pages the pass rewrites and the kernel swaps out again push it over: k0 has to spill with one
holder gone. The headroom lets today's ramster, which then spills nothing (issue 15), take those
pages locally: with the default watermarks (85%/70%) or an earlier kill, every swap write got
ENOSPC once the pool was full and the guest made no progress at all (2 million ENOSPC replies in
7 minutes, nothing verified)."""


def swap(target: Target, guest: Guest, accel: str, **kw: Any) -> Outcome:
    return run_target(target, guest, accel, WORKLOAD, MEMORY_MIB, BOOT_TIMEOUT, **kw)


def assert_verified(outcome: Outcome) -> None:
    """The workload ran to its end and every page came back with the bytes written."""
    run = outcome.guest
    assert run.finished and not run.timed_out and not run.panicked, outcome.describe()
    assert run.swapon_ok, outcome.describe()
    assert not run.sigbus, f"the workload died of SIGBUS\n{outcome.describe()}"
    pages = WORKLOAD.mib * 256
    assert run.verified == pages * WORKLOAD.passes, outcome.describe()
    assert run.mismatches == 0, outcome.describe()
    assert run.exit_status == 0, outcome.describe()
    # It really swapped: more went out than the guest could ever hold.
    assert run.vmstat["pswpout"] * 4096 > (WORKLOAD.mib - MEMORY_MIB) << 20, outcome.describe()
    assert run.vmstat["pswpin"] > 0, outcome.describe()


def assert_no_io_errors(outcome: Outcome) -> None:
    """No I/O failed, as the guest's kernel and the server both saw it."""
    assert outcome.guest.io_errors == 0, outcome.describe()
    assert not outcome.server.get("error_replies"), outcome.describe()


def test_kernel_swaps_to_ramster_nbd(guest: Guest, accel: str, tmp_path: Path) -> None:
    outcome = swap(
        RamsterNbd("ramster nbd", tmp_path, size=EXPORT_SIZE, local_budget="512MiB"),
        guest,
        accel,
    )
    assert_verified(outcome)
    assert_no_io_errors(outcome)


def test_kernel_swaps_to_a_three_node_cluster(guest: Guest, accel: str, tmp_path: Path) -> None:
    cluster = RamsterCluster(
        "cluster", tmp_path, size=EXPORT_SIZE, local_budget=LOCAL_BUDGET, durability="local"
    )
    outcome = swap(cluster, guest, accel)
    assert_verified(outcome)
    assert_no_io_errors(outcome)
    # Most pages lived on the peers, not in the export node's own pool.
    assert outcome.server["remote_pages"] > outcome.server["local_pages"], outcome.describe()


@pytest.fixture(scope="module")
def holder_killed(guest: Guest, accel: str, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """One run against the cluster with holder k1 killed -9 in the middle of the workload;
    node k0's counters are taken right after the kill and at the end."""
    cluster = RamsterCluster(
        "cluster kill",
        tmp_path_factory.mktemp("holder-killed"),
        size=EXPORT_SIZE,
        local_budget=KILL_LOCAL_BUDGET,
        durability="local",
        export_node_args=KILL_WATERMARKS,
    )
    at_kill: dict[str, Any] = {}

    def on_line(line: str, target: Target) -> str | None:
        if at_kill or not line.startswith(KILL_AT):
            return None
        cluster.kill(1)
        at_kill.update(cluster.stats(0)["remote"])
        return f"kill -9 k1 at {line!r}; k0 remote counters then {at_kill}"

    outcome = swap(cluster, guest, accel, on_line=on_line)
    outcome.server["remote_at_kill"] = at_kill
    outcome.server["remote_at_end"] = cluster.last_stats.get("remote", {})
    return outcome


def test_killing_a_holder_loses_no_page(holder_killed: Outcome) -> None:
    outcome = holder_killed
    assert outcome.events, f"the holder was never killed\n{outcome.describe()}"
    before = outcome.server["remote_at_kill"]
    after = outcome.server["remote_at_end"]
    # Pages were on the peers when k1 died (the verify pass had to load some from k2)...
    assert before["spilled_pages"] > 0, outcome.describe()
    assert after["remote_loads"] > before["remote_loads"], outcome.describe()
    # Whether k0 then has to place pages again depends on the guest's memory
    # pressure after the kill, which varies from run to run under TCG since init was pinned to
    # ramfs: the CI run of this stop saw none, two reruns did. Degraded placement itself is
    # proven by tests/node/test_reliability.py and benchmarks/degraded.py; here the kernel must
    # get every page back.
    assert_verified(outcome)


def test_killing_a_holder_causes_no_io_error(holder_killed: Outcome) -> None:
    """Degraded mode: with one holder left, k0 keeps serving (what it places goes to the one
    holder, under-replicated) and the kernel sees no error."""
    outcome = holder_killed
    assert outcome.guest.finished, outcome.describe()
    assert_no_io_errors(outcome)


RESTART_AT = "PROGRESS 1 25"
"""A quarter into the verify pass: the guest swaps both ways, every page is on the peers
(replicated), and k0 is killed -9 and started again at once (same id, ports, state)."""
RECONNECT_TIMEOUTS = (5, 60)
"""nbd-reconnect's IO_TIMEOUT (a request in flight on the dead socket is requeued after it) and
DEAD_CONN_TIMEOUT (how long new requests wait for a live connection before EIO), seconds."""
STALL_LIMIT = 60.0
"""Seconds the guest may stand still after the kill. Measured under TCG: 9.7-10.9 s (k0
serves again ~2.6 s after the kill, the client reconnects at once, then the read in flight on
the dead socket waits out IO_TIMEOUT); a verify step of 5% takes ~4 s."""


STUCK_BOOT_TIMEOUT = 240.0
"""The boot's bound where the guest may hang for good after the kill (nbd-client): a run that
survives takes ~150 s under TCG, and the kill comes 35-60 s in."""


def swap_through_restart(
    tmp_path: Path, guest: Guest, accel: str, timeout: float = BOOT_TIMEOUT, **kw: Any
) -> tuple[Outcome, Restart]:
    """One run against a 3-node cluster serving a replicated export (the default), whose
    serving node k0 is killed -9 and restarted at RESTART_AT."""
    cluster = RamsterCluster(
        "cluster restart", tmp_path, size=EXPORT_SIZE, local_budget=LOCAL_BUDGET
    )
    restart = Restart(RESTART_AT)
    outcome = run_target(
        cluster, guest, accel, WORKLOAD, MEMORY_MIB, timeout, on_line=restart, **kw
    )
    return outcome, restart


def assert_survived_restart(outcome: Outcome, restart: Restart) -> None:
    """k0 really died and came back, and the guest saw a stall, never a failed I/O."""
    assert restart.killed and restart.serving_after > 0, outcome.describe()
    assert_verified(outcome)
    # Connection messages (Receive control failed, Connection timed out) are expected; a block
    # request that failed, or a failed swap read or write, is not.
    failed = {k: n for k, n in outcome.guest.errors.items() if k in ("io", "swap")}
    assert not failed, outcome.describe()
    assert not outcome.server.get("error_replies"), outcome.describe()
    assert 0 < restart.resumed_after < STALL_LIMIT, outcome.describe()


def test_the_guest_follows_its_restarted_serving_node(
    guest: Guest, accel: str, tmp_path: Path
) -> None:
    """nbd-reconnect (the kernel's netlink interface with a dead-connection timeout, which
    reconnects on the kernel's link-dead notice): no page lost, only a stall."""
    outcome, restart = swap_through_restart(
        tmp_path, guest, accel, client="nbd-reconnect", reconnect_timeouts=RECONNECT_TIMEOUTS
    )
    MEASURED["restart of the serving node"] = (
        f"serving again after {restart.serving_after:.1f}s, "
        f"the guest stalled {restart.resumed_after:.1f}s"
    )
    said = [line for line in outcome.guest.lines if "nbd-reconnect: reconnected" in line]
    assert said, f"the client never reconnected\n{outcome.describe()}"
    assert_survived_restart(outcome, restart)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="nbd-client 3.24 -nonetlink -persist does not reconnect on kernel 6.1: NBD_DO_IT "
    "returns 0 when the server's socket dies, which nbd-client takes for a disconnect it was "
    "asked for ('Kernel call returned.'), so it clears the socket and exits (the restarted "
    "server sees no connection); the swap read in flight fails ('I/O error ... READ', "
    "'Read-error on swap-device'), and the workload dies of SIGBUS or hangs on a stuck request",
)
def test_nbd_client_persist_follows_its_restarted_serving_node(
    guest: Guest, accel: str, tmp_path: Path
) -> None:
    outcome, restart = swap_through_restart(
        tmp_path, guest, accel, STUCK_BOOT_TIMEOUT, nbd_options=("-nonetlink",)
    )
    assert_survived_restart(outcome, restart)
