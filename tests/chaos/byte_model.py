"""A byte model of an NBD export, the writers that feed it and the reader that checks it.

Every write puts recognisable bytes in one block: a header naming the block and a cluster-wide
write counter, then a filler drawn from that counter. A write the server acknowledged is the
block's expected content from then on; one that failed or whose connection broke is uncertain
(its bytes or the block's earlier ones are both right) until the next acknowledged write of
that block. A read of a block gets one verdict: right, EIO, zeros, older (an earlier write of
that block), or other bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ramster.nbd import const
from ramster.testing.wait import wait_until
from tests.nbd.client import RawNbd, go_data, option, request

BLOCK = 4096
MAGIC = b"RMSTBLK\0"
HEADER = struct.Struct(">8sQQ")
"""magic, block number, write counter."""
READ_BLOCKS = 64
"""Blocks per READ when checking (256 KiB): one error re-reads that range block by block."""
OP_TIMEOUT = 25.0
"""Seconds one NBD request may take: longer than an RPC call timeout (10 s) plus the
detection of a dead holder, so that a slow answer is not mistaken for a lost one."""
CONNECT_TIMEOUT = 5.0
ERROR_PAUSE = 0.02
"""Seconds a lane waits after an error answer: a refusing server is not hammered."""

RIGHT, EIO, UNSURE_EIO, ZEROS, OLDER, OTHER = (
    "right",
    "eio",
    "eio after an unanswered write",
    "zeros",
    "older",
    "other",
)
WRONG = (ZEROS, OLDER, OTHER)
"""Never right. EIO is right only where a test allows it; UNSURE_EIO always is (a write that
failed may have invalidated the block's old copy, and then the block is unreadable)."""


def content(block: int, counter: int) -> bytes:
    """The bytes of write number `counter` to `block`."""
    head = HEADER.pack(MAGIC, block, counter)
    filler = random.Random(counter).randbytes(64)
    return head + (filler * (BLOCK // 64))[: BLOCK - len(head)]


def counter_of(data: bytes, block: int) -> int | None:
    """The write counter in a block's bytes, None unless they are a write of this block."""
    magic, number, counter = HEADER.unpack_from(data)
    if magic != MAGIC or number != block or data != content(block, counter):
        return None
    return int(counter)


@dataclass
class ByteModel:
    """What each block of the export may read as."""

    blocks: int
    acked: dict[int, bytes] = field(default_factory=dict)
    """The last acknowledged write of each block."""
    maybe: dict[int, list[bytes]] = field(default_factory=dict)
    """Writes sent since the block's last acknowledged one whose outcome is unknown."""
    counter: int = 0
    acks: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, server) of every acknowledged write."""
    acked_at: dict[int, float] = field(default_factory=dict)
    """Monotonic time of each block's last acknowledged write."""
    errors: Counter[str] = field(default_factory=Counter)
    """Writes not acknowledged, by why (EIO, broken, timeout, ...)."""

    def begin(self, block: int) -> bytes:
        """The bytes of a new write of `block`, uncertain until it is answered."""
        self.counter += 1
        data = content(block, self.counter)
        self.maybe.setdefault(block, []).append(data)
        return data

    def ack(self, block: int, data: bytes, server: str) -> None:
        """The server acknowledged this write: it is what the block holds now."""
        self.acked[block] = data
        self.maybe.pop(block, None)
        now = time.monotonic()
        self.acks.append((now, server))
        self.acked_at[block] = now

    def fail(self, why: str) -> None:
        """A write was not acknowledged (its bytes stay uncertain)."""
        self.errors[why] += 1

    def acks_by(self, server: str, after: float) -> int:
        """Writes `server` acknowledged after monotonic time `after`."""
        return sum(1 for t, s in self.acks if s == server and t > after)

    def verdict(self, block: int, got: bytes | int) -> str:
        """How a read of `block` that returned `got` (bytes or an NBD error) compares."""
        if isinstance(got, int):
            return UNSURE_EIO if self.maybe.get(block) else EIO
        expected = self.acked.get(block)
        if got == (expected if expected is not None else bytes(BLOCK)):
            return RIGHT
        if got in self.maybe.get(block, ()):
            return RIGHT
        if got == bytes(BLOCK):
            return ZEROS
        counter = counter_of(got, block)
        if counter is not None and expected is not None:
            newest = counter_of(expected, block)
            if newest is not None and counter < newest:
                return OLDER
        return OTHER

    def written(self) -> int:
        """Blocks with an acknowledged write."""
        return len(self.acked)


@dataclass
class Check:
    """The verdicts of one read of every block."""

    what: str
    verdicts: Counter[str] = field(default_factory=Counter)
    wrong: list[tuple[int, str]] = field(default_factory=list)
    """(block, verdict) of the first wrong blocks (for the failure message)."""
    wrong_blocks: list[int] = field(default_factory=list, repr=False)
    """Every block read wrong (EIO included)."""

    def add(self, block: int, verdict: str) -> None:
        self.verdicts[verdict] += 1
        if verdict in (*WRONG, EIO):
            self.wrong_blocks.append(block)
        if verdict in WRONG and len(self.wrong) < 8:
            self.wrong.append((block, verdict))

    def bad(self, allow_eio: bool) -> int:
        """Blocks read wrong (EIO too, unless allowed)."""
        return sum(self.verdicts[v] for v in WRONG) + (0 if allow_eio else self.verdicts[EIO])

    def __str__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items()))
        return f"{self.what}: {counts}; first wrong (block, verdict): {self.wrong}"


class Refused(Exception):
    """The server took no NBD connection for the export (not listening, or no such export)."""


