"""Peers over the RPC: heartbeats that learn each peer's identity and free capacity, and the
holder calls the remote tier makes (the RPC form of `frontswap.remote.Holders`).

Static seeds are in the table from the start. Discovered addresses are only hints (see
`hints.py`): at most a few are dialled at once, and one joins the table only when a handshake
from it names a node. A node has one address here: a second address that names a node already
reachable elsewhere (a relay, another interface) is not used for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ramster.cluster.calls import HolderCalls, SpeaksFor
from ramster.cluster.hints import Hints
from ramster.cluster.membership import Membership, MembershipConfig, State, Transition
from ramster.cluster.placement import Candidate
from ramster.errors import DuplicateNode, PeerLost, ProtocolError, RamsterError
from ramster.pagestore.owners import incarnation_order
from ramster.protocol import (
    COORD_ORDER,
    COORD_REBALANCE,
    DRAIN,
    HELLO,
    check_hello_answer,
)
from ramster.rpc import Identity, PageBatch, RpcClient, RpcConfig, Secret
from ramster.settings import parse_address
from ramster.telemetry.ratelimit import LogLimiter
from ramster.types import Incarnation, NodeId

log = logging.getLogger(__name__)

MAX_PEERS = 256
"""Bound on the peer table: discovery cannot grow it without limit."""
MAX_DIALS = 4
"""Discovered addresses dialled at once (static seeds and known peers are not held back)."""


class PeerEvents(Protocol):
    """What this node does when its peers change (`Peers` calls it from its heartbeats)."""

    def peer_restarted(self, node: NodeId, old_incarnation: Incarnation, new: Incarnation) -> None:
        """A peer restarted as `new`: the copies its old incarnation held are gone."""

    def peer_changed(self, transition: Transition) -> None:
        """A peer's state changed (for the event log)."""

    def holder_reclaimed(self, node: NodeId, epoch: int) -> None:
        """A holder says it reclaimed this node's pages (a long silence): its copies are gone."""

    def duplicate(self, reason: str) -> None:
        """This process turned out to be a second one under a live node id: it must stop."""


@dataclass(slots=True)
class Peer:
    """What this node knows of one configured peer."""

    address: str
    client: RpcClient
    node_id: NodeId | None = None
    incarnation: Incarnation | None = None
    lent_free: int = 0
    lent_budget: int = 0
    alive: bool = False
    last_ok: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    epoch: tuple[Incarnation, int] | None = None
    """(its incarnation, how many times it reclaimed this node's pages) as last heard."""
    refused_since: float | None = None
    """When this peer began refusing this node as a duplicate of a live node id."""
    seed: bool = True
    """Configured (kept while it fails), not discovered."""
    alias_of: str | None = None
    """The node this address also reaches, known at another address (not used for it)."""
    task: asyncio.Task[None] | None = None


