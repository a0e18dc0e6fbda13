"""`ramster.PageCache`: a key-value cache over an ephemeral area, for programs that would reach
for memcached.

A key hashes to a slot of `max_pages` consecutive offsets of the area; its value is split into
pages behind a 24-byte header (magic, value length, a tag of the key, a checksum of the value).
A get loads the slot's pages and returns the value only if the header names this key and the
whole value matches its checksum: a slot taken over by another key, a page the cluster
evicted, or a page left from an older value is a miss, never wrong bytes.

Limits: values up to `max_pages * page_size - 24` bytes; keys up to 250 bytes (as memcached's);
two keys of one slot evict each other (slots are 2^32 / max_pages per area: rare until tens of
millions of keys); a set may be refused (False) or dropped later, as any ephemeral page.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import xxhash

from ramster.client.node import Client, SyncClient

HEADER = struct.Struct("<4sIQQ")
MAGIC = b"RMC1"
MAX_KEY_BYTES = 250
SLOT_SPACE = 1 << 32
"""Offsets of an area (ramster keeps page indices in 32 bits)."""


def _tag(key: bytes) -> int:
    return xxhash.xxh3_64_intdigest(key, seed=0x52414D)


class PageCache:
    """get/set/delete of byte values by byte key on one ephemeral area of a node."""

    def __init__(
        self, client: Client, area: int = 1, max_pages: int = 16, prefetch_pages: int = 2
    ) -> None:
        if not 1 <= max_pages <= 1024:
            raise ValueError(f"max_pages must be within 1..1024, got {max_pages!r}")
        self.client = client
        self.area = area
        self.max_pages = max_pages
        self.prefetch_pages = max(1, min(prefetch_pages, max_pages))
        """Pages a get reads at once: a value that fits in them costs one round trip."""
        self._slots = SLOT_SPACE // max_pages

    @property
    def max_value_bytes(self) -> int:
        """The largest value a set takes."""
        return self.max_pages * self.client.page_size - HEADER.size

    async def open(self) -> None:
        """Make the area an ephemeral one (idempotent)."""
        await self.client.init(self.area, "ephemeral")

    def _first(self, key: bytes) -> int:
        if not 0 < len(key) <= MAX_KEY_BYTES:
            raise ValueError(f"a key is 1 to {MAX_KEY_BYTES} bytes")
        return (xxhash.xxh3_64_intdigest(key) % self._slots) * self.max_pages

    def _pages(self, key: bytes, value: bytes) -> list[bytes]:
        if len(value) > self.max_value_bytes:
            raise ValueError(f"a value is at most {self.max_value_bytes} bytes")
        ps = self.client.page_size
        blob = HEADER.pack(MAGIC, len(value), _tag(key), xxhash.xxh3_64_intdigest(value)) + value
        blob += bytes(-len(blob) % ps)
        return [blob[i : i + ps] for i in range(0, len(blob), ps)]

    async def set(self, key: bytes, value: bytes) -> bool:
        """Keep a value; False if the node refused it (a cache may)."""
        return (await self.set_many([(key, value)]))[0]

    async def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        """Keep values in one call; False for each one refused."""
        firsts = [self._first(key) for key, _ in items]
        winner = {first: i for i, first in enumerate(firsts)}  # of one slot, the last one wins
        offsets: list[int] = []
        pages: list[bytes] = []
        spans: dict[int, tuple[int, int]] = {}
        for first, i in winner.items():
            parts = self._pages(*items[i])
            spans[first] = (len(offsets), len(parts))
            offsets.extend(range(first, first + len(parts)))
            pages.extend(parts)
        kept = await self.client.store_many(self.area, offsets, pages) if offsets else []
        done = {first: all(kept[start : start + n]) for first, (start, n) in spans.items()}
        return [done[first] for first in firsts]

    async def get(self, key: bytes) -> bytes | None:
        """The value, or None on a miss."""
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values in one call (two for values longer than `prefetch_pages`), None for misses."""
        firsts = [self._first(k) for k in keys]
        ahead = self.prefetch_pages
        got = await self.client.load_many(self.area, [f + i for f in firsts for i in range(ahead)])
        heads: list[list[bytes | None]] = [
            got[j * ahead : (j + 1) * ahead] for j in range(len(keys))
        ]
        ps = self.client.page_size
        more: list[int] = []
        wanted: list[tuple[int, int]] = []  # (key index, pages beyond the prefetch)
        for j, (key, pages) in enumerate(zip(keys, heads, strict=True)):
            length = self._length(key, pages[0])
            if length is None:
                heads[j] = []
                continue
            need = -(-(HEADER.size + length) // ps)
            if need > ahead:
                wanted.append((j, need - ahead))
                more.extend(range(firsts[j] + ahead, firsts[j] + need))
            else:
                heads[j] = pages[:need]
        if more:
            rest = await self.client.load_many(self.area, more)
            pos = 0
            for j, n in wanted:
                heads[j] = heads[j] + rest[pos : pos + n]
                pos += n
        return [self._value(key, pages) for key, pages in zip(keys, heads, strict=True)]

    def _length(self, key: bytes, first: bytes | None) -> int | None:
        if first is None:
            return None
        magic, length, tag, _ = HEADER.unpack_from(first)
        if magic != MAGIC or tag != _tag(key) or length > self.max_value_bytes:
            return None
        return int(length)

    def _value(self, key: bytes, pages: list[bytes | None]) -> bytes | None:
        if not pages or any(p is None for p in pages):
            return None
        blob = b"".join(p for p in pages if p is not None)
        _, length, _, digest = HEADER.unpack_from(blob)
        value = blob[HEADER.size : HEADER.size + length]
        if len(value) != length or xxhash.xxh3_64_intdigest(value) != digest:
            return None  # pages of different sets of this key, or of another key's value
        return value

    async def delete(self, key: bytes) -> None:
        """Forget a value (its whole slot)."""
        first = self._first(key)
        await self.client.invalidate_many(self.area, list(range(first, first + self.max_pages)))


class SyncPageCache:
    """A blocking PageCache for scripts, over a SyncClient's private loop."""

    def __init__(self, client: SyncClient, area: int = 1, max_pages: int = 16) -> None:
        self._sync = client
        self._cache = PageCache(client.client, area, max_pages)
        client.run(self._cache.open())

    def get(self, key: bytes) -> bytes | None:
        """The value, or None on a miss."""
        return self._sync.run(self._cache.get(key))

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values, None for misses."""
        return self._sync.run(self._cache.get_many(keys))

    def set(self, key: bytes, value: bytes) -> bool:
        """Keep a value; False if refused."""
        return self._sync.run(self._cache.set(key, value))

    def set_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bool]:
        """Keep values; False for each one refused."""
        return self._sync.run(self._cache.set_many(items))

    def delete(self, key: bytes) -> None:
        """Forget a value."""
        self._sync.run(self._cache.delete(key))
