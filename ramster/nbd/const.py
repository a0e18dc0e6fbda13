"""NBD protocol numbers (NetworkBlockDevice doc/proto.md) and the server's limits, with why."""

from __future__ import annotations

# -- magic numbers ------------------------------------------------------------------------------
NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT": newstyle greeting and every option header
OPTION_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

# -- handshake flags (server) and client flags --------------------------------------------------
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
CLIENT_FIXED_NEWSTYLE = 1 << 0
CLIENT_NO_ZEROES = 1 << 1
KNOWN_CLIENT_FLAGS = CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES

# -- transmission flags -------------------------------------------------------------------------
FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_ROTATIONAL = 1 << 4
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11

# -- options ------------------------------------------------------------------------------------
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

# -- option replies -----------------------------------------------------------------------------
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_POLICY = (1 << 31) + 2
REP_ERR_INVALID = (1 << 31) + 3
REP_ERR_UNKNOWN = (1 << 31) + 6
REP_ERR_SHUTDOWN = (1 << 31) + 7

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# -- commands and their flags -------------------------------------------------------------------
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_NAMES = {
    CMD_READ: "read",
    CMD_WRITE: "write",
    CMD_DISC: "disc",
    CMD_FLUSH: "flush",
    CMD_TRIM: "trim",
    CMD_CACHE: "cache",
    CMD_WRITE_ZEROES: "write_zeroes",
    CMD_BLOCK_STATUS: "block_status",
}

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_FAST_ZERO = 1 << 4

# -- error values on the wire (the spec fixes these numbers, whatever the host's errno says) ----
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108
ERROR_NAMES = {
    EPERM: "EPERM",
    EIO: "EIO",
    ENOMEM: "ENOMEM",
    EINVAL: "EINVAL",
    ENOSPC: "ENOSPC",
    EOVERFLOW: "EOVERFLOW",
    ENOTSUP: "ENOTSUP",
    ESHUTDOWN: "ESHUTDOWN",
}

# -- sizes --------------------------------------------------------------------------------------
REQUEST_HEADER = 28
OPTION_HEADER = 16
MAX_STRING = 4096
"""The spec's hard limit on a name or message."""
MAX_OPTION_DATA = 16 << 10
"""Largest option payload read: a GO with a 4 KiB name and every info type fits many times over;
anything larger is a client trying to make the server buffer, and is closed."""

MIN_BLOCK = 512
"""Advertised minimum block size: what portable clients align to anyway. The server still
accepts any byte range (read-modify-write below a page), as the spec asks of servers whose
clients did not negotiate block sizes."""
MAX_PAYLOAD = 32 << 20
"""Largest READ or WRITE accepted: the spec's recommended interoperable maximum. A longer READ
gets EINVAL; a longer WRITE gets EINVAL and a hard disconnect, before its payload is buffered."""

MAX_EXPORT_SIZE = 1 << 44
"""16 TiB: 2^32 frontswap offsets of 4 KiB pages, the contract's offset range."""

DEFAULT_PORT = 10809
"""IANA's port for NBD."""
DEFAULT_MAX_CONNECTIONS = 64
"""Swap needs one connection per device (a few with nbd-client -C); more is a misbehaving host."""
DEFAULT_MAX_INFLIGHT = 256
"""Requests decoded but not yet answered, per connection, before the socket is no longer read:
twice the Linux nbd driver's default queue depth (128), so a kernel client never waits on it."""
DEFAULT_MAX_QUEUED_BYTES = 64 << 20
"""Write payload held per connection before reading pauses (two maximum-size writes)."""
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client may take to reach transmission; a silent socket must not hold a slot."""
DRAIN_TIMEOUT = 5.0
"""Seconds close() lets connections finish the requests they already read."""
BATCHED_RANGE = 1 << 20
"""TRIM and WRITE_ZEROES up to this many bytes are batched with the WRITEs around them, page by
page (nbdcopy sends a WRITE_ZEROES per zero block it meets); longer ones go alone, through the
page map, so that their cost follows the pages written rather than the range."""
INVALIDATE_CHUNK = 16384
"""Pages invalidated per call on a large TRIM or WRITE_ZEROES: the loop stays responsive."""