async def open_export(host: str, port: int, name: str) -> RawNbd:
    """A connection in transmission on export `name`; Refused when the server will not serve."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            nbd = await RawNbd.connect(port, host)
            try:
                answer = await _go(nbd, name)
            except BaseException:
                await nbd.close()
                raise
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        raise Refused(f"{host}:{port}: {exc!r}") from exc
    if answer != const.REP_ACK:
        await nbd.close()
        raise Refused(f"{host}:{port}: NBD_OPT_GO answered {answer:#x}")
    return nbd


async def _go(nbd: RawNbd, name: str) -> int:
    """Greeting and NBD_OPT_GO: the final reply type (REP_ACK when the export is served)."""
    await nbd.greeting()
    await nbd.send(option(const.OPT_GO, go_data(name)))
    while True:
        _, kind, data = await nbd.option_reply()
        if kind != const.REP_INFO:
            return kind
        (info,) = struct.unpack(">H", data[:2])
        if info == const.INFO_EXPORT:
            nbd.size, nbd.flags = struct.unpack(">QH", data[2:12])


async def check_all(model: ByteModel, host: str, port: int, name: str, what: str) -> Check:
    """Read every block of the export once and judge it; Refused if no connection is served
    (or the server closes it midway)."""
    check = Check(what)
    nbd = await open_export(host, port, name)
    try:
        for first in range(0, model.blocks, READ_BLOCKS):
            count = min(READ_BLOCKS, model.blocks - first)
            got = await _read(nbd, first, count)
            if isinstance(got, bytes):
                for i in range(count):
                    block = first + i
                    check.add(block, model.verdict(block, got[i * BLOCK : (i + 1) * BLOCK]))
                continue
            for block in range(first, first + count):
                check.add(block, model.verdict(block, await _read(nbd, block, 1)))
    finally:
        await nbd.close()
    return check


async def _request(nbd: RawNbd, header: bytes, payload: bytes = b"") -> int:
    """Send one request and read its simple reply's header (RawNbd's own reads give up after
    10 s, shorter than a write may rightly take here); the error number."""
    await nbd.send(header + payload)
    magic, error, _ = struct.unpack(">IIQ", await nbd.reader.readexactly(16))
    if magic != const.SIMPLE_REPLY_MAGIC:
        raise ConnectionError(f"bad reply magic {magic:#x}")
    return int(error)


async def _read(nbd: RawNbd, block: int, count: int) -> bytes | int:
    try:
        async with asyncio.timeout(OP_TIMEOUT):
            error = await _request(nbd, request(const.CMD_READ, block * BLOCK, count * BLOCK))
            return error or await nbd.reader.readexactly(count * BLOCK)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        raise Refused(f"read of block {block} broke: {exc!r}") from exc


@dataclass
class Writers:
    """`lanes` connections writing random blocks (lane k owns the blocks b with b % lanes == k,
    so that no two writes of one block are ever in flight at once) to whichever server
    `target()` names, reconnecting when a connection breaks."""

    model: ByteModel
    target: Callable[[], tuple[str, str, int]]
    """(server node id, host, NBD port)."""
    name: str
    seed: int
    lanes: int = 4
    _go: asyncio.Event = field(default_factory=asyncio.Event)
    _parked: set[int] = field(default_factory=set)
    _stop: bool = False

    async def run(self) -> None:
        """Write until stop(); owns its lanes."""
        self._go.set()
        async with asyncio.TaskGroup() as tg:
            for lane in range(self.lanes):
                tg.create_task(self._lane(lane, random.Random(self.seed * 1000 + lane)))

    async def pause(self, within: float = OP_TIMEOUT + 5) -> None:
        """Stop sending and wait until no write is in flight (reads then see a still export)."""
        self._go.clear()
        await wait_until(lambda: len(self._parked) >= self.lanes, within, "writers parked")

    def resume(self) -> None:
        """Write again."""
        self._go.set()

    def stop(self) -> None:
        """End run() (at the lanes' next turn)."""
        self._stop = True
        self._go.set()

    async def wait_acks(self, more: int, within: float) -> bool:
        """Whether `more` further writes were acknowledged within `within` seconds."""
        goal = len(self.model.acks) + more
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: len(self.model.acks) >= goal, within, "acknowledgements")
        return len(self.model.acks) >= goal

    async def _lane(self, lane: int, rng: random.Random) -> None:
        blocks = range(lane, self.model.blocks, self.lanes)
        nbd: RawNbd | None = None
        server = ""
        handle = 0
        try:
            while not self._stop:
                if not self._go.is_set():
                    self._parked.add(lane)
                    await self._go.wait()
                    self._parked.discard(lane)
                    continue
                if nbd is None:
                    server, host, port = self.target()
                    try:
                        nbd = await open_export(host, port, self.name)
                    except Refused:
                        await asyncio.sleep(0.1)
                        continue
                block = rng.choice(blocks)
                data = self.model.begin(block)
                handle += 1
                try:
                    async with asyncio.timeout(OP_TIMEOUT):
                        error = await _request(
                            nbd, request(const.CMD_WRITE, block * BLOCK, BLOCK, handle), data
                        )
                except TimeoutError:
                    self.model.fail("timeout")
                except (OSError, asyncio.IncompleteReadError):
                    self.model.fail("broken")
                else:
                    if error == 0:
                        self.model.ack(block, data, server)
                    else:
                        self.model.fail(const.ERROR_NAMES.get(error, str(error)))
                        await asyncio.sleep(ERROR_PAUSE)
                    continue
                # A request interrupted midway poisons its connection: open a new one.
                await nbd.close()
                nbd = None
        finally:
            self._parked.add(lane)
            if nbd is not None:
                await nbd.close()
