"""The node's wire protocol: method names, their parameter shapes and the scalar checks both
ends share. A leaf: the client, the peers' calls and the node's handlers all import it, and it
imports only the error tree.

Parameters are checked by the handlers (ProtocolError when off, never a crash) before anything
runs; page batches and key lists use `ramster.rpc.pages`. Who may call what is bound to the
session (`ramster.rpc.session`): hold.*, node.drain and coord.* are for nodes only, and a
node acts only as itself (the owner of hold.*, the id of node.hello, the coordinator of
coord.order must be the node its handshake proved; Forbidden otherwise) or for an export
(`export:NAME`, incarnation `t<term>@<node>`, node being itself), fenced by term; programs
(the client role) may call fs.*, node.stats and node.hello [] (no owner noted):

- node.hello      [node_id, incarnation] (nodes), [] (clients) -> {node, incarnation, ...}
- node.stats      []                                          -> {...}
- node.drain      []                                          -> {...}  (stop taking pages)
- hold.put        [owner, incarnation(, "ephemeral"), page batch] -> [kept?]  (CapacityError if
                  none; pages of an ephemeral area say so: the holder may evict them)
- hold.put_copy   [owner, incarnation, page batch]            -> [kept?]  (a holder forwarding
                  another owner's verified copies for that owner's hold.copy; only copies
                  the owner ordered here with hold.expect are kept)
- hold.expect     [owner, incarnation, keys, versions, checksums] -> null  (the owner's order:
                  these copies will be forwarded here)
- hold.get        [owner, incarnation, keys]                  -> page batch of held pages
- hold.drop       [owner, incarnation, keys, versions]        -> [dropped?]
- hold.drop_area  [owner, incarnation, area]                  -> pages dropped
- hold.copy       [owner, incarnation, target, keys, versions, checksums]
                  -> [[kept on target?], bytes sent]  (verified here, then hold.put on target)
- hold.claim      [owner, term, size] -> [taken?, term, server node, size, deleted term]
                  (an export's server takes or keeps its term; term 0 only asks what the
                  holder has seen; the deleted term is that of the export's last deletion)
- hold.inventory  [owner, incarnation, area, start, limit] -> [offsets, versions, checksums]
                  (int64/uint64 little-endian blobs: held keys from `start` on, ascending)
- hold.delete_export [owner, term]            -> pages dropped (the export is gone for good)
- export.adopt    [name, size, area]          -> term  (serve that export from this node now)
- fs.init         [area(, kind)]   kind "persistent" (the default) or "ephemeral"
- fs.store        [area, offsets, pages blob]                 -> [stored?]
- fs.store_encoded [area, offsets, checksums, lengths, blob]  -> [stored?]  (client-compressed)
- fs.load         [area, offsets, exclusive]                  -> [[present?], pages blob]
- fs.load_encoded [area, offsets]             -> [[present?], checksums, lengths, blob]
- fs.invalidate   [area, offsets]
- fs.invalidate_area [area]
- coord.order     [term, coordinator, order, kind, owner, ...] (see cluster.coordinator)
- coord.rebalance []                                          -> coordinating? (even out now)
"""

from __future__ import annotations

from typing import Any

from ramster.errors import ProtocolError

HELLO = "node.hello"
DRAIN = "node.drain"
STATS = "node.stats"
HOLD_PUT = "hold.put"
PERSISTENT = "persistent"
EPHEMERAL = "ephemeral"
AREA_KINDS = (PERSISTENT, EPHEMERAL)
"""What an area may be: frontswap's persistent pages, or cleancache's ephemeral ones."""
HOLD_PUT_COPY = "hold.put_copy"
HOLD_EXPECT = "hold.expect"
HOLD_GET = "hold.get"
HOLD_DROP = "hold.drop"
HOLD_DROP_AREA = "hold.drop_area"
HOLD_COPY = "hold.copy"
HOLD_CLAIM = "hold.claim"
HOLD_INVENTORY = "hold.inventory"
HOLD_DELETE_EXPORT = "hold.delete_export"
EXPORT_ADOPT = "export.adopt"
FS_INIT = "fs.init"
FS_STORE = "fs.store"
FS_STORE_ENCODED = "fs.store_encoded"
FS_LOAD = "fs.load"
FS_LOAD_ENCODED = "fs.load_encoded"
FS_INVALIDATE = "fs.invalidate"
FS_INVALIDATE_AREA = "fs.invalidate_area"
COORD_ORDER = "coord.order"
COORD_REBALANCE = "coord.rebalance"

DEBUG_DAMAGE = "debug.damage"
"""Served only by a node started with --test-hooks (it logs that loudly): corrupts or ages a
held copy, for tests of the read path."""

