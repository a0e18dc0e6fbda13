"""How a page is kept: its checksum, the same-filled test, lz4, and the stored form a payload
takes everywhere (the owner's pool, the wire, a holder's lent pool)."""

from __future__ import annotations

import lz4.block
import xxhash

from ramster.pagestore.config import PoolConfig

EMPTY, SAME, LZ4, RAW, REMOTE = 0, 1, 2, 3, 4
"""Slot kinds: free, same-filled (8-byte pattern in `handle`), lz4 blob, raw blob, and a page
that lives on remote holders only (`handle` is the caller's holder-set number)."""


def checksum(page: bytes | bytearray | memoryview) -> int:
    """The checksum every copy of a page carries: xxh3-64 of its uncompressed bytes."""
    return int(xxhash.xxh3_64_intdigest(page))


def stored_kind(length: int, page_size: int) -> int:
    """How a stored payload is encoded, from its length: 8 bytes is a same-filled pattern, a
    whole page is raw, anything else is an lz4 block (never 8 bytes or a whole page long)."""
    if length == 8:
        return SAME
    if length == page_size:
        return RAW
    return LZ4


def expand(payload: bytes | bytearray | memoryview, page_size: int) -> bytes:
    """The page a stored payload stands for (checksum not verified here)."""
    kind = stored_kind(len(payload), page_size)
    if kind == SAME:
        return bytes(payload) * (page_size // 8)
    if kind == RAW:
        return bytes(payload)
    try:
        page: bytes = lz4.block.decompress(payload, uncompressed_size=page_size)
    except lz4.block.LZ4BlockError:
        return b""
    return page


def encode(page: bytes | bytearray, config: PoolConfig) -> bytes:
    """A page in stored form, as the pool would keep it: pattern, lz4 block or raw page."""
    word = bytes(page[:8])
    if page[8:16] == word and page[8:] == page[:-8]:
        return word
    packed: bytes = lz4.block.compress(page, store_size=False)
    return packed if len(packed) <= config.compress_limit else bytes(page)
