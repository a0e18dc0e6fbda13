"""The holder's RPC methods: keeping other owners' pages in the lent pool (hold.*).

A handler sees the lent pool and two callbacks, never the node: `forward` puts a verified
batch on another holder (hold.copy), `refused` counts pages this holder turned away.
Only nodes may call them, and each only as itself: the owner and incarnation a call names must
be the ones its session proved (Forbidden otherwise). The one exception is hold.put_copy, the
second half of an owner's hold.copy: a holder putting that owner's verified copies here. It
can only add copies for the owner's current incarnation (or export term) as this holder already
knows it from the owner itself: it never creates, advances or revives an owner, and, like every
put, never replaces a newer copy (the lent pool enforces both).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from ramster.errors import (
    CapacityError,
    ExportFenced,
    Forbidden,
    InvalidPage,
    PagesReclaimed,
    ProtocolError,
    RamsterError,
    RemoteError,
)
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import (
    INVENTORY_LIMIT,
    Fenced,
    Reclaimed,
    StaleIncarnation,
    TooManyExports,
    TooManyOwners,
    is_export,
    parse_export_incarnation,
)
from ramster.pagestore.verify import copyable, spread
from ramster.protocol import (
    DEBUG_DAMAGE,
    EPHEMERAL,
    HOLD_CLAIM,
    HOLD_COPY,
    HOLD_DELETE_EXPORT,
    HOLD_DROP,
    HOLD_DROP_AREA,
    HOLD_EXPECT,
    HOLD_GET,
    HOLD_INVENTORY,
    HOLD_PUT,
    HOLD_PUT_COPY,
    MAX_AREA,
    MAX_TERM,
    arity,
    integer,
    text,
)
from ramster.rpc import ANYONE, Keys, PageBatch, RpcServer, caller
from ramster.rpc.const import MAX_CHECKSUM, MAX_VERSION
from ramster.rpc.pages import int_list

Forward = Callable[[str, str, str, PageBatch], Awaitable[list[bool]]]
"""(target, owner, incarnation, batch) -> kept flags: hold.put on another holder."""
Refused = Callable[[str, int, str], None]
"""(owner, pages, reason): pages this holder refused to an owner."""


@dataclass(slots=True)
class Owned:
    """Params that name an owner incarnation, plus the rest."""

    owner: str
    incarnation: str
    rest: list[object]


def _owned(n: int, shape: str) -> Callable[[list[object]], Owned]:
    def decode(params: list[object]) -> Owned:
        arity(params, n, shape)
        return Owned(text(params[0], "owner"), text(params[1], "incarnation"), list(params[2:]))

    return decode


def _put_params(params: list[object]) -> Owned:
    """hold.put [owner, incarnation(, "ephemeral")(, seq), batch] (the batch last: its blob goes
    out without a copy; seq: the owner's call sequence, see `LentPool.drop`), as an Owned
    whose rest is [ephemeral, seq or None, batch]."""
    if len(params) not in (3, 4, 5):
        raise ProtocolError('expected params [owner, incarnation(, "ephemeral")(, seq), batch]')
    flags = params[2:-1]
    ephemeral = bool(flags) and flags[0] == EPHEMERAL
    if ephemeral:
        flags = flags[1:]
    if len(flags) > 1 or (flags and type(flags[0]) is not int):
        raise ProtocolError(f'hold.put takes "{EPHEMERAL}" and a call sequence before its batch')
    seq = integer(flags[0], "seq") if flags else None
    return Owned(
        text(params[0], "owner"), text(params[1], "incarnation"), [ephemeral, seq, params[-1]]
    )


def _expect_params(params: list[object]) -> Owned:
    """hold.expect [owner, incarnation, keys, versions, checksums(, seq)]."""
    if len(params) not in (5, 6):
        raise ProtocolError(
            "expected params [owner, incarnation, keys, versions, checksums(, seq)]"
        )
    rest = [*params[2:5], integer(params[5], "seq") if len(params) == 6 else None]
    return Owned(text(params[0], "owner"), text(params[1], "incarnation"), rest)


def _drop_params(params: list[object]) -> Owned:
    """hold.drop [owner, incarnation, keys, versions(, seq)]."""
    if len(params) not in (4, 5):
        raise ProtocolError("expected params [owner, incarnation, keys, versions(, seq)]")
    rest = [*params[2:4], integer(params[4], "seq") if len(params) == 5 else None]
    return Owned(text(params[0], "owner"), text(params[1], "incarnation"), rest)


def _as_itself(req: Owned) -> None:
    """Forbidden unless the call names the owner its session authenticated as, or an export
    served (by the incarnation it names) by that node: the term then decides (fencing)."""
    who = caller().identity
    if is_export(req.owner):
        with _refusals():
            _, node = parse_export_incarnation(req.incarnation)
        if node == who.node_id:
            return
    elif req.owner == who.node_id and req.incarnation == who.incarnation:
        return
    raise Forbidden(f"{who} may act only as itself, not as {req.owner} ({req.incarnation})")


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The lent pool's refusals as the errors a caller gets over the wire."""
    try:
        yield
    except StaleIncarnation as exc:
        raise ProtocolError(str(exc)) from None
    except Reclaimed as exc:
        raise PagesReclaimed(str(exc)) from None
    except Fenced as exc:
        raise ExportFenced(str(exc)) from None
    except (TooManyExports, TooManyOwners) as exc:
        raise CapacityError(str(exc)) from None
    except (InvalidPage, ValueError) as exc:
        raise ProtocolError(str(exc)) from None


class HolderService:
    """hold.put, hold.get, hold.copy, hold.drop and hold.drop_area over one lent pool."""

    def __init__(
        self,
        node_id: str,
        lent: LentPool,
        forward: Forward,
        refused: Refused,
        *,
        test_hooks: bool = False,
    ) -> None:
        self.node_id = node_id
        self.test_hooks = test_hooks
        """Serve debug.damage (corrupts held copies): only when the node was told to."""
        self.lent = lent
        self._forward = forward
        self._refused = refused
        self.copies_refused = 0
        """Copies a hold.copy asked for that this holder did not have, or had stale or bad."""

    def register(self, server: RpcServer) -> None:
        """Serve the hold.* methods (and debug.damage with the test hooks) on `server`."""
        server.register(HOLD_PUT, self.put, decode=_put_params)
        server.register(
            HOLD_PUT_COPY, self.put_copy, decode=_owned(3, "[owner, incarnation, batch]")
        )
        server.register(HOLD_GET, self.get, decode=_owned(3, "[owner, incarnation, keys]"))
        server.register(HOLD_EXPECT, self.expect, decode=_expect_params)
        server.register(
            HOLD_COPY,
            self.copy,
            decode=_owned(6, "[owner, incarnation, target, keys, versions, checksums]"),
        )
        server.register(HOLD_DROP, self.drop, decode=_drop_params)
        server.register(
            HOLD_DROP_AREA,
            self.drop_area,
            decode=_owned(4, "[owner, incarnation, area, max_version]"),
        )
        server.register(HOLD_CLAIM, self.claim)
        server.register(
            HOLD_INVENTORY,
            self.inventory,
            decode=_owned(5, "[owner, incarnation, area, start, limit]"),
        )
        server.register(HOLD_DELETE_EXPORT, self.delete_export)
        if self.test_hooks:
            server.register(DEBUG_DAMAGE, self.damage, roles=ANYONE)

    def put(self, req: Owned) -> list[bool]:
        """Keep pages of the calling owner; CapacityError when none fits."""
        _as_itself(req)
        return self._keep(req)

    def put_copy(self, req: Owned) -> list[bool]:
        """Keep verified copies of another owner's pages that a holder forwards for its
        hold.copy (it only adds copies; the owner checks version and checksum on every read)."""
        if req.owner == caller().identity.node_id:
            raise Forbidden("an owner stores its own pages with hold.put")
        return self._keep(req, copy=True)

    def _keep(self, req: Owned, *, copy: bool = False) -> list[bool]:
        batch = PageBatch.from_wire(req.rest[-1])
        if not len(batch):
            raise ProtocolError("an empty page batch")
        # hold.put: [ephemeral, seq, batch]; hold.put_copy: [batch] (never ephemeral, no seq).
        ephemeral = bool(req.rest[0]) if len(req.rest) == 3 else False
        seq = req.rest[1] if len(req.rest) == 3 else None
        assert seq is None or type(seq) is int
        lent = self.lent
        order_before = lent.refused_for_order
        try:
            with _refusals():
                ok = lent.put(
                    req.owner,
                    req.incarnation,
                    batch,
                    ephemeral,
                    copy=copy,
                    seq=seq,
                )
        except (ProtocolError, ExportFenced) as exc:
            reason = "fenced" if isinstance(exc, ExportFenced) else "refused"
            self._refused(req.owner, len(batch.offsets), reason)
            raise
        out_of_order = lent.refused_for_order - order_before
        if out_of_order:
            self._refused(req.owner, out_of_order, "newer held, or not ordered")
        refused = ok.count(False) - out_of_order
        if refused:
            self._refused(req.owner, refused, "lent pool full" if not lent.draining else "draining")
        if refused and not any(ok):
            raise CapacityError(f"{self.node_id}: the lent pool is full")
        return ok

    def expect(self, req: Owned) -> None:
        """The owner's order: these copies of its pages will be forwarded here (hold.put_copy
        keeps nothing else)."""
        _as_itself(req)
        keys = Keys.from_wire(req.rest[0])
        n = len(keys)
        versions = int_list(req.rest[1], "versions", MAX_VERSION, n)
        sums = int_list(req.rest[2], "checksums", MAX_CHECKSUM, n)
        seq = req.rest[3]
        assert seq is None or type(seq) is int
        with _refusals():
            self.lent.expect(
                req.owner, req.incarnation, keys.areas, keys.offsets, versions, sums, seq
            )

    def get(self, req: Owned) -> list[object]:
        """The held pages among the keys, as a page batch."""
        _as_itself(req)
        keys = Keys.from_wire(req.rest[0])
        with _refusals():
            held = self.lent.get(req.owner, req.incarnation, keys.areas, keys.offsets)
        if held and None not in held:
            versions, sums, payloads = map(list, zip(*held, strict=True))
            return PageBatch(keys.areas, keys.offsets, versions, sums, payloads).to_wire()
        idx = [i for i, item in enumerate(held) if item is not None]
        found = [item for item in held if item is not None]
        return PageBatch.with_keys(
            keys.take(idx), [f[0] for f in found], [f[1] for f in found], [f[2] for f in found]
        ).to_wire()

    async def copy(self, req: Owned) -> list[object]:
        """Verify held copies against the owner's versions and checksums; put them on target."""
        _as_itself(req)
        target = text(req.rest[0], "target")
        keys = Keys.from_wire(req.rest[1])
        n = len(keys)
        versions = int_list(req.rest[2], "versions", MAX_VERSION, n)
        sums = int_list(req.rest[3], "checksums", MAX_CHECKSUM, n)
        if target == self.node_id:
            raise ProtocolError("hold.copy onto the holder itself")
        with _refusals():
            held = self.lent.get(req.owner, req.incarnation, keys.areas, keys.offsets, told=False)
        good, payloads = copyable(held, versions, sums, self.lent.pool.config.page_size)
        self.copies_refused += n - len(good)
        if not good:
            return [[False] * n, 0]
        batch = PageBatch.with_keys(
            keys.take(good), [versions[i] for i in good], [sums[i] for i in good], payloads
        )
        try:
            kept = await self._forward(target, req.owner, req.incarnation, batch)
        except RamsterError as exc:
            raise RemoteError(f"{self.node_id} could not put on {target}: {exc}") from None
        return list(spread(n, good, kept, payloads))

    def drop(self, req: Owned) -> list[bool]:
        """Forget copies no newer than the versions named."""
        _as_itself(req)
        keys = Keys.from_wire(req.rest[0])
        versions = int_list(req.rest[1], "versions", MAX_VERSION, None)
        if len(versions) != len(keys):
            raise ProtocolError("one version per key")
        seq = req.rest[2]
        assert seq is None or type(seq) is int
        with _refusals():
            return self.lent.drop(
                req.owner, req.incarnation, keys.areas, keys.offsets, versions, seq
            )

    def drop_area(self, req: Owned) -> int:
        """Forget the pages of one area of an owner no newer than max_version."""
        _as_itself(req)
        area = integer(req.rest[0], "area", MAX_AREA)
        max_version = integer(req.rest[1], "max_version", MAX_VERSION)
        with _refusals():
            return self.lent.drop_area(req.owner, req.incarnation, area, max_version)

    def claim(self, params: list[object]) -> list[object]:
        """hold.claim [owner, term, size]: the calling node takes (or keeps) an export's term;
        [taken?, term, server, size, deleted term] as this holder now knows them."""
        arity(params, 3, "[owner, term, size]")
        owner = text(params[0], "owner")
        if not is_export(owner):
            raise ProtocolError("hold.claim is for exports (export:NAME)")
        term = integer(params[1], "term", MAX_TERM)
        size = integer(params[2], "size")
        with _refusals():
            taken, known = self.lent.claim(owner, term, caller().identity.node_id, size)
        return [taken, known.term, known.node, known.size, self.lent.terms.deleted_term(owner)]

    def inventory(self, req: Owned) -> list[object]:
        """The keys of an export's area held here from `start` on: offsets, versions, checksums
        as little-endian blobs (int64, uint64, uint64), ascending."""
        _as_itself(req)
        if not is_export(req.owner):
            raise ProtocolError("hold.inventory is for exports (export:NAME)")
        area = integer(req.rest[0], "area", MAX_AREA)
        start = integer(req.rest[1], "start")
        limit = integer(req.rest[2], "limit", INVENTORY_LIMIT)
        with _refusals():
            offs, versions, sums = self.lent.inventory(
                req.owner, req.incarnation, area, start, limit
            )
        return [
            offs.astype("<i8").tobytes(),
            versions.astype("<u8").tobytes(),
            sums.astype("<u8").tobytes(),
        ]

    def delete_export(self, params: list[object]) -> int:
        """hold.delete_export [owner, term]: forget an export's pages for good."""
        arity(params, 2, "[owner, term]")
        owner = text(params[0], "owner")
        if not is_export(owner):
            raise ProtocolError("hold.delete_export is for exports (export:NAME)")
        term = integer(params[1], "term", MAX_TERM)
        with _refusals():
            return self.lent.delete_export(owner, term, caller().identity.node_id)

    def damage(self, params: list[object]) -> None:
        """debug.damage [owner, area, offset, stale]: corrupt or age a held copy (tests only)."""
        arity(params, 4, "[owner, area, offset, stale]")
        self.lent.damage_for_test(
            text(params[0], "owner"),
            integer(params[1], "area", MAX_AREA),
            integer(params[2], "offset"),
            params[3] is True,
        )
