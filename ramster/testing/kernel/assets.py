"""The guest's kernel and initramfs, built from Debian's packages and cached outside git.

The kernel is `linux-image-*-cloud-amd64` fetched with `apt-get download` and unpacked with
`dpkg-deb -x` (never installed on the host); `depmod -b` writes its modules.dep, from which the
modules the guest needs are resolved. The initramfs holds busybox-static (also only unpacked),
those modules, the host's own nbd-client (Debian's) with every library `ldd` names, the workload
and nbd-reconnect (a netlink NBD client that reconnects) compiled statically with gcc, and
init.sh as /init. Everything lands in the cache directory
(`$RAMSTER_KERNEL_CACHE`, else `$XDG_CACHE_HOME/ramster-kernel`, else
`~/.cache/ramster-kernel`), keyed by what went into it, so later runs start at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ramster.testing.kernel.cpio import Entry, archive

KERNEL_META = "linux-image-cloud-amd64"
"""Debian's meta-package of the cloud kernel: virtio, nbd and zram as modules, small."""
MODULES = ("virtio_pci", "virtio_net", "nbd", "zram", "lz4")
"""What the guest loads (with their dependencies): the NIC, the NBD client, zram with lz4."""
MODULE_PARAMS = {"nbd": "nbds_max=2 max_part=0", "zram": "num_devices=1"}
BUSYBOX_DEB = "busybox-static"
NBD_CLIENT = "nbd-client"
APPLETS = (
    "sh", "mount", "mkdir", "cat", "echo", "awk", "grep", "head", "tail", "insmod", "ip",
    "mkswap", "swapon", "swapoff", "dmesg", "poweroff", "sleep", "sync", "uname", "free", "ls",
    "ps", "kill", "seq", "cp", "ln",
)  # fmt: skip


class AssetError(RuntimeError):
    """A package, tool or build step the guest needs is missing or failed."""


@dataclass(frozen=True)
class Guest:
    """What qemu boots."""

    kernel: Path
    """The vmlinuz."""
    initramfs: Path
    release: str
    """`uname -r` of the kernel, e.g. 6.1.0-57-cloud-amd64."""
    package: str
    """The Debian package it came from (name_version)."""


def cache_dir() -> Path:
    """Where downloads and builds are kept between runs (created if missing)."""
    base = os.environ.get("RAMSTER_KERNEL_CACHE")
    if base:
        path = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(xdg) / "ramster-kernel"
    path.mkdir(parents=True, exist_ok=True)
    return path


