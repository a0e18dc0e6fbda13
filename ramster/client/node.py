"""`ramster.Client`: the frontswap contract of a running node, over the authenticated RPC.

A client authenticates in the client role: it may store, load and invalidate pages and read
the node's status, never act as a node. The cluster secret or, where the node has one, the
client secret (`load_secret(path, kind=KeyKind.CLIENT)`) both do."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from ramster.errors import ProtocolError
from ramster.frontswap.contract import AreaKind, PageLike
from ramster.pagestore import PoolConfig, checksum, encode, expand
from ramster.protocol import (
    FS_INIT,
    FS_INVALIDATE,
    FS_INVALIDATE_AREA,
    FS_LOAD,
    FS_LOAD_ENCODED,
    FS_STORE_ENCODED,
    HELLO,
    STATS,
)
from ramster.rpc import RpcClient, RpcConfig, Secret
from ramster.rpc.frames import Chunks
from ramster.rpc.loop import new_event_loop
from ramster.rpc.pages import flags_from_wire
from ramster.settings import parse_address

T = TypeVar("T")


class Client:
    """Async client of one node; pages are `page_size` bytes (the node checks it too)."""

    def __init__(
        self,
        address: str,
        secret: Secret,
        config: RpcConfig | None = None,
        page_size: int = 4096,
    ) -> None:
        host, port = parse_address(address)
        self._pool_config = PoolConfig(page_size=page_size)
        self._rpc = RpcClient(host, port, secret, config)

    @property
    def page_size(self) -> int:
        """Bytes per page (as the node is configured)."""
        return self._pool_config.page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        self._pool_config = PoolConfig(page_size=value)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection."""
        await self._rpc.close()

    async def hello(self) -> dict[str, Any]:
        """The node's identity and capacity."""
        result = await self._rpc.call(HELLO, [])
        if type(result) is not dict:
            raise ProtocolError("node.hello must answer a map")
        return result

    async def stats(self) -> dict[str, Any]:
        """Everything the node reports about itself."""
        result = await self._rpc.call(STATS, [])
        if type(result) is not dict:
            raise ProtocolError("node.stats must answer a map")
        return result

    async def init(self, area: int, kind: AreaKind = "persistent") -> None:
        """Make an area usable: persistent (a stored page loads back until invalidated) or
        ephemeral (a cache: the node may drop any page, a load may miss, a hit is exact)."""
        await self._rpc.call(FS_INIT, [area] if kind == "persistent" else [area, kind])

    async def store(self, area: int, offset: int, page: PageLike) -> bool:
        """Store one page; False when refused."""
        return (await self.store_many(area, [offset], [page]))[0]

    async def store_many(
        self, area: int, offsets: Sequence[int], pages: Sequence[PageLike]
    ) -> list[bool]:
        """Store pages in one call; False for each one refused."""
        if len(offsets) != len(pages):
            raise ValueError(f"{len(offsets)} offsets but {len(pages)} pages")
        cfg = self._pool_config
        payloads: list[bytes] = []
        sums: list[int] = []
        for page in pages:
            if len(page) != self.page_size:
                raise ValueError(f"a page must be exactly {self.page_size} bytes")
            data = page if isinstance(page, bytes | bytearray) else bytes(page)
            # Compressing here halves the bytes on the wire and spares the node's one core.
            payloads.append(encode(data, cfg))
            sums.append(checksum(data))
        lengths = [len(p) for p in payloads]
        result = await self._rpc.call(
            FS_STORE_ENCODED, [area, list(offsets), sums, lengths, Chunks(payloads)]
        )
        return flags_from_wire(result, len(offsets))

    async def load(self, area: int, offset: int, exclusive: bool = False) -> bytes | None:
        """One page, or None when it is not stored."""
        return (await self.load_many(area, [offset], exclusive))[0]

    async def load_many(
        self, area: int, offsets: Sequence[int], exclusive: bool = False
    ) -> list[bytes | None]:
        """Pages in one call, None where not stored; every page is verified before it is returned.

        Non-exclusive loads fetch the stored form and expand and check it here (the node's one
        core is spared); a page that fails its check is asked again through the node's own
        verifying path, which tries every holder and raises rather than return bad bytes.
        """
        if exclusive:
            return await self._load_verified(area, offsets, True)
        result = await self._rpc.call(FS_LOAD_ENCODED, [area, list(offsets)])
        if type(result) is not list or len(result) != 4:
            raise ProtocolError("fs.load_encoded must answer [present, checksums, lengths, blob]")
        present = flags_from_wire(result[0], len(offsets))
        sums, lengths, blob = result[1], result[2], result[3]
        count = sum(present)
        if (
            type(sums) is not list
            or type(lengths) is not list
            or len(sums) != count
            or len(lengths) != count
            or type(blob) is not bytes
            or sum(lengths) != len(blob)
        ):
            raise ProtocolError("fs.load_encoded answered inconsistent columns")
        ps = self.page_size
        out: list[bytes | None] = []
        retry: list[int] = []
        view = memoryview(blob)
        pos = k = 0
        for i, here in enumerate(present):
            if not here:
                out.append(None)
                continue
            end = pos + lengths[k]
            page = expand(view[pos:end], ps)
            if checksum(page) != sums[k]:
                retry.append(i)
            out.append(page)
            pos = end
            k += 1
        if retry:
            again = await self._load_verified(area, [offsets[i] for i in retry], False)
            for i, verified in zip(retry, again, strict=True):
                out[i] = verified
        return out

    async def _load_verified(
        self, area: int, offsets: Sequence[int], exclusive: bool
    ) -> list[bytes | None]:
        result = await self._rpc.call(FS_LOAD, [area, list(offsets), exclusive])
        if type(result) is not list or len(result) != 2:
            raise ProtocolError("fs.load must answer [present, pages]")
        present = flags_from_wire(result[0], len(offsets))
        blob = result[1]
        ps = self.page_size
        if type(blob) is not bytes or len(blob) != sum(present) * ps:
            raise ProtocolError("fs.load answered pages of the wrong size")
        out: list[bytes | None] = []
        pos = 0
        for here in present:
            if here:
                out.append(blob[pos : pos + ps])
                pos += ps
            else:
                out.append(None)
        return out

    async def invalidate_page(self, area: int, offset: int) -> None:
        """Forget one page."""
        await self.invalidate_many(area, [offset])

    async def invalidate_many(self, area: int, offsets: Sequence[int]) -> None:
        """Forget pages."""
        await self._rpc.call(FS_INVALIDATE, [area, list(offsets)])

    async def invalidate_area(self, area: int) -> None:
        """Forget an area (on every holder too)."""
        await self._rpc.call(FS_INVALIDATE_AREA, [area])


