"""One error tree for ramster, with stdlib-compatible bases so callers can catch what they know."""

from __future__ import annotations

import re


class RamsterError(Exception):
    """Root of every error ramster raises on purpose."""

    retriable: bool = False
    """True when the same call may succeed if simply tried again later."""


class InvalidPage(RamsterError, ValueError):
    """A caller passed a malformed page, key or area; nothing was changed."""


class CorruptPage(RamsterError):
    """A stored copy failed its checksum or version check; it is never returned."""

    def __init__(self, message: str, *, area: int, offset: int) -> None:
        super().__init__(message)
        self.area = area
        self.offset = offset


class RpcError(RamsterError):
    """A call to a peer failed; subclasses say how. `code` is its number on the wire."""

    code: int = 1


class ProtocolError(RpcError, ValueError):
    """Bytes or a message broke the wire protocol (framing, msgpack, schema); never retriable."""

    code = 2


class VersionMismatch(ProtocolError):
    """The peer speaks another protocol version; the handshake was refused."""

    code = 3


class AuthError(RpcError, PermissionError):
    """The handshake failed: wrong secret, replayed transcript or another cluster's name."""

    code = 4


class PeerTimeout(RpcError, TimeoutError):
    """No answer from the peer within the call's timeout; the peer may still have acted."""

    code = 5
    retriable = True


class PeerLost(RpcError, ConnectionError):
    """The connection to the peer is gone (or could not be made); pending calls fail with this."""

    code = 6
    retriable = True


class Busy(RpcError):
    """The peer refused the call or connection because it is at its concurrency limit."""

    code = 7
    retriable = True


class RemoteError(RpcError):
    """The peer reported an error that has no more specific class."""

    code = 8


class NoSuchMethod(RemoteError):
    """The peer has no handler for the called method."""

    code = 9


class CapacityError(RemoteError):
    """The peer has no room for the pages it was asked to keep; another holder may have."""

    code = 10
    retriable = True


class PagesReclaimed(RemoteError):
    """The holder reclaimed this owner incarnation's pages (it was silent for longer than the
    owner grace): every copy that owner had there is gone; it must count them as lost."""

    code = 20

    @property
    def epoch(self) -> int:
        """Which reclaim of this owner's pages the holder means (its count, from 1), as the
        message names it; 0 if it names none."""
        found = re.search(r"\(epoch (\d+)\)", str(self))
        return int(found.group(1)) if found else 0


class DuplicateNode(RemoteError):
    """Another live process already runs under this node id; the newer one must stop."""

    code = 21


class ExportFenced(RemoteError):
    """The holder has seen a newer term of this export (another server took it over): the
    caller no longer serves it, and nothing it sends for it lands."""

    code = 22


class ExportTaken(RemoteError):
    """An export cannot be served here: another server holds a newer claim, it is served
    here already, or this node serves no NBD (sent as a RemoteError)."""


class ExportPending(ExportTaken):
    """A takeover took the export's term (its old server is fenced) but does not serve yet: a
    node that may hold newer copies has not answered; it serves as soon as that node does
    (the message says which nodes)."""

    code = 30


class ExportDoesNotFit(ExportTaken):
    """A new export was refused because what the cluster can hold for it now (its live
    holders' budgets over R) is smaller than its size, and the operator asked for a refusal
    (the node's `refuse_oversized_exports`, or the export's `must-fit`). Nothing was created:
    no record, no term, no holder told. Advisory: capacity may change a moment later."""


class Forbidden(RemoteError, PermissionError):
    """The authenticated peer may not make this call: its role does not allow the method, or
    the call names an identity other than the one its session proved."""

    code = 11


class IntegrityError(ProtocolError):
    """A sealed frame failed to open (modified, reordered, replayed or injected); the
    connection that carried it is closed."""

    code = 12


class PageUnavailable(RamsterError, LookupError):
    """A spilled page could not be read back from any of its holders (all gone or all bad)."""

    retriable = True

    def __init__(self, message: str, *, area: int, offset: int) -> None:
        super().__init__(message)
        self.area = area
        self.offset = offset


class NbdError(RamsterError):
    """Something went wrong serving an NBD export."""


class NbdProtocolError(NbdError, ValueError):
    """An NBD client broke the protocol (bad magic, oversized request or option, unknown flags);
    its connection is closed, other clients are unaffected."""


class ConfigError(RamsterError, ValueError):
    """A setting that cannot work, caught at start with a message saying what to change."""
