"""A minimal writer of the kernel's initramfs format (cpio "newc", uncompressed)."""

from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One file, directory, symlink or device node of the archive."""

    path: str
    """Without a leading slash: "init", "bin/busybox"."""
    mode: int
    """File type and permission bits (stat.S_IFREG | 0o755, ...)."""
    data: bytes = b""
    """A file's bytes, or a symlink's target."""
    rdev: tuple[int, int] = (0, 0)


def _header(ino: int, entry: Entry, size: int, nlink: int) -> bytes:
    name = entry.path.encode() + b"\0"
    fields = [
        ino,
        entry.mode,
        0,  # uid
        0,  # gid
        nlink,
        0,  # mtime: fixed, so that the same inputs give the same bytes
        size,
        0,  # devmajor
        0,  # devminor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check
    ]
    head = b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + name
    return head + b"\0" * (-len(head) % 4)


def archive(entries: list[Entry]) -> bytes:
    """The archive of `entries`, in order (parents before children), with its trailer."""
    out = bytearray()
    for ino, entry in enumerate(entries, start=1):
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _header(ino, entry, len(entry.data), nlink)
        out += entry.data + b"\0" * (-len(entry.data) % 4)
    out += _header(0, Entry("TRAILER!!!", 0), 0, 1)
    out += b"\0" * (-len(out) % 512)
    return bytes(out)
