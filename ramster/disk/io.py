"""The disk store's seam to the operating system: positioned reads and writes, the file's
preparation, and the store's errors. Tests hand the store an `Io` of their own (slow, failing,
short) to inject faults; nothing here touches the event loop (calls run in `asyncio.to_thread`)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence
from typing import Protocol

from ramster.errors import RamsterError

_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class DiskError(RamsterError, OSError):
    """The disk store could not prepare or use its file."""


class DiskFull(DiskError):
    """The disk cannot hold the store's budget; refused at open, before any page is taken."""


class Io(Protocol):
    """Positioned I/O on an open file descriptor; called from worker threads only."""

    def pwritev(self, fd: int, buffers: Sequence[bytes], offset: int) -> int:
        """Write the buffers back to back at `offset`; returns bytes written (may be short)."""
        ...

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        """Up to `n` bytes at `offset` (fewer at the end of the file)."""
        ...


class OsIo:
    """The real thing: os.pwritev (or one joined os.pwrite) and os.pread."""

    def pwritev(self, fd: int, buffers: Sequence[bytes], offset: int) -> int:
        """Write the buffers back to back at `offset`; returns bytes written (may be short)."""
        if hasattr(os, "pwritev"):
            return os.pwritev(fd, buffers, offset)
        return os.pwrite(fd, b"".join(buffers), offset)

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        """Up to `n` bytes at `offset` (fewer at the end of the file)."""
        return os.pread(fd, n, offset)


def write_all(io: Io, fd: int, buffers: Sequence[bytes], offset: int) -> None:
    """Write every byte of `buffers` at `offset`, resuming after short writes; OSError if the
    file takes nothing."""
    pending = list(buffers)
    while pending:
        done = io.pwritev(fd, pending, offset)
        if done <= 0:
            raise OSError(errno.EIO, "write made no progress")
        offset += done
        while pending and done >= len(pending[0]):
            done -= len(pending[0])
            pending.pop(0)
        if done:
            pending[0] = pending[0][done:]


def read_exact(io: Io, fd: int, n: int, offset: int) -> bytes:
    """`n` bytes at `offset`, resuming after short reads; fewer only at the end of the file."""
    parts = []
    got = 0
    while got < n:
        part = io.pread(fd, n - got, offset + got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def prepare_file(path: str | os.PathLike[str], size: int) -> int:
    """Create (or truncate) the file at `path` and reserve `size` bytes for it; returns an open
    descriptor. DiskFull if the disk cannot hold it (the file is removed again)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in {errno.EOPNOTSUPP, errno.EINVAL}:
                    raise
                # No way to reserve on this file system: a sparse file, whose late ENOSPC
                # becomes a refused store (write_errors), never a crash.
                os.ftruncate(fd, size)
        else:
            os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if e.errno in _NO_ROOM:
            raise DiskFull(f"{path}: no room for {size} bytes ({e.strerror})") from e
        raise DiskError(f"{path}: cannot prepare the store's file ({e.strerror})") from e
    return fd