class Peers(SpeaksFor):
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
        events: PeerEvents,
        max_dials: int = MAX_DIALS,
    ) -> None:
        self.me = me
        self.incarnation = incarnation
        self.identity = Identity.node(me, incarnation)
        self.owner_identity = (me, incarnation)
        """(owner, incarnation) as this node's own hold.* calls name it."""
        self.supersedes: str | None = None
        """The incarnation this run replaces, known dead (its state-dir lock was free)."""
        """Who this node is in every handshake it makes."""
        self.max_dials = max_dials
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        # A holder that cannot answer a batch within the dead timeout is as good as gone for
        # that batch: never hold a writer longer than that behind a paused or cut-off peer.
        self.call_timeout = dead_after
        self.calls = HolderCalls(self._client, self._spent, dead_after)
        self._secret = secret
        self._rpc_config = rpc_config
        self._peers: list[Peer] = [self._new_peer(a) for a in addresses]
        self._by_id: dict[str, Peer] = {}
        self.hints = Hints()
        self._hinted = asyncio.Event()
        self.dialling = 0
        self.most_dialling = 0
        """The most discovered addresses ever dialled at once (at most max_dials)."""
        self._ever: set[NodeId] = set()
        self.membership = Membership(
            MembershipConfig(suspect_after=dead_after / 2, dead_after=dead_after)
        )
        self._tg: asyncio.TaskGroup | None = None
        self._events = events
        self.changed = asyncio.Event()
        """Set when a peer dies or comes (back) alive; whoever waits on it clears it."""
        self.bad_answers = 0
        """Heartbeat answers dropped as malformed."""
        self.duplicates = 0
        """Answers ignored because another live process answers under the same node id."""
        self._log = LogLimiter(log)
        self._closing: set[asyncio.Future[None]] = set()
        """Clients of evicted peers being closed (close() waits for them)."""

    # -- heartbeats ------------------------------------------------------------------------------

    def _new_peer(self, address: str, *, seed: bool = True) -> Peer:
        host, port = parse_address(address)
        client = RpcClient(host, port, self._secret, self._rpc_config, identity=self.identity)
        return Peer(address, client, seed=seed)

    async def run(self) -> None:
        """Heartbeat every peer, dial hints and watch the silence, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for peer in self._peers:
                peer.task = tg.create_task(self._beat(peer))
            tg.create_task(self._watch())
            tg.create_task(self._dial_hints(tg))

    def add_peer(self, address: str) -> bool:
        """A discovered address: a hint to dial, not a peer until a handshake from it names a
        node (False if it is known, pending, or failed recently)."""
        if any(p.address == address for p in self._peers):
            return False
        if not self.hints.offer(address, time.monotonic()):
            return False
        self._hinted.set()
        return True

    async def _dial_hints(self, tg: asyncio.TaskGroup) -> None:
        running: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            self._hinted.set()

        while True:
            await self._hinted.wait()
            self._hinted.clear()
            while len(running) < self.max_dials:
                address = self.hints.take(time.monotonic())
                if address is None:
                    break
                task = tg.create_task(self._try_hint(address))
                running.add(task)
                task.add_done_callback(done)

    async def _try_hint(self, address: str) -> None:
        if any(p.address == address for p in self._peers):
            return
        peer = self._new_peer(address, seed=False)
        self.dialling += 1
        self.most_dialling = max(self.most_dialling, self.dialling)
        try:
            joined = await self.beat_once(peer, join=True)
        finally:
            self.dialling -= 1
        if not joined:
            self.hints.failed(address, time.monotonic())
            await peer.client.close()
            return
        log.info("peer %s at %s joined (discovered)", peer.node_id, address)
        if self._tg is not None:
            peer.task = self._tg.create_task(self._beat(peer))

    def _make_room(self) -> bool:
        """Room for one more peer: evict a never-authenticated one when the table is full."""
        if len(self._peers) < MAX_PEERS:
            return True
        stale = next((p for p in self._peers if p.node_id is None), None)
        if stale is None:
            return False
        log.warning("peer table full: dropping %s (never authenticated)", stale.address)
        self._peers.remove(stale)
        if stale.task is not None:
            stale.task.cancel()
        closing = asyncio.ensure_future(stale.client.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
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
                if t.reason == "restarted":
                    self._events.peer_restarted(t.node, t.incarnation, t.successor)
            elif t.new is State.SUSPECT:
                log.info("peer %s at %s is suspect (silent)", t.node, address)
            else:
                log.info("peer %s at %s is alive (%s)", t.node, address, t.reason)
            if peer is not None:
                peer.alive = t.new is State.ALIVE
            if t.new is not State.SUSPECT:
                self.changed.set()
            self._events.peer_changed(t)

    async def beat_once(self, peer: Peer, *, join: bool = False) -> bool:
        """One heartbeat: learn the peer's identity and capacity, or note its silence.

        With join, peer is a discovered address not in the table yet: it is added only if
        the handshake named a node not known elsewhere. True when the answer was recorded.
        A malformed answer is counted and dropped (it reads as silence), never fatal."""
        try:
            result = await peer.client.call(
                HELLO, self._hello_params, timeout=max(self.heartbeat * 2, 0.5)
            )
        except DuplicateNode as exc:
            self._refused_as_duplicate(peer, str(exc))
            return False
        except RamsterError as exc:
            if isinstance(exc, ProtocolError):
                log.warning("peer %s: %s", peer.address, exc)
            return False  # silence: the membership's timers decide what it means
        try:
            info = _hello_result(result, peer.client.peer_identity)
        except ProtocolError as exc:
            self.bad_answers += 1
            self._log.warning(
                ("bad answer", peer.address),
                "peer %s sent a malformed heartbeat answer, dropped: %s",
                peer.address,
                exc,
            )
            return False
        peer.refused_since = None
        now = time.monotonic()
        node_id, incarnation = NodeId(info["node"]), Incarnation(info["incarnation"])
        if node_id == self.me:
            if peer.node_id is None:
                log.info("peer %s is this node itself; ignoring it", peer.address)
            peer.node_id = node_id
            if incarnation != self.incarnation:
                self._twin(peer, incarnation)
            return False
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
            return False
        if not self._owns_address(peer, info):
            return False
        if join:
            if not self._make_room():
                log.warning("ignoring peer %s: already %d peers", peer.address, MAX_PEERS)
                return False
            self._peers.append(peer)
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
        return True

    def _note_epoch(self, peer: Peer, node: NodeId, incarnation: Incarnation, epoch: int) -> None:
        """A holder's count of reclaims of this node's pages rose: its copies are gone."""
        seen = peer.epoch
        peer.epoch = (incarnation, epoch)
        rose = seen is not None and seen[0] == incarnation and epoch > seen[1]
        if rose:
            self._events.holder_reclaimed(node, epoch)

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
        self._events.duplicate(reason)

    def _owns_address(self, peer: Peer, info: dict[str, Any]) -> bool:
        """Whether peer's address is (now) the one used for the node it reached.

        A node reachable at one address keeps it while it answers there: a second address
        that names it is an alias (a relay, another route) and not recorded. The node's own
        advertised address wins over another; a silent or restarted node moves."""
        node_id = info["node"]
        known = self._by_id.get(node_id)
        if known is None or known is peer:
            peer.alias_of = None
            return True
        fresh = time.monotonic() - known.last_ok < self.dead_after
        same_run = known.incarnation == info["incarnation"]
        advertised = info.get("address")
        prefer_new = advertised == peer.address and advertised != known.address
        if fresh and same_run and not prefer_new:
            peer.alive = False
            if peer.alias_of != node_id:
                log.warning(
                    "%s names node %s, which is reachable at %s: not used for it",
                    peer.address,
                    node_id,
                    known.address,
                )
            peer.alias_of = node_id
            return False
        log.info("node %s: now at %s (was %s)", node_id, peer.address, known.address)
        known.alias_of = node_id
        known.alive = False
        peer.alias_of = None
        return True

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
            and p.alias_of is None
            and p.node_id is not None
            and p.node_id != self.me
            and not p.info.get("draining")
        ]

    def alive(self) -> set[str]:
        """Peers alive now."""
        return set[str](self.membership.members(State.ALIVE)) - {self.me}

    def present(self) -> set[str]:
        """Peers not (yet) declared dead: alive or only suspect."""
        return (
            set[str](self.membership.members())
            - set(self.membership.members(State.DEAD))
            - {self.me}
        )

    def leaving(self) -> set[str]:
        """Live peers that are draining."""
        alive = self.alive()
        return {
            p.node_id
            for p in self._peers
            if p.alias_of is None and p.node_id in alive and p.info.get("draining")
        }

    def gone(self) -> set[str]:
        """Peers seen alive once and dead now (silent for longer than dead_after)."""
        return set[str](self.membership.members(State.DEAD)) - {self.me}

    def all_holders(self) -> list[NodeId]:
        """Every peer ever seen alive."""
        return sorted(self._ever)

    def state_of(self, node: str) -> str:
        """alive, suspect, dead, or unknown (never seen)."""
        state = self.membership.state(NodeId(node))  # never seen (a tombstone): unknown
        return "unknown" if state is None else state.value

    @property
    def _hello_params(self) -> list[object]:
        if self.supersedes is None:
            return [self.me, self.incarnation]
        return [self.me, self.incarnation, self.supersedes]

    def client_of(self, node: str) -> RpcClient:
        """The connection to a node (PeerLost if no address is known)."""
        return self._client(node)

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

    async def put_for(
        self, node: str, owner: str, incarnation: str, batch: PageBatch
    ) -> list[bool]:
        """hold.put_copy on node: another owner's verified copies this holder forwards for
        that owner's hold.copy."""
        return await self.calls.put(node, (owner, incarnation), batch, forwarded=True)

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
        if self._closing:
            await asyncio.wait(self._closing)

    def discovery_statistics(self) -> dict[str, int]:
        """Hints and dials (what discovery has cost)."""
        hints = self.hints.statistics()
        return {
            "hints_pending": hints.pending,
            "hints_offered": hints.offered,
            "hints_dropped": hints.dropped,
            "dials": hints.taken,
            "dial_failures": hints.failed,
            "dialling": self.dialling,
            "most_dialling": self.most_dialling,
            "max_dials": self.max_dials,
            "peers": len(self._peers),
        }

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
                "alias_of": p.alias_of,
            }
            for p in self._peers
        ]


def _hello_result(result: object, session: Identity | None) -> dict[str, Any]:
    """The checked answer of node.hello (every field by schema); it must name the node the
    session authenticated."""
    info = check_hello_answer(result)
    if session is None or (session.node_id, session.incarnation) != (
        info["node"],
        info["incarnation"],
    ):
        raise ProtocolError(f"node.hello names {info['node']}, not the node its session proved")
    return info
