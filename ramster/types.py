"""Identifiers shared by every layer; NewTypes keep them apart in signatures."""

from typing import NewType, TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview
"""Bytes-like values: pages, payloads, frames."""

Area = NewType("Area", int)
"""frontswap's swap `type`: an independent page space (one per NBD export)."""

Offset = NewType("Offset", int)
"""Page index inside an area."""

Version = NewType("Version", int)
"""The owner's store counter for a key; a newer version always wins."""

NodeId = NewType("NodeId", str)
"""Stable identity of a node (kept in its state directory)."""

Incarnation = NewType("Incarnation", str)
"""One run of a node (a new one at every start); ordered by `pagestore.owners.incarnation_order`."""

Tombstone = NewType("Tombstone", str)
"""`node~incarnation`: where a holder's gone incarnation stood in the holder sets an owner keeps
(its copies are gone); neither a NodeId nor an Incarnation."""