METHODS = (
    HELLO,
    STATS,
    DRAIN,
    HOLD_PUT,
    HOLD_PUT_COPY,
    HOLD_EXPECT,
    HOLD_GET,
    HOLD_COPY,
    HOLD_DROP,
    HOLD_DROP_AREA,
    HOLD_CLAIM,
    HOLD_INVENTORY,
    HOLD_DELETE_EXPORT,
    EXPORT_ADOPT,
    FS_INIT,
    FS_STORE,
    FS_STORE_ENCODED,
    FS_LOAD,
    FS_LOAD_ENCODED,
    FS_INVALIDATE,
    FS_INVALIDATE_AREA,
    COORD_ORDER,
    COORD_REBALANCE,
)
"""Every method a node serves (debug.damage only with --test-hooks)."""

CLIENT_METHODS = frozenset(
    {
        HELLO,
        STATS,
        FS_INIT,
        FS_STORE,
        FS_STORE_ENCODED,
        FS_LOAD,
        FS_LOAD_ENCODED,
        FS_INVALIDATE,
        FS_INVALIDATE_AREA,
    }
)
"""What a program (the client role) may call: the frontswap contract and read-only node calls."""

MAX_ID_CHARS = 128
"""Node ids, incarnations and targets are short strings."""
MAX_AREA = 65535


def text(obj: object, name: str) -> str:
    """obj as an id string of 1 to MAX_ID_CHARS characters; ProtocolError otherwise."""
    if type(obj) is not str or not 0 < len(obj) <= MAX_ID_CHARS:
        raise ProtocolError(f"{name} must be a string of 1 to {MAX_ID_CHARS} characters")
    return obj


def integer(obj: object, name: str, maximum: int = (1 << 63) - 1) -> int:
    """obj as an int within 0..maximum; ProtocolError otherwise (bools are not ints here)."""
    if type(obj) is not int or not 0 <= obj <= maximum:
        raise ProtocolError(f"{name} must be an integer within 0..{maximum}")
    return obj


def arity(params: list[object], n: int, shape: str) -> None:
    """ProtocolError unless there are exactly n params (shape names them for the error)."""
    if len(params) != n:
        raise ProtocolError(f"expected params {shape}")


MAX_TERM = 1 << 48
"""Terms at or above this are malformed (see cluster.election)."""
MAX_MAP_ENTRIES = 1024
"""Inventories and counter maps in a heartbeat answer: one entry per holder or counter."""

_HELLO_FIELDS: dict[str, tuple[type, ...]] = {
    "node": (str,),
    "incarnation": (str,),
    "cluster": (str,),
    "version": (str,),
    "lent_free": (int,),
    "lent_budget": (int,),
    "lent_pages": (int,),
    "local_used": (int,),
    "local_budget": (int,),
    "local_ephemeral": (int,),
    "lent_used": (int,),
    "lent_ephemeral": (int,),
    "page_size": (int,),
    "draining": (bool,),
    "admin": (str, type(None)),
    "coordinator": (str,),
    "term": (int,),
    "under_replicated": (int,),
    "repairing_pages": (int,),
    "uptime_s": (int, float),
    "reclaimed_epoch": (int,),
}
_HELLO_REQUIRED = ("node", "incarnation", "lent_free", "lent_budget")


def check_hello_answer(obj: object) -> dict[str, Any]:
    """A node.hello answer, every field it has checked by type and range; ProtocolError
    otherwise. Unknown fields are kept (newer peers may add some) but never trusted."""
    if type(obj) is not dict:
        raise ProtocolError("node.hello must answer a map")
    for key in _HELLO_REQUIRED:
        if key not in obj:
            raise ProtocolError(f"node.hello answer lacks {key}")
    for key, kinds in _HELLO_FIELDS.items():
        if key not in obj:
            continue
        value = obj[key]
        if type(value) not in kinds:
            raise ProtocolError(f"node.hello answer: {key} has the wrong type")
        if type(value) is int and not 0 <= value < (MAX_TERM if key == "term" else 1 << 63):
            raise ProtocolError(f"node.hello answer: {key} out of range")
        if type(value) is str and not 0 < len(value) <= 2 * MAX_ID_CHARS + 44:
            raise ProtocolError(f"node.hello answer: {key} is no short name")
    text(obj["node"], "node")
    text(obj["incarnation"], "incarnation")
    for key in ("inventory", "counters", "exports"):
        table = obj.get(key)
        if table is None:
            continue
        if (
            type(table) is not dict
            or len(table) > MAX_MAP_ENTRIES
            or not all(type(k) is str and 0 < len(k) <= 2 * MAX_ID_CHARS + 44 for k in table)
            or not all(type(v) is int and 0 <= v < 1 << 63 for v in table.values())
        ):
            raise ProtocolError(f"node.hello answer: {key} must map names to counts")
    done = obj.get("orders_done")
    if done is not None and (
        type(done) is not list
        or len(done) != 3
        or not all(type(x) is int and 0 <= x < 1 << 63 for x in done)
    ):
        raise ProtocolError("node.hello answer: orders_done must be [term, order, pages]")
    return obj