class SyncClient:
    """A blocking wrapper of Client for scripts: each method runs on a private event loop."""

    def __init__(self, address: str, secret: Secret, page_size: int = 4096) -> None:
        self._loop = new_event_loop()
        self._client = Client(address, secret, page_size=page_size)

    @property
    def client(self) -> Client:
        """The async client behind this one (run its calls with `run`)."""
        return self._client

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the client on this wrapper's loop."""
        return self._loop.run_until_complete(coro)

    _run = run

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and the private loop."""
        if not self._loop.is_closed():
            self._run(self._client.close())
            self._loop.close()

    def stats(self) -> dict[str, Any]:
        """Everything the node reports about itself."""
        return self._run(self._client.stats())

    def init(self, area: int, kind: AreaKind = "persistent") -> None:
        """Make an area usable (see `Client.init`)."""
        self._run(self._client.init(area, kind))

    def store(self, area: int, offset: int, page: PageLike) -> bool:
        """Store one page."""
        return self._run(self._client.store(area, offset, page))

    def store_many(
        self, area: int, offsets: Sequence[int], pages: Sequence[PageLike]
    ) -> list[bool]:
        """Store pages."""
        return self._run(self._client.store_many(area, offsets, pages))

    def load(self, area: int, offset: int, exclusive: bool = False) -> bytes | None:
        """Load one page."""
        return self._run(self._client.load(area, offset, exclusive))

    def load_many(
        self, area: int, offsets: Sequence[int], exclusive: bool = False
    ) -> list[bytes | None]:
        """Load pages."""
        return self._run(self._client.load_many(area, offsets, exclusive))

    def invalidate_many(self, area: int, offsets: Sequence[int]) -> None:
        """Forget pages."""
        self._run(self._client.invalidate_many(area, offsets))

    def invalidate_area(self, area: int) -> None:
        """Forget an area."""
        self._run(self._client.invalidate_area(area))
