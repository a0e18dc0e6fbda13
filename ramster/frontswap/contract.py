"""The frontswap contract (Documentation/vm/frontswap.txt), with the batch forms it never got.

- A store may be refused (False): the caller keeps the page itself (writes it to its disk).
- A store that returned True loads back byte-identical until overwritten or invalidated.
- A failed overwrite invalidates the old copy: stale data never comes back.
- An exclusive load frees the page as it returns it.
- An ephemeral area (cleancache) may refuse or drop any page at any time: a load may miss
  (None) for a page that was stored, but a page it returns is exactly the newest stored one.
Every implementation (local pool only, or local plus the cluster) keeps exactly this contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypeAlias

from ramster.types import Buffer

PageLike: TypeAlias = Buffer
"""A page as callers hand it in."""
AreaKind: TypeAlias = Literal["persistent", "ephemeral"]
"""persistent: frontswap's pages, kept until invalidated; ephemeral: cleancache's, which may
be dropped at any time (a load may miss), kept only in room no persistent page needs."""


class Frontswap(Protocol):
    """What a swap-like user (NBD export, client, benchmark) sees of a ramster node."""

    @property
    def page_size(self) -> int:
        """Bytes per page."""
        ...

    async def init(self, area: int, kind: AreaKind = "persistent") -> None:
        """Make an area usable (idempotent; a live area keeps its kind)."""

    async def store(self, area: int, offset: int, page: PageLike) -> bool:
        """Keep a page; False when refused (the old copy of the key is gone either way)."""
        ...

    async def load(self, area: int, offset: int, exclusive: bool = False) -> bytes | None:
        """The newest stored page or None if absent; CorruptPage rather than wrong bytes."""
        ...

    async def invalidate_page(self, area: int, offset: int) -> None:
        """Forget one page."""

    async def invalidate_area(self, area: int) -> None:
        """Forget every page of an area; it must be initialised again before new stores."""

    async def store_many(
        self, area: int, offsets: Sequence[int], pages: Sequence[PageLike]
    ) -> list[bool]:
        """`store` for many keys in one pass, as if stored one after another."""
        ...

    async def load_many(
        self, area: int, offsets: Sequence[int], exclusive: bool = False
    ) -> list[bytes | None]:
        """`load` for many keys in one pass."""
        ...

    async def invalidate_many(self, area: int, offsets: Sequence[int]) -> None:
        """`invalidate_page` for many keys in one pass."""
