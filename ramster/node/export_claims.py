"""An export's terms across the cluster: asking who serves it, taking the next term, its size,
and deleting it (telling the members that missed a deletion again once they are alive)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ramster.cluster.calls import ClaimAnswer
from ramster.cluster.exports import export_owner
from ramster.cluster.peers import Peers
from ramster.errors import ExportFenced, ExportTaken, RamsterError
from ramster.node.export_records import ExportRecords
from ramster.node.export_served import TermTie, claim_answers
from ramster.pagestore.lent import LentPool
from ramster.pagestore.owners import ExportClaim

log = logging.getLogger(__name__)

DELETE_RETRY = 2.0
"""Seconds between attempts to tell members that missed an export's deletion."""
MAX_UNDELETED = 1024
"""Deletions remembered to tell again (the oldest is left to the holders' export_grace)."""


class ExportClaims:
    """Claims of export terms on every live member and on this node's own lent pool."""

    def __init__(
        self,
        peers: Peers,
        lent: LentPool,
        records: ExportRecords,
        events: Callable[[str, str, str, int], object],
    ) -> None:
        self.peers = peers
        self.lent = lent
        self.records = records
        self._event = events
        self.undeleted: dict[str, tuple[int, set[str]]] = {}
        """Deleted exports (owner) -> (the deletion's term, members that did not confirm it):
        told again once they are alive (`DELETE_RETRY`), not left to `export_grace`."""

    async def ask(self, name: str, nodes: list[str]) -> dict[str, ClaimAnswer]:
        """What the nodes that answer know of the export (a claim at term 0 only asks)."""
        owner = export_owner(name)
        return await claim_answers(nodes, lambda n: self.peers.calls.claim(n, owner, 0, 0))

    def here(self, name: str) -> ExportClaim:
        """What this node's own lent pool knows of the export."""
        return self.lent.claim(export_owner(name), 0, self.peers.me, 0)[1]

    async def next_term(self, name: str, size: int) -> int:
        """Take the next term of an export on every live peer (to fence its server and delete
        it); ExportTaken if one refuses."""
        nodes = sorted(self.peers.alive())
        asked = await self.ask(name, nodes)
        record = self.records.get(name)
        term = max(
            [a.term for a in asked.values()] + [self.here(name).term, record.term if record else 0]
        )
        term += 1
        self.records.update(name, size, term=term, serving=False)
        await self.take(name, term, size, nodes)
        return term

    async def take(
        self, name: str, term: int, size: int, nodes: list[str]
    ) -> dict[str, ClaimAnswer]:
        """Claim `term` on the nodes and here; the answers (ExportTaken if any refused,
        TermTie if one knows the same term by another node)."""
        owner = export_owner(name)
        taken = await claim_answers(nodes, lambda n: self.peers.calls.claim(n, owner, term, size))
        ok, claim = self.lent.claim(owner, term, self.peers.me, size)
        if not ok:
            raise (TermTie if claim.term == term else ExportTaken)(
                f"export {name}: term {claim.term} by {claim.node} is newer"
            )
        for node, answer in taken.items():
            if not answer.taken:
                raise (TermTie if answer.term == term else ExportTaken)(
                    f"export {name}: {node} knows term {answer.term} by {answer.node}, "
                    f"newer than {term}"
                )
        return taken

    async def known_size(self, name: str) -> int:
        """The export's size as the members (this node's own lent pool and record too) know it."""
        answers = await self.ask(name, sorted(self.peers.alive()))
        record = self.records.get(name)
        # This node's own lent pool may be the only holder left (a two-node cluster).
        size = max(
            [a.size for a in answers.values()]
            + [self.here(name).size, record.size if record else 0]
        )
        if not size:
            raise ExportTaken(f"export {name}: no holder knows its size (give --size)")
        return size

    async def delete(self, name: str) -> int:
        """Forget an export cluster-wide (its server retired here, if it was): fence every
        server by a newer term, drop every copy; pages dropped."""
        term = await self.next_term(name, 0)
        owner = export_owner(name)
        # This node's own lent pool too: it may hold copies of a server before it.
        dropped = self.lent.delete_export(owner, term, self.peers.me)
        missed = set[str](self.peers.membership.members()) - {self.peers.me}
        for node in sorted(self.peers.alive()):
            try:
                dropped += await self.peers.calls.delete_export(node, owner, term)
                missed.discard(node)
            except RamsterError as exc:
                log.warning("export %s: %s did not delete its copies: %s", name, node, exc)
        if missed:
            self.undeleted.pop(owner, None)
            self.undeleted[owner] = (term, missed)
            while len(self.undeleted) > MAX_UNDELETED:
                self.undeleted.pop(next(iter(self.undeleted)))
        # Deleted: a later export of that name starts blank; its term is kept (never reused).
        self.records.update(name, 0, serving=False, created=False, holders=())
        self._event("export-deleted", name, f"{dropped} pages dropped", logging.WARNING)
        return dropped

    async def retry_deletes(self) -> int:
        """Tell the members that missed a deletion (down, cut off or failing then) once they
        are alive; pages they dropped. One that knows a newer life of the export (fenced) keeps
        that: its copies of the deleted life are below the new term's floor."""
        dropped = 0
        alive = self.peers.alive()
        for owner, (term, missed) in list(self.undeleted.items()):
            for node in sorted(missed & alive):
                try:
                    dropped += await self.peers.calls.delete_export(node, owner, term)
                except ExportFenced:
                    pass
                except RamsterError as exc:
                    log.info("export %s: %s did not delete its copies yet: %s", owner, node, exc)
                    continue
                missed.discard(node)
            if not missed:
                self.undeleted.pop(owner, None)
        return dropped
