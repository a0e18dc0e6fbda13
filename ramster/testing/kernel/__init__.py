"""A real Linux kernel swapping to ramster: qemu boots a Debian kernel whose initramfs connects
nbd-client to a server on the host and runs a memory workload 2-4x the guest's RAM.

    python -m ramster.testing.kernel run cluster --kill-at "PROGRESS 0 50"

Used by tests/kernel and benchmarks/kernel_swap.py; see docs/nbd-swap.md.
"""

from ramster.testing.kernel.assets import AssetError, Guest, build, cache_dir
from ramster.testing.kernel.console import GuestRun, PassTime, parse
from ramster.testing.kernel.run import Outcome, Restart, killer, run_target
from ramster.testing.kernel.targets import Nbdkit, RamsterCluster, RamsterNbd, Target, Zram
from ramster.testing.kernel.vm import Boot, Workload, boot, probe_accel

__all__ = [
    "AssetError",
    "Boot",
    "Guest",
    "GuestRun",
    "Nbdkit",
    "Outcome",
    "PassTime",
    "RamsterCluster",
    "RamsterNbd",
    "Restart",
    "Target",
    "Workload",
    "Zram",
    "boot",
    "build",
    "cache_dir",
    "killer",
    "parse",
    "probe_accel",
    "run_target",
]
