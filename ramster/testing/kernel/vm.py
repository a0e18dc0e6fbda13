"""qemu runs the guest: user-mode networking only, a bounded boot, KVM probed once, else TCG.

The guest reaches the host's loopback as 10.0.2.2 (slirp connects from 127.0.0.1, so servers
listen on 127.0.0.1 only); there is no bridge, tap or any other host interface involved.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ramster.testing.kernel.assets import AssetError, Guest
from ramster.testing.kernel.console import GuestRun, feed

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT = 20.0
"""A good boot prints its first line in ~2 s under TCG and well under 1 s under KVM; this
machine's paravirtual /dev/kvm printed nothing in 90 s with a stock Debian kernel."""
PROBE_CACHE_SECONDS = 24 * 3600.0
KERNEL_ARGS = (
    "console=ttyS0",
    "loglevel=1",  # the console only gets init's lines: a kernel printing every I/O error
    # to a serial port slows the guest to a crawl; the host reads them from dmesg at the end
    "log_buf_len=1M",
    "panic=-1",
    "mitigations=off",  # nothing to defend inside a test guest, and TCG runs them slowly
)


@dataclass(frozen=True)
class Workload:
    """The guest's memory workload (workload.c): MiB, verify passes, seed, % rewritten."""

    mib: int
    passes: int = 1
    seed: int = 1
    rewrite_percent: int = 25

    def args(self) -> list[str]:
        """Its kernel command line settings."""
        return [
            f"rk_mib={self.mib}",
            f"rk_passes={self.passes}",
            f"rk_seed={self.seed}",
            f"rk_rewrite={self.rewrite_percent}",
        ]


@dataclass(frozen=True)
class Boot:
    """One guest: its memory, what it swaps to, the workload."""

    mode: str
    """probe (boot and power off), nbd (swap to 10.0.2.2:port) or zram (swap to zram)."""
    memory_mib: int = 128
    workload: Workload = Workload(64)
    port: int = 0
    export: str = "swap0"
    nbd_options: tuple[str, ...] = ()
    """Added to `nbd-client HOST PORT /dev/nbd0 -N EXPORT -b 4096 -swap -persist`."""
    client: str = "nbd-client"
    """What connects /dev/nbd0: nbd-client (Debian's), or nbd-reconnect (nbd-reconnect.c: the
    kernel's netlink interface with a dead-connection timeout, reconnecting on a dead link)."""
    reconnect_timeouts: tuple[int, int] = (5, 60)
    """nbd-reconnect's IO_TIMEOUT and DEAD_CONN_TIMEOUT, in seconds."""
    zram_mib: int = 0
    cpus: int = 1

    def kernel_args(self) -> str:
        """The command line."""
        args = [*KERNEL_ARGS, f"rk_mode={self.mode}", *self.workload.args()]
        if self.mode == "nbd":
            args += [f"rk_port={self.port}", f"rk_export={self.export}"]
            if self.client != "nbd-client":
                io_timeout, dead = self.reconnect_timeouts
                args += [f"rk_client={self.client}", f"rk_timeouts={io_timeout},{dead}"]
            if self.nbd_options:
                # init.sh splits it back on commas (the command line splits on spaces).
                args.append("rk_nbdopts=" + ",".join(self.nbd_options))
        if self.mode == "zram":
            args.append(f"rk_zram_mib={self.zram_mib}")
        return " ".join(args)


def qemu() -> str:
    """qemu-system-x86_64's path."""
    path = shutil.which(QEMU)
    if path is None:
        raise AssetError(f"{QEMU} not found (apt-get install qemu-system-x86)")
    return path


def command(guest: Guest, boot: Boot, accel: str) -> list[str]:
    """The qemu command line for one boot."""
    args = [
        qemu(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-m",
        str(boot.memory_mib),
        "-smp",
        str(boot.cpus),
        "-kernel",
        str(guest.kernel),
        "-initrd",
        str(guest.initramfs),
        "-append",
        boot.kernel_args(),
    ]
    if accel == "kvm":
        args += ["-accel", "kvm", "-cpu", "host"]
    else:
        args += ["-accel", "tcg,thread=multi"]
    if boot.mode == "nbd":
        # User-mode networking: the guest is 10.0.2.15, the host's loopback is 10.0.2.2.
        args += ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="]
    return args


def boot(
    guest: Guest,
    spec: Boot,
    accel: str,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    log: Path | None = None,
) -> GuestRun:
    """Boot the guest until it powers off or `timeout` seconds pass (then it is killed);
    every console line goes to `on_line` as it comes, and to `log`."""
    run = GuestRun(accel=accel)
    start = time.monotonic()
    proc = subprocess.Popen(
        command(guest, spec, accel),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C in the terminal reaches the harness, not qemu
    )
    assert proc.stdout is not None
    logfh = log.open("a", buffering=1) if log else None
    buffer = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = start + timeout - time.monotonic()
                if left <= 0:
                    run.timed_out = True
                    break
                if not sel.select(min(left, 1.0)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                *done, buffer = buffer.split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace").rstrip("\r")
                    if logfh:
                        logfh.write(line + "\n")
                    feed(run, line)
                    if on_line:
                        on_line(line)
    finally:
        stop(proc)
        if logfh:
            logfh.close()
        proc.stdout.close()
    run.wall_seconds = time.monotonic() - start
    return run


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End one qemu this harness started: SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _qemu_version() -> str:
    out = subprocess.run([qemu(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else ""


def probe_accel(guest: Guest, cache: Path, log: Path | None = None) -> str:
    """ "kvm" if a short real boot under KVM reaches init, else "tcg"; `RAMSTER_KERNEL_ACCEL`
    (kvm or tcg) decides instead. The answer is kept in the cache for a day."""
    forced = os.environ.get("RAMSTER_KERNEL_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = {"kernel": guest.release, "qemu": _qemu_version()}
    record = cache / "accel.json"
    try:
        kept = json.loads(record.read_text())
        if kept["key"] == key and time.time() - kept["when"] < PROBE_CACHE_SECONDS:
            return str(kept["accel"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    tried = boot(guest, Boot("probe", memory_mib=128), "kvm", PROBE_TIMEOUT, log=log)
    accel = "kvm" if tried.finished else "tcg"
    record.write_text(json.dumps({"key": key, "when": time.time(), "accel": accel}))
    return accel
