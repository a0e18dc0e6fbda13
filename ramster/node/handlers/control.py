"""The node's control methods: heartbeats, stats, drain and the coordinator's orders
(node.*, coord.*). They act through a `Control`, never the node itself.

node.stats and node.hello [] are read-only and open to programs (the client role); everything
else is for nodes, each acting only as itself: node.hello names the caller's own id and
incarnation, coord.order the caller as its coordinator (Forbidden otherwise, counted by the
server). node.drain and coord.rebalance from a program go through the admin API and its token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from ramster.errors import CapacityError, DuplicateNode, Forbidden, ProtocolError
from ramster.pagestore.owners import LiveTwin, StaleIncarnation, TooManyOwners
from ramster.protocol import (
    COORD_ORDER,
    COORD_REBALANCE,
    DRAIN,
    EXPORT_ADOPT,
    HELLO,
    MAX_AREA,
    STATS,
    arity,
    integer,
    text,
)
from ramster.rpc import ANYONE, Role, RpcServer, caller


class Control(Protocol):
    """What the control methods need of the node."""

    @property
    def node_id(self) -> str:
        """This node's id."""
        ...

    @property
    def incarnation(self) -> str:
        """This process's incarnation."""
        ...

    def twin(self, incarnation: str, reason: str) -> None:
        """Another live process says hello under this node's id, as `incarnation`."""

    def hello_info(self) -> dict[str, Any]:
        """Identity and capacity, as heartbeats carry them."""
        ...

    def stats(self) -> dict[str, Any]:
        """Everything worth knowing about the node."""
        ...

    def start_drain(self) -> None:
        """Take no new pages."""

    def accept_order(self, params: list[object]) -> None:
        """Check and queue an order of the coordinator; ProtocolError when refused."""

    async def adopt_export(self, name: str, size: int, area: int, force: bool = False) -> int:
        """Take an export over (export.adopt); its new term."""
        ...

    async def coordinate_rebalance(self) -> bool:
        """Even out the holders now if this node coordinates (False otherwise)."""
        ...


NoteOwner = Callable[[str, str, float, str | None], object]
"""(owner, incarnation, now, supersedes): an owner spoke; StaleIncarnation if it is an older
run, LiveTwin if a newer one while the older still speaks (unless it names that one as the run
it replaces)."""
EpochOf = Callable[[str], int]
"""owner -> how many times this node reclaimed that owner's pages."""


class ControlService:
    """node.hello, node.stats, node.drain, coord.order and coord.rebalance."""

    def __init__(self, control: Control, note_owner: NoteOwner, epoch_of: EpochOf) -> None:
        self._control = control
        self._note_owner = note_owner
        self._epoch_of = epoch_of

    def register(self, server: RpcServer) -> None:
        """Serve the control methods on `server`."""
        server.register(HELLO, self.hello, roles=ANYONE)
        server.register(STATS, self.stats, roles=ANYONE)
        server.register(DRAIN, self.drain)
        server.register(COORD_ORDER, self.order)
        server.register(COORD_REBALANCE, self.rebalance)
        server.register(EXPORT_ADOPT, self.adopt)

    def hello(self, params: list[object]) -> dict[str, Any]:
        """node.hello [node_id, incarnation(, supersedes)]: the calling node is alive; answer
        who we are. `supersedes` names the run it replaces, which it knows is dead (a restart:
        no twin check). A program calls node.hello [] (it is no owner: nothing is noted)."""
        who = caller().identity
        if who.role is Role.CLIENT:
            if params:
                raise Forbidden("a client names no node in node.hello")
            return self._control.hello_info()
        if len(params) != 3:
            arity(params, 2, "[node_id, incarnation(, supersedes)]")
        peer, inc = text(params[0], "node_id"), text(params[1], "incarnation")
        supersedes = text(params[2], "supersedes") if len(params) == 3 else None
        if (peer, inc) != (who.node_id, who.incarnation):
            raise Forbidden(f"{who} may act only as itself, not as {peer} ({inc})")
        control = self._control
        if peer == control.node_id and inc != control.incarnation:
            reason = (
                f"node id {peer} is in use by a live process (incarnation {control.incarnation})"
            )
            control.twin(inc, reason)
            raise DuplicateNode(reason)
        try:
            self._note_owner(peer, inc, time.monotonic(), supersedes)
        except StaleIncarnation as exc:
            raise ProtocolError(str(exc)) from None
        except LiveTwin as exc:
            raise DuplicateNode(str(exc)) from None
        except TooManyOwners as exc:
            raise CapacityError(str(exc)) from None
        # Its own count of reclaims: an owner sees it rise and counts those copies as lost.
        return {**control.hello_info(), "reclaimed_epoch": self._epoch_of(peer)}

    def stats(self, params: list[object]) -> dict[str, Any]:
        """node.stats []."""
        arity(params, 0, "[]")
        return self._control.stats()

    def drain(self, params: list[object]) -> dict[str, Any]:
        """node.drain []: take no new pages; owners move theirs away."""
        arity(params, 0, "[]")
        self._control.start_drain()
        return self._control.hello_info()

    def order(self, params: list[object]) -> None:
        """coord.order [term, coordinator, ...]: only from the coordinator it names."""
        who = caller().identity
        if len(params) >= 2 and params[1] != who.node_id:
            raise Forbidden(f"{who} may send orders only as itself, not as {params[1]!r}")
        self._control.accept_order(params)

    async def adopt(self, params: list[object]) -> int:
        """export.adopt [name, size, area(, force)]: serve that export from this node (next
        term); without force, refused unless every member answers."""
        if len(params) != 4:
            arity(params, 3, "[name, size, area(, force)]")
        name = text(params[0], "name")
        size = integer(params[1], "size")
        area = integer(params[2], "area", MAX_AREA)
        force = len(params) == 4 and params[3] is True
        try:
            return await self._control.adopt_export(name, size, area, force)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None

    async def rebalance(self, params: list[object]) -> bool:
        """coord.rebalance []: True if this node coordinates and evened the holders out."""
        arity(params, 0, "[]")
        return await self._control.coordinate_rebalance()
