"""Static peers over the RPC: heartbeats that learn each peer's identity and free capacity, and
the holder calls the remote tier makes (the RPC form of `frontswap.remote.Holders`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ramster.cluster.membership import Membership, MembershipConfig, State, Transition
from ramster.cluster.placement import Candidate
from ramster.errors import DuplicateNode, PeerLost, ProtocolError, RamsterError
from ramster.pagestore.lent import Stored, incarnation_order
from ramster.protocol import (
    COORD_ORDER,
    COORD_REBALANCE,
    DRAIN,
    HELLO,
    HOLD_COPY,
    HOLD_DROP,
    HOLD_DROP_AREA,
    HOLD_GET,
    HOLD_PUT,
    check_hello_answer,
)
from ramster.rpc import Keys, PageBatch, RpcClient, RpcConfig, Secret
from ramster.rpc.pages import flags_from_wire
from ramster.settings import parse_address
from ramster.telemetry.ratelimit import LogLimiter
from ramster.types import Buffer

log = logging.getLogger(__name__)

MAX_PEERS = 256
"""Bound on the peer table: discovery cannot grow it without limit."""


@dataclass(slots=True)
class Peer:
    """What this node knows of one configured peer."""

    address: str
    client: RpcClient
    node_id: str | None = None
    incarnation: str | None = None
    lent_free: int = 0
    lent_budget: int = 0
    alive: bool = False
    last_ok: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    epoch: tuple[str, int] | None = None
    """(its incarnation, how many times it reclaimed this node's pages) as last heard."""
    refused_since: float | None = None
    """When this peer began refusing this node as a duplicate of a live node id."""


class Peers:
    """The peers this node talks to, kept fresh by heartbeats."""

    def __init__(
        self,
        me: str,
        incarnation: str,
        secret: Secret,
        rpc_config: RpcConfig,
        addresses: Sequence[str],
        heartbeat: float,
        dead_after: float,
    ) -> None:
        self.me = me
        self.incarnation = incarnation
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        # A holder that cannot answer a batch within the dead timeout is as good as gone for
        # that batch: never hold a writer longer than that behind a paused or cut-off peer.
        self.call_timeout = dead_after
        self._peers: list[Peer] = []
        for address in addresses:
            host, port = parse_address(address)
            self._peers.append(Peer(address, RpcClient(host, port, secret, rpc_config)))
        self._by_id: dict[str, Peer] = {}
        self._ever: set[str] = set()
        self.membership = Membership(
            MembershipConfig(suspect_after=dead_after / 2, dead_after=dead_after)
        )
        self._secret = secret
        self._rpc_config = rpc_config
        self._tg: asyncio.TaskGroup | None = None
        self.on_restart: Callable[[str, str], None] | None = None
        """Called with (node, old incarnation) when a peer restarted: its copies are gone."""
        self.on_transition: Callable[[Transition], None] | None = None
        """Called with every change of a peer's state (for the event log)."""
        self.changed = asyncio.Event()
        """Set when a peer dies or comes (back) alive; whoever waits on it clears it."""
        self.on_reclaimed: Callable[[str, int], None] | None = None
        """Called with a holder that says it reclaimed this node's pages (a long silence)."""
        self.on_duplicate: Callable[[str], None] | None = None
        """Called when this process turns out to be a second one under a live node id."""
        self.bad_answers = 0
        """Heartbeat answers dropped as malformed."""
        self.duplicates = 0
        """Answers ignored because another live process answers under the same node id."""
        self._log = LogLimiter(log)

    # -- heartbeats ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeat every peer and watch the silence, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for peer in self._peers:
                tg.create_task(self._beat(peer))
            tg.create_task(self._watch())

    def add_peer(self, address: str) -> bool:
        """Start heartbeating a newly discovered address (False if it is known already)."""
        if any(p.address == address for p in self._peers):
            return False
        if len(self._peers) >= MAX_PEERS:
            log.warning("ignoring peer %s: already %d peers", address, MAX_PEERS)
            return False
        host, port = parse_address(address)
        peer = Peer(address, RpcClient(host, port, self._secret, self._rpc_config))
        self._peers.append(peer)
        if self._tg is not None:
            self._tg.create_task(self._beat(peer))
        return True

    async def _beat(self, peer: Peer) -> None:
        while True:
            await self.beat_once(peer)
            await asyncio.sleep(self.heartbeat)

    async def _watch(self) -> None:
        while True:
            # Ticks finer than heartbeats: death is declared within 0.1 s of dead_after.
            await asyncio.sleep(min(0.1, self.heartbeat / 2))
            self._apply(self.membership.tick(time.monotonic()))

    def _apply(self, transitions: list[Transition]) -> None:
        for t in transitions:
            peer = self._by_id.get(t.node)
            address = peer.address if peer else "?"
            if t.new is State.DEAD:
                log.warning("peer %s at %s is dead (%s)", t.node, address, t.reason)
                if t.reason == "restarted" and self.on_restart is not None:
                    self.on_restart(t.node, t.incarnation)
            elif t.new is State.SUSPECT:
                log.info("peer %s at %s is suspect (silent)", t.node, address)
            else:
                log.info("peer %s at %s is alive (%s)", t.node, address, t.reason)
            if peer is not None:
                peer.alive = t.new is State.ALIVE
            if t.new is not State.SUSPECT:
                self.changed.set()
            if self.on_transition is not None:
                self.on_transition(t)

    async def beat_once(self, peer: Peer) -> None:
        """One heartbeat: learn the peer's identity and capacity, or note its silence.

        A malformed answer is counted and dropped (it reads as silence), never fatal.
        """
        try:
            result = await peer.client.call(
                HELLO, [self.me, self.incarnation], timeout=max(self.heartbeat * 2, 0.5)
            )
        except DuplicateNode as exc:
            self._refused_as_duplicate(peer, str(exc))
            return
        except RamsterError:
            return  # silence: the membership's timers decide what it means
        try:
            info = check_hello_answer(result)
        except ProtocolError as exc:
            self.bad_answers += 1
            self._log.warning(
                ("bad answer", peer.address),
                "peer %s sent a malformed heartbeat answer, dropped: %s",
                peer.address,
                exc,
            )
            return
        peer.refused_since = None
        now = time.monotonic()
        node_id, incarnation = info["node"], info["incarnation"]
        if node_id == self.me:
            if peer.node_id is None:
                log.info("peer %s is this node itself; ignoring it", peer.address)
            peer.node_id = node_id
            if incarnation != self.incarnation:
                self._twin(peer, incarnation)
            return
        current = self._by_id.get(node_id)
        if (
            current is not None
            and current is not peer
            and current.incarnation != incarnation
            and now - current.last_ok < self.dead_after
            and incarnation_order(incarnation) > incarnation_order(current.incarnation or "")
        ):
            # Two live processes answer as one node id: the older one stays that node.
            self.duplicates += 1
            self._log.error(
                ("duplicate", node_id),
                "two live processes claim node id %s (at %s and %s); ignoring the newer one at %s",
                node_id,
                current.address,
                peer.address,
                peer.address,
            )
            return
        self._note_epoch(peer, node_id, incarnation, info.get("reclaimed_epoch", 0))
        peer.node_id = node_id
        peer.incarnation = incarnation
        peer.lent_free = info["lent_free"]
        peer.lent_budget = info["lent_budget"]
        peer.info = info
        peer.last_ok = now
        self._by_id[node_id] = peer
        self._ever.add(node_id)
        self._apply(self.membership.heartbeat_ok(node_id, incarnation, now))

    def _note_epoch(self, peer: Peer, node: str, incarnation: str, epoch: int) -> None:
        """A holder's count of reclaims of this node's pages rose: its copies are gone."""
        seen = peer.epoch
        peer.epoch = (incarnation, epoch)
        rose = seen is not None and seen[0] == incarnation and epoch > seen[1]
        if rose and self.on_reclaimed is not None:
            self.on_reclaimed(node, epoch)

    def _twin(self, peer: Peer, incarnation: str) -> None:
        """Another process answered under this node's id."""
        if incarnation_order(incarnation) < incarnation_order(self.incarnation):
            self._fatal(
                f"node id {self.me} is already in use by a live node at {peer.address} "
                f"(incarnation {incarnation}, older than this one)"
            )
        else:
            self._log.error(
                ("twin", peer.address),
                "a newer process at %s runs under this node's id %s; it must stop",
                peer.address,
                self.me,
            )

    def _refused_as_duplicate(self, peer: Peer, reason: str) -> None:
        """A peer refuses this node as a second process under a live node id. A restarted
        node is refused until its old incarnation has been silent for dead_after; refused
        for longer than twice that, this process is the duplicate."""
        now = time.monotonic()
        if peer.refused_since is None:
            peer.refused_since = now
        self._log.warning(("refused as duplicate", peer.address), "%s: %s", peer.address, reason)
        if now - peer.refused_since > 2 * self.dead_after:
            self._fatal(f"{peer.address} keeps refusing this node: {reason}")

    def _fatal(self, reason: str) -> None:
        if self.on_duplicate is not None:
            self.on_duplicate(reason)

    # -- what the remote tier asks -------------------------------------------------------------

    def peers(self) -> list[Peer]:
        """Every configured peer."""
        return list(self._peers)

    def candidates(self) -> list[Candidate]:
        """Live peers (not this node) with the lent capacity they last reported."""
        return [
            Candidate(p.node_id, p.lent_free)
            for p in self._peers
            if p.alive
            and p.node_id is not None
            and p.node_id != self.me
            and not p.info.get("draining")
        ]

    def alive(self) -> set[str]:
        """Peers alive now."""
        return set(self.membership.members(State.ALIVE)) - {self.me}

    def present(self) -> set[str]:
        """Peers not (yet) declared dead: alive or only suspect."""
        return set(self.membership.members()) - set(self.membership.members(State.DEAD)) - {self.me}

    def leaving(self) -> set[str]:
        """Live peers that are draining."""
        alive = self.alive()
        return {p.node_id for p in self._peers if p.node_id in alive and p.info.get("draining")}

    def gone(self) -> set[str]:
        """Peers seen alive once and dead now (silent for longer than dead_after)."""
        return set(self.membership.members(State.DEAD)) - {self.me}

    def all_holders(self) -> list[str]:
        """Every peer ever seen alive."""
        return sorted(self._ever)

    def state_of(self, node: str) -> str:
        """alive, suspect, dead, or unknown (never seen)."""
        state = self.membership.state(node)
        return "unknown" if state is None else state.value

    def _client(self, node: str) -> RpcClient:
        peer = self._by_id.get(node)
        if peer is None:
            raise PeerLost(f"no address known for node {node}")
        return peer.client

    def _spent(self, node: str, nbytes: int) -> None:
        # Until the next heartbeat, assume the peer's room shrank by what we just sent.
        peer = self._by_id.get(node)
        if peer is not None:
            peer.lent_free = max(0, peer.lent_free - nbytes)

    async def put(
        self,
        node: str,
        areas: list[int],
        offsets: list[int],
        versions: list[int],
        checksums: list[int],
        payloads: Sequence[Buffer],
    ) -> list[bool]:
        """hold.put on node."""
        batch = PageBatch(areas, offsets, versions, checksums, payloads)
        return await self.put_for(node, self.me, self.incarnation, batch)

    async def put_for(
        self, node: str, owner: str, incarnation: str, batch: PageBatch
    ) -> list[bool]:
        """hold.put on node for an owner (this node's own pages, or another's it copies)."""
        result = await self._client(node).call(
            HOLD_PUT, [owner, incarnation, batch.to_wire()], timeout=self.call_timeout
        )
        self._spent(node, sum(len(p) for p in batch.payloads))
        return flags_from_wire(result, len(batch.offsets))

    async def copy(
        self,
        source: str,
        target: str,
        areas: list[int],
        offsets: list[int],
        versions: list[int],
        checksums: list[int],
    ) -> tuple[list[bool], int]:
        """hold.copy on source: it verifies its copies and puts them on target."""
        result = await self._client(source).call(
            HOLD_COPY,
            [
                self.me,
                self.incarnation,
                target,
                Keys(areas, offsets).to_wire(),
                versions,
                checksums,
            ],
            timeout=self.call_timeout * 2,  # two hops
        )
        if type(result) is not list or len(result) != 2 or type(result[1]) is not int:
            raise ProtocolError("hold.copy must answer [flags, bytes]")
        self._spent(target, result[1])
        return flags_from_wire(result[0], len(offsets)), result[1]

    async def get(self, node: str, areas: list[int], offsets: list[int]) -> list[Stored | None]:
        """hold.get on node, answers in the order of the keys."""
        result = await self._client(node).call(
            HOLD_GET,
            [self.me, self.incarnation, Keys(areas, offsets).to_wire()],
            timeout=self.call_timeout,
        )
        batch = PageBatch.from_wire(result)
        found = dict(
            zip(
                zip(batch.areas, batch.offsets, strict=True),
                zip(batch.versions, batch.checksums, batch.payloads, strict=True),
                strict=True,
            )
        )
        return [found.get(key) for key in zip(areas, offsets, strict=True)]

    async def drop(
        self, node: str, areas: list[int], offsets: list[int], versions: list[int]
    ) -> None:
        """hold.drop on node (versioned: newer copies stay)."""
        result = await self._client(node).call(
            HOLD_DROP,
            [self.me, self.incarnation, Keys(areas, offsets).to_wire(), versions],
            timeout=self.call_timeout,
        )
        flags_from_wire(result, len(offsets))

    async def drop_area(self, node: str, area: int, max_version: int) -> None:
        """hold.drop_area on node: its pages of the area no newer than max_version."""
        await self._client(node).call(
            HOLD_DROP_AREA,
            [self.me, self.incarnation, area, max_version],
            timeout=self.call_timeout,
        )

    async def order(self, node: str, params: list[object]) -> object:
        """Send the coordinator's order to a node (it only queues it, so answers at once)."""
        timeout = max(self.heartbeat * 2, 0.5)  # a paused owner must not hold up a round
        return await self._client(node).call(COORD_ORDER, params, timeout=timeout)

    async def drain(self, node: str) -> None:
        """Ask a node to drain."""
        await self._client(node).call(DRAIN, [], timeout=self.call_timeout)

    async def rebalance(self, node: str) -> None:
        """Ask the coordinator to even out the holders now."""
        await self._client(node).call(COORD_REBALANCE, [], timeout=self.call_timeout)

    async def close(self) -> None:
        """Close every client."""
        for peer in self._peers:
            await peer.client.close()

    def statistics(self) -> list[dict[str, Any]]:
        """One row per peer."""
        return [
            {
                "address": p.address,
                "node": p.node_id,
                "incarnation": p.incarnation,
                "alive": p.alive,
                "state": (
                    st.value
                    if p.node_id and (st := self.membership.state(p.node_id)) is not None
                    else "unknown"
                ),
                "lent_free": p.lent_free,
                "lent_budget": p.lent_budget,
            }
            for p in self._peers
        ]
