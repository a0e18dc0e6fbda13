"""The harness's pure parts, without qemu: console parsing, module order, the cpio writer,
the kernel command line, Restart."""

from __future__ import annotations

import stat
from pathlib import Path

from ramster.testing.kernel import Boot, Restart, Target, Workload, parse
from ramster.testing.kernel.assets import resolve_modules
from ramster.testing.kernel.cpio import Entry, archive
from ramster.testing.kernel.targets import nbd_summary

CONSOLE = """\
RK BOOTED kernel=6.1.0-57-cloud-amd64 mode=nbd mem_kib=57424
RK NBD-CLIENT rc=0 command=nbd-client 10.0.2.2 4000 /dev/nbd0 -N swap0 -b 4096 -swap -persist
RK SWAPON rc=0 dev=/dev/nbd0
PROGRESS 0 25
PASS 0 fill 11.19 s 17.2 MiB/s
PASS 1 verify 40.31 s 4.8 MiB/s
MISMATCH page 7 version 1: got header 0000000000000007 0000000000000000
RESULT pages=49152 verified=49152 mismatches=1 rewritten=12366 seconds=51.54
RK WORKLOAD-EXIT status=1
RK VMSTAT pswpin=49065 pswpout=62787
RK DMESG-LINES 4
RK DMESG [   20.1] block nbd0: Other side returned error (28)
RK DMESG [   20.2] Write-error on swap-device (254:0:1234)
RK DMESG [   20.3] Adding 458748k swap on /dev/nbd0.  Priority:-2 extents:1 across:458748k
RK DMESG [   20.4] kworker/u2:1: page allocation failure: order:0, mode:0x820(GFP_ATOMIC)
RK DONE
"""


def test_console_is_read_into_figures() -> None:
    run = parse(CONSOLE.splitlines())
    assert run.booted and run.finished and run.swapon_ok
    assert not run.timed_out and not run.panicked
    assert [(p.index, p.kind, p.seconds) for p in run.passes] == [
        (0, "fill", 11.19),
        (1, "verify", 40.31),
    ]
    assert run.verified == 49152 and run.mismatches == 1
    assert run.mismatch_lines == [CONSOLE.splitlines()[6]]
    assert run.exit_status == 1 and not run.sigbus
    assert run.vmstat == {"pswpin": 49065, "pswpout": 62787}
    assert run.errors == {"nbd": 1, "swap": 1}
    assert run.io_errors == 2
    assert run.notes == {"alloc_failure": 1}
    assert run.workload_seconds == 51.54


def test_a_guest_that_died_early_has_no_result() -> None:
    run = parse(["RK BOOTED x", "[    1.2] Kernel panic - not syncing: System is deadlocked"])
    assert run.panicked and not run.finished
    assert run.mismatches == -1 and run.verified == 0
    assert parse(["RK WORKLOAD-EXIT status=135"]).sigbus


def test_modules_come_after_their_dependencies_once() -> None:
    modules_dep = "\n".join(
        [
            "kernel/drivers/virtio/virtio.ko:",
            "kernel/drivers/virtio/virtio_ring.ko:",
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko "
            "kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko "
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko",
            "kernel/net/core/failover.ko:",
            "kernel/drivers/block/zram/zram.ko: kernel/mm/zsmalloc.ko",
            "kernel/mm/zsmalloc.ko:",
        ]
    )
    order = resolve_modules(modules_dep, ("virtio_net", "zram", "virtio", "builtin_thing"))
    names = [m.rsplit("/", 1)[1] for m in order]
    assert names == [
        "virtio_ring.ko",
        "virtio.ko",
        "failover.ko",
        "net_failover.ko",
        "virtio_net.ko",
        "zsmalloc.ko",
        "zram.ko",
    ]


def _read_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = pos + 110
        name = data[name_at : name_at + namesize - 1].decode()
        pos = name_at + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert len(data) % 512 == 0
            return out
        out.append((name, mode, body))


def test_the_cpio_archive_is_newc_the_kernel_reads() -> None:
    entries = [
        Entry("bin", stat.S_IFDIR | 0o755),
        Entry("bin/busybox", stat.S_IFREG | 0o755, b"\x7fELF" + b"x" * 9),
        Entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
    ]
    data = archive(entries)
    assert archive(entries) == data  # the same inputs give the same bytes
    assert _read_newc(data) == [(e.path, e.mode, e.data) for e in entries]


def test_kernel_command_line_carries_the_settings() -> None:
    spec = Boot("nbd", workload=Workload(192, 2, 7, 30), port=4000, nbd_options=("-nonetlink",))
    args = spec.kernel_args().split()
    assert "console=ttyS0" in args
    for setting in ("rk_mode=nbd", "rk_mib=192", "rk_passes=2", "rk_seed=7", "rk_rewrite=30"):
        assert setting in args
    assert "rk_port=4000" in args and "rk_nbdopts=-nonetlink" in args
    assert not any(a.startswith(("rk_client=", "rk_timeouts=")) for a in args)


def test_the_reconnecting_client_and_its_timeouts_reach_the_guest() -> None:
    spec = Boot("nbd", port=4000, client="nbd-reconnect", reconnect_timeouts=(3, 45))
    args = spec.kernel_args().split()
    assert "rk_client=nbd-reconnect" in args and "rk_timeouts=3,45" in args


def test_the_exit_line_of_ramster_nbd() -> None:
    line = (
        "nbd statistics: connections=1 refused=0 busy=0 handshakes_failed=0 protocol_errors=0 "
        "internal_errors=0 read=1 written=2 errors=ENOSPC=12,EIO=1 "
        "swap0[stored=3 mapped=4 refused=12]"
    )
    assert nbd_summary(line) == {"error_replies": {"ENOSPC": 12, "EIO": 1}, "pages_refused": 12}
    assert nbd_summary("errors=none swap0[stored=0 mapped=0 refused=0]")["error_replies"] == {}


class _Restartable(Target):
    def __init__(self) -> None:
        super().__init__("fake", Path("/nonexistent"))
        self.restarted: list[int] = []

    def restart(self, i: int) -> float:
        self.restarted.append(i)
        return 1.5


def test_a_restart_happens_once_and_times_the_next_progress() -> None:
    target = _Restartable()
    restart = Restart("PROGRESS 1 25")
    assert restart("PROGRESS 1 20", target) is None and not restart.killed
    assert "restarted" in (restart("PROGRESS 1 25", target) or "")
    assert restart.serving_after == 1.5 and target.restarted == [0]
    assert restart("RK KMSG 3,1,2,-;block nbd0: Receive control failed", target) is None
    assert restart.resumed_after == 0
    assert "went on" in (restart("PROGRESS 1 30", target) or "")
    assert restart.resumed_after > 0
    assert restart("PROGRESS 1 25", target) is None and target.restarted == [0]
