"""What the simulation checks: the frontswap dict model and the holders' invariants."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ramster.pagestore.index import LEAF_SIZE
from ramster.pagestore.lent import LentPool, PageColumns
from ramster.testing.sim.loop import Proc


class Violation(AssertionError):
    """An invariant broke; the message says which and how."""


@dataclass
class KeyState:
    """What a load of one key may return, and what losses it has lived through."""

    possible: set[bytes | None] = field(default_factory=lambda: {None})
    acked: bool = False
    down_at_ack: frozenset[str] = frozenset()
    crashes_at_ack: int = 0
    degraded: bool = False
    """The owner recorded fewer than R holders for it since it was acknowledged."""


class Model:
    """The dict model of every owner's frontswap, and the cluster's history of losses."""

    def __init__(self, replicas: int, impaired: Callable[[], set[str]]) -> None:
        self.replicas = replicas
        self.impaired = impaired
        """Nodes down, paused, partitioned or slowed right now."""
        self.keys: dict[str, dict[int, KeyState]] = {}
        self.crashes: list[str] = []
        """Nodes that lost their memory or missed spills, in order (see loss_allowed)."""
        self.down: set[str] = set()
        """Nodes crashed and not restarted."""

    def reset_owner(self, owner: str) -> None:
        """A new run of owner: its frontswap starts empty."""
        self.crashes.append(owner)
        self.keys[owner] = {}

    def crashed(self, node: str) -> None:
        """node lost its memory."""
        self.crashes.append(node)
        self.down.add(node)

    def unreachable(self, *nodes: str) -> None:
        """nodes may have missed a spill (paused, partitioned, slow): a page spilled meanwhile
        may have fewer than R copies (degraded placement, invariant 7), so losing it to fewer
        than R crashes is no violation."""
        self.crashes.extend(nodes)

    def restarted(self, node: str) -> None:
        """node runs again (empty)."""
        self.down.discard(node)
        self.reset_owner(node)

    def state(self, owner: str, key: int) -> KeyState:
        """The model of one key."""
        return self.keys.setdefault(owner, {}).setdefault(key, KeyState())

    # -- operations --------------------------------------------------------------------------

    def store_started(self, owner: str, key: int, page: bytes) -> None:
        """A store is on its way: the new page may already be read (and the old one gone)."""
        self.state(owner, key).possible |= {page, None}

    def store_done(self, owner: str, key: int, page: bytes, ok: bool | None) -> None:
        """A store ended: acknowledged (True), refused (False) or unknown (None: it raised)."""
        st = self.state(owner, key)
        if ok is None:
            return  # old, new or nothing, until the next acknowledged store
        if ok:
            st.possible = {page}
            st.acked = True
            st.down_at_ack = frozenset((self.down | self.impaired()) - {owner})
            st.crashes_at_ack = len(self.crashes)
            st.degraded = False
        else:
            st.possible = {None}
            st.acked = False

    def invalidate_started(self, owner: str, key: int) -> None:
        """An invalidate is on its way."""
        self.state(owner, key).possible.add(None)

    def invalidate_done(self, owner: str, key: int) -> None:
        """An invalidate returned: the key is empty."""
        st = self.state(owner, key)
        st.possible = {None}
        st.acked = False

    def invalidate_area_started(self, owner: str) -> None:
        """The owner's whole area is being invalidated."""
        for st in self.keys.get(owner, {}).values():
            st.possible.add(None)

    def invalidate_area_done(self, owner: str) -> None:
        """The owner's area was invalidated: every key is empty."""
        for st in self.keys.get(owner, {}).values():
            st.possible = {None}
            st.acked = False

    def observe_holders(self, owner: str, holders: dict[int, int]) -> None:
        """The owner's records now: holders per remote key of the model's area."""
        keys = self.keys.get(owner, {})
        for key, count in holders.items():
            st = keys.get(key)
            if st is not None and st.acked and count < self.replicas:
                st.degraded = True

    def loss_allowed(self, owner: str, key: int) -> bool:
        """R nodes other than the owner lost their memory since the key was acknowledged (or
        were down then): its copies may all be gone."""
        st = self.state(owner, key)
        if st.degraded:
            return True
        lost = set(st.down_at_ack) | set(self.crashes[st.crashes_at_ack :])
        lost.discard(owner)
        return len(lost) >= self.replicas

    def check_load(
        self, owner: str, key: int, got: bytes | None, error: BaseException | None, strict: bool
    ) -> None:
        """A load's outcome against the model; strict: every fault healed and settled."""
        st = self.state(owner, key)
        if error is not None:
            if (
                strict
                and st.acked
                and None not in st.possible
                and not self.loss_allowed(owner, key)
            ):
                raise Violation(
                    f"{owner} key {key}: acknowledged page unreadable after healing: {error!r}"
                )
            return
        if got is None:
            if None not in st.possible and not self.loss_allowed(owner, key):
                raise Violation(f"{owner} key {key}: acknowledged page loads as empty (None)")
            return
        if got not in st.possible:
            known = sorted(_tag(p) for p in st.possible)
            raise Violation(
                f"{owner} key {key}: load returned {_tag(got)}, expected one of {known}"
            )


