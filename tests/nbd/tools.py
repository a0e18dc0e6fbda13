"""Running the real NBD clients (qemu-io, nbdinfo, nbdcopy, fio, nbd-client) from async tests.

The server under test runs in the test's event loop, so tools run as asyncio subprocesses:
a blocking subprocess.run would stall the server it talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from dataclasses import dataclass
from typing import Any

from tests.conftest import need_tool

TOOL_TIMEOUT = 60.0

HINTS = {
    "qemu-io": "apt-get install qemu-utils",
    "qemu-img": "apt-get install qemu-utils",
    "nbdinfo": "apt-get install libnbd-bin",
    "nbdcopy": "apt-get install libnbd-bin",
    "fio": "apt-get install fio",
    "nbd-client": "apt-get install nbd-client",
    "nbdkit": "apt-get install nbdkit",
}


def need(name: str) -> str:
    """The tool's path (nbd-client lives in /usr/sbin, often not on a user's PATH); skip, or
    fail under RAMSTER_REQUIRE_ALL=1, when it is not installed."""
    return (
        shutil.which(name)
        or shutil.which(name, path="/usr/sbin:/sbin")
        or need_tool(name, HINTS[name])
    )


@dataclass(frozen=True)
class Ran:
    """A finished tool run."""

    returncode: int
    output: str


async def tool(*args: str, within: float = TOOL_TIMEOUT) -> Ran:
    """Run a tool to completion (killed after `within` seconds); stdout and stderr together."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(within):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return Ran(proc.returncode or 0, out.decode(errors="replace"))


def fio_json(output: str) -> dict[str, Any]:
    """fio's JSON report (the nbd engine prints a line before it)."""
    report: dict[str, Any] = json.loads(output[output.index("{") :])
    return report


class QemuIo:
    """An interactive qemu-io holding one NBD connection open between commands."""

    PROMPT = b"qemu-io> "

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def open(cls, uri: str) -> QemuIo:
        """Connect to the export (returns once qemu-io is ready for commands)."""
        proc = await asyncio.create_subprocess_exec(
            need("qemu-io"),
            "-f",
            "raw",
            uri,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        io = cls(proc)
        await io._until_prompt()
        return io

    async def _until_prompt(self) -> str:
        assert self.proc.stdout is not None
        out = b""
        async with asyncio.timeout(TOOL_TIMEOUT):
            while not out.endswith(self.PROMPT):
                chunk = await self.proc.stdout.read(65536)
                if not chunk:
                    raise ConnectionError(f"qemu-io ended: {out.decode(errors='replace')}")
                out += chunk
        return out[: -len(self.PROMPT)].decode(errors="replace")

    async def run(self, command: str) -> str:
        """One command's output."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._until_prompt()

    async def close(self) -> None:
        """quit, and wait for the process."""
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(b"quit\n")
            await self.proc.stdin.drain()
        async with asyncio.timeout(TOOL_TIMEOUT):
            await self.proc.wait()
