"""A server resuming an export under the same term another server took meanwhile yields it
(third review, finding 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ramster.errors import ExportTaken
from ramster.nbd import const, manifest
from ramster.nbd.config import REPLICATED, ExportSpec
from ramster.nbd.pagemap import PageMap
from ramster.node.config import NodeConfig
from ramster.node.export_rebuild import DATA_AREA, MANIFEST_AREA
from ramster.node.node import Node
from ramster.pagestore import PoolConfig, checksum, encode
from ramster.pagestore.lent import LentPool
from ramster.rpc import Secret
from ramster.rpc.pages import PageBatch

pytestmark = pytest.mark.asyncio
SECRET = Secret(b"resume-tie-secret-0123456789abcdef")
PS = 4096
OWNER = "export:x"


def _config(tmp: Path, name: str, peers: tuple[str, ...] = ()) -> NodeConfig:
    (tmp / name).mkdir(exist_ok=True)
    return NodeConfig(
        node_id=name,
        listen="127.0.0.1:0",
        state_dir=tmp / name,
        local_budget=4 << 20,
        lent_budget=16 << 20,
        peers=peers,
        admin_listen=None,
    )


def _hold(lent: LentPool, term: int, node: str, block: bytes, version: int) -> None:
    """What a server of `term` left on a holder: block 0 and the manifest page marking it."""
    inc = f"t{term}@{node}"
    written = PageMap()
    written.add([0])
    meta = manifest.encode(written, 0)
    for area, page, v in ((DATA_AREA, block, version), (MANIFEST_AREA, meta, version + 1)):
        stored = encode(page, PoolConfig())
        assert lent.put(OWNER, inc, PageBatch([area], [0], [v], [checksum(page)], [stored])) == [
            True
        ]


async def test_a_resumed_server_yields_an_export_moved_away_under_the_same_term(
    tmp_path: Path,
) -> None:
    """s served x (term 1, holder h: block 0 = "a"). s restarted: _attempt wrote term 2 to
    its record (serving) and s died before any holder heard it. x was moved to X with
    --force (s, its server, was dead: a server holds no copies, so nothing is lost by not
    hearing it): X took max(1, 0) + 1 = term 2 too, and acknowledged block 0 = "b", stored
    on k. Now s starts again while k is away: another node's claim of the term s recorded
    means x was moved away (s would otherwise hear only its record's holders, not k, take
    term 3 and serve block 0 as "a", the bytes X's acknowledged write replaced)."""
    (tmp_path / "s").mkdir()
    record = {"name": "x", "size": 1 << 20, "term": 2, "created": True, "serving": True}
    (tmp_path / "s" / "exports.json").write_text(
        json.dumps({"exports": [{**record, "holders": ["h"]}]})
    )
    h = Node(_config(tmp_path, "h"), SECRET)
    await h.start()
    # h: s's term-1 life; X took term 2 (claimed on every live node: h too).
    assert h.lent.claim(OWNER, 1, "s", 1 << 20)[0]
    _hold(h.lent, 1, "s", b"a" * PS, (1 << 40) + 1)
    assert h.lent.claim(OWNER, 2, "X", 1 << 20)[0]
    # k (away now) holds X's acknowledged overwrite of block 0.
    k = LentPool(PoolConfig(budget_bytes=16 << 20))
    assert k.claim(OWNER, 2, "X", 1 << 20)[0]
    _hold(k, 2, "X", b"b" * PS, (2 << 40) + 1)
    s = Node(_config(tmp_path, "s", (h.address, "127.0.0.1:9")), SECRET)  # k: unreachable
    await s.start()
    try:
        export = s.exports.build(ExportSpec("x", 1 << 20, 31, REPLICATED), const.MAX_PAYLOAD)
        with pytest.raises(ExportTaken, match="moved away"):
            await export.open()
    finally:
        await s.close()
        await h.close()