def which(name: str) -> str:
    """A host tool's path (also in /sbin and /usr/sbin, often not on a user's PATH)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise AssetError(f"{name} not found")
    return path


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One builder at a time per cache (tests and a benchmark may start together)."""
    with (cache / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(*args: str, cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        out = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"{args[0]}: {exc}") from exc
    if out.returncode != 0:
        raise AssetError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def _download(debs: Path, package: str) -> Path:
    """The .deb of `package` (the candidate version), fetched once into `debs`."""
    version = ""
    with contextlib.suppress(AssetError):
        policy = _run(which("apt-cache"), "policy", package)
        m = re.search(r"Candidate:\s*(\S+)", policy)
        version = m.group(1) if m and m.group(1) != "(none)" else ""
    if version:
        # The file name apt-get download uses: epoch's colon escaped as %3a.
        cached = list(debs.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
        if cached:
            return cached[0]
        _run(which("apt-get"), "download", "-q", f"{package}={version}", cwd=debs)
        got = list(debs.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
        if got:
            return got[0]
    # No package list (no `apt-get update` yet, or offline): the newest one downloaded before.
    older = sorted(debs.glob(f"{package}_*.deb"))
    if older:
        return older[-1]
    raise AssetError(f"cannot download {package} (run `apt-get update` first)")


def _kernel_package() -> str:
    """linux-image-<release>-cloud-amd64, what the meta-package depends on now."""
    with contextlib.suppress(AssetError):
        depends = _run(which("apt-cache"), "depends", KERNEL_META)
        m = re.search(r"Depends:\s*(linux-image-\S+-cloud-amd64)\b", depends)
        if m:
            return m.group(1)
    return ""


def _extract(deb: Path, into: Path) -> Path:
    """`dpkg-deb -x deb into`, once (into is created atomically)."""
    if into.is_dir():
        return into
    tmp = into.with_name(into.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(which("dpkg-deb"), "-x", str(deb), str(tmp))
    tmp.rename(into)
    return into


def _kernel(cache: Path) -> tuple[Path, str, str]:
    """(unpacked kernel tree with modules.dep, release, package file stem)."""
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    package = _kernel_package()
    if package:
        deb = _download(debs, package)
    else:
        found = sorted(debs.glob("linux-image-*-cloud-amd64_*.deb"))
        if not found:
            raise AssetError(f"cannot resolve {KERNEL_META} (run `apt-get update` first)")
        deb = found[-1]
    tree = _extract(deb, cache / deb.stem)
    (release,) = (p.name for p in (tree / "lib" / "modules").iterdir())
    if not (tree / "lib" / "modules" / release / "modules.dep").exists():
        # Debian's postinst runs depmod; the package itself ships no modules.dep.
        _run(which("depmod"), "-b", str(tree), release)
    return tree, release, deb.stem


def resolve_modules(modules_dep: str, wanted: tuple[str, ...]) -> list[str]:
    """Module paths (relative to the release's directory) for `wanted` and everything they
    depend on, dependencies first, each once; a module that is built in is skipped."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[name] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        # modules.dep lists every dependency, direct or not, ordered for loading from the
        # last one; visiting them in reverse loads each after its own dependencies.
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        order.append(path)

    for name in wanted:
        found = by_name.get(name)
        if found is not None:
            visit(found)
    return order


def _libraries(binary: str) -> list[Path]:
    """The shared libraries `ldd` names for a binary, the dynamic loader included."""
    out = _run(which("ldd"), binary)
    libs: list[Path] = []
    for line in out.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def _workload(cache: Path, name: str = "workload") -> Path:
    """One of the harness's C programs (the workload, nbd-reconnect), compiled statically once
    per source."""
    source = resources.files("ramster.testing.kernel").joinpath(f"{name}.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    binary = cache / f"{name}-{digest}"
    if not binary.exists():
        src = cache / f"{name}-{digest}.c"
        src.write_bytes(source)
        tmp = binary.with_name(binary.name + ".tmp")
        _run(which("gcc"), "-O2", "-static", "-Wall", "-o", str(tmp), str(src))
        tmp.rename(binary)
    return binary


def _entries(
    tree: Path, release: str, busybox: Path, workload: Path
) -> tuple[list[Entry], list[str]]:
    entries: list[Entry] = []
    dirs: set[str] = set()

    def directory(path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub and sub not in dirs:
                dirs.add(sub)
                entries.append(Entry(sub, stat.S_IFDIR | 0o755))

    def file(path: str, data: bytes, mode: int = 0o755) -> None:
        directory(str(Path(path).parent))
        entries.append(Entry(path, stat.S_IFREG | mode, data))

    for d in ("proc", "sys", "dev", "tmp", "etc", "bin", "sbin", "lib/modules"):
        directory(d)
    # /dev/console before devtmpfs is mounted: where the kernel sends init's output.
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    init = resources.files("ramster.testing.kernel").joinpath("init.sh").read_bytes()
    file("init", init)
    file("bin/busybox", busybox.read_bytes())
    entries.extend(Entry(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox") for a in APPLETS)
    file("bin/workload", workload.read_bytes())
    file("sbin/nbd-reconnect", _workload(workload.parent, "nbd-reconnect").read_bytes())
    nbd_client = which(NBD_CLIENT)
    file("sbin/nbd-client", Path(nbd_client).read_bytes())
    for lib in _libraries(nbd_client):
        real = lib.resolve()
        file(str(lib).lstrip("/"), real.read_bytes())
    mod_root = tree / "lib" / "modules" / release
    modules = resolve_modules((mod_root / "modules.dep").read_text(), MODULES)
    loaded: list[str] = []
    for rel in modules:
        name = Path(rel).name
        file(f"lib/modules/{name}", (mod_root / rel).read_bytes(), 0o644)
        params = MODULE_PARAMS.get(name.split(".ko")[0], "")
        loaded.append(f"{name} {params}".strip())
    file("etc/rk-modules", "".join(f"{m}\n" for m in loaded).encode(), 0o644)
    return entries, [Path(m).name for m in modules]


def build(cache: Path | None = None) -> Guest:
    """The kernel and an initramfs for it, downloaded and built when not cached yet."""
    cache = cache or cache_dir()
    with _locked(cache):
        tree, release, package = _kernel(cache)
        busybox_tree = _extract(_download(cache / "debs", BUSYBOX_DEB), cache / "busybox")
        busybox = busybox_tree / "bin" / "busybox"
        workload = _workload(cache)
        entries, _ = _entries(tree, release, busybox, workload)
        data = archive(entries)
        digest = hashlib.sha256(data).hexdigest()[:16]
        initramfs = cache / f"initramfs-{release}-{digest}.cpio.gz"
        if not initramfs.exists():
            for old in cache.glob("initramfs-*.cpio*"):
                old.unlink()
            tmp = initramfs.with_name(initramfs.name + ".tmp")
            # Compressed: while the kernel unpacks it, a small guest holds both the archive
            # and the files it becomes.
            tmp.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
            tmp.rename(initramfs)
        kernel = tree / "boot" / f"vmlinuz-{release}"
        if not kernel.exists():
            raise AssetError(f"{package} has no {kernel.name}")
        return Guest(kernel, initramfs, release, package)
