"""A dict-backed PageService: the model holder for tests and the RPC benchmark (not a pool)."""

from __future__ import annotations

from ramster.rpc.pages import Keys, PageBatch
from ramster.types import Buffer


class DictPageStore:
    """Keeps every page it is given, keyed by (area, offset); newer versions win."""

    def __init__(self) -> None:
        self.pages: dict[tuple[int, int], tuple[int, int, bytes]] = {}

    def put_pages(self, batch: PageBatch) -> list[bool]:
        """Keep each page unless a newer version is held (an equal one is a retried store)."""
        pages = self.pages
        kept: list[bool] = []
        for area, offset, version, checksum, payload in zip(
            batch.areas, batch.offsets, batch.versions, batch.checksums, batch.payloads, strict=True
        ):
            key = (area, offset)
            held = pages.get(key)
            if held is not None and held[0] > version:
                kept.append(False)
                continue
            # A real holder copies too (into its pool); a slice would pin the whole frame.
            pages[key] = (version, checksum, bytes(payload))
            kept.append(True)
        return kept

    def get_pages(self, keys: Keys) -> PageBatch:
        """The held pages among keys, in the order asked."""
        pages = self.pages
        areas: list[int] = []
        offsets: list[int] = []
        versions: list[int] = []
        checksums: list[int] = []
        payloads: list[Buffer] = []
        for key in zip(keys.areas, keys.offsets, strict=True):
            held = pages.get(key)
            if held is None:
                continue
            areas.append(key[0])
            offsets.append(key[1])
            versions.append(held[0])
            checksums.append(held[1])
            payloads.append(held[2])
        return PageBatch(areas, offsets, versions, checksums, payloads)

    def drop_pages(self, keys: Keys) -> list[bool]:
        """Forget the keys; True where a page was held."""
        pages = self.pages
        return [
            pages.pop(key, None) is not None for key in zip(keys.areas, keys.offsets, strict=True)
        ]