def _tag(page: bytes | None) -> str:
    return "None" if page is None else page[:24].split(b"|")[0].decode(errors="replace")


class HolderWatch:
    """Invariant 10 on one holder: no put replaces a held copy with an older version."""

    def __init__(self, name: str, lent: LentPool, failures: list[str]) -> None:
        self.name = name
        self.lent = lent
        self.failures = failures
        self.puts = 0
        original = lent.put

        def put(
            owner: str,
            inc: str,
            batch: PageColumns,
            ephemeral: bool = False,
            *,
            copy: bool = False,
            seq: int | None = None,
        ) -> list[bool]:
            areas, offsets = batch.areas, batch.offsets
            before = self._versions(owner, inc, areas, offsets)
            kept = original(owner, inc, batch, ephemeral, copy=copy, seq=seq)
            after = self._versions(owner, inc, areas, offsets)
            self.puts += 1
            for i, (old, new) in enumerate(zip(before, after, strict=True)):
                if old is not None and new is not None and new < old:
                    self.failures.append(
                        f"invariant 10 on {self.name}: {owner} area {areas[i]} key {offsets[i]} "
                        f"v{old} replaced by older v{new}"
                    )
            return kept

        lent.put = put  # type: ignore[method-assign]

    def _versions(
        self, owner: str, inc: str, areas: Sequence[int], offsets: Sequence[int]
    ) -> list[int | None]:
        out: list[int | None] = []
        for area, offset in zip(areas, offsets, strict=True):
            ident = self.lent._area_id(owner, inc, area, create=False)
            out.append(None if ident is None else self.lent.pool.versions(ident, [offset])[0])
        return out


class ReclaimMeter:
    """Counts a holder's reclaim work (pages freed, and LEAF_SIZE per index leaf a sweep
    scans) as its process's work, so that the loop sees how much one callback did: an area
    drop or a forgotten owner must be freed a bounded step at a time (one pass of a real
    loop through a whole area of millions of pages stalls the holder past dead_after)."""

    def __init__(self, lent: LentPool, proc: Proc, step_pages: int) -> None:
        lent.step_pages = step_pages
        reclaim_step = lent.reclaim_step
        leaf_offsets = lent.pool.leaf_offsets

        def metered_step(max_pages: int | None = None) -> int:
            freed = reclaim_step(max_pages)
            proc.work += freed
            return freed

        def metered_leaf(area: int, first: int) -> Any:
            proc.work += LEAF_SIZE
            return leaf_offsets(area, first)

        lent.reclaim_step = metered_step  # type: ignore[method-assign]
        lent.pool.leaf_offsets = metered_leaf  # type: ignore[method-assign]
