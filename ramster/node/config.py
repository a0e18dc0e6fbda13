"""The node's configuration: one frozen, validated object from flags, RAMSTER_* variables and an
optional TOML file (flags win over variables, variables over the file)."""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramster.settings import Kind, load_settings, parse_address

if TYPE_CHECKING:
    from ramster.nbd.config import NbdConfig
    from ramster.rpc import RpcConfig, Secret

CLIENT_SECRET_ENV = "RAMSTER_CLIENT_SECRET"
"""The client secret itself, when no client secret file is given."""


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/ramster, else ~/.local/state/ramster."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ramster"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs to start; sizes in bytes, times in seconds."""

    node_id: str | None = None
    """Stable identity; generated once and kept in state_dir when not given."""
    cluster: str = "ramster"
    secret_file: Path | None = None
    """File holding the cluster secret; else $RAMSTER_CLUSTER_SECRET."""
    client_secret_file: Path | None = None
    """File holding a second secret for programs: it lets them use the frontswap calls and read
    node.stats, never act as a node; else $RAMSTER_CLIENT_SECRET; else programs need the
    cluster secret."""
    encrypt: bool = True
    """Encrypt every RPC frame after the handshake. False: integrity only (frames in the clear,
    still authenticated and checked), for a trusted network; a peer that wants encryption
    still gets it."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """This node's TLS certificate chain and key (PEM): the RPC runs inside TLS."""
    tls_ca: Path | None = None
    """CA bundle (PEM) peers' certificates must chain to; with it, TLS is mutual: a peer
    without a certificate from this CA is refused before the handshake."""
    tls_client_auth: bool = True
    """With tls_ca: require client certificates (False: programs need only the CA to verify
    the node, and prove the secret as always)."""
    listen: str = "127.0.0.1:7070"
    """RPC address (host:port; port 0 picks a free one)."""
    local_budget: int = 256 << 20
    """RAM for this node's own pages (compressed), in bytes."""
    lent_budget: int = 256 << 20
    """RAM offered to other nodes' pages, in bytes."""
    replicas: int = 2
    """R: remote holders per spilled page."""
    high_watermark: float = 0.85
    """Share of the local budget above which the spiller moves cold pages out."""
    low_watermark: float = 0.70
    """Share of the local budget below which the spiller stops."""
    peers: tuple[str, ...] = ()
    """Static peers, host:port each."""
    state_dir: Path = field(default_factory=default_state_dir)
    page_size: int = 4096
    heartbeat: float = 0.5
    """Seconds between heartbeats to each peer."""
    dead_after: float = 2.5
    """Seconds without an answer after which a peer is treated as gone."""
    mdns_interface: str | None = None
    """Announce and browse with mDNS on this interface address (e.g. 127.0.0.1) or "all";
    None: no multicast, static peers only."""
    max_dials: int = 4
    """Addresses found by discovery dialled at once (each is only a hint until a handshake
    from it names a node); static peers and known ones are never held back."""
    owner_grace: float = 300.0
    """Seconds a silent owner's pages are kept before they are reclaimed (survives partitions)."""
    log_level: str = "info"
    advertise: str | None = None
    """Host (name or address) others reach this node at, as shown to operators; default: the
    listen host, or this host's own address when listening on 0.0.0.0."""
    admin_listen: str | None = "127.0.0.1:7171"
    """The HTTP admin API and dashboard (host:port; port 0 picks one; None or "off": none).
    A non-loopback address needs an admin token."""
    admin_token_file: Path | None = None
    """File holding the admin API's bearer token; else $RAMSTER_ADMIN_TOKEN; else no token
    (mutating calls refused)."""
    nbd: str | None = None
    """Serve NBD exports of this node's frontswap on this address (host:port); None: no NBD."""
    nbd_exports: tuple[str, ...] = ()
    """NBD exports, NAME:SIZE[:AREA][:local|replicated][:must-fit] each (sizes in bytes or with
    K, M, G, T suffixes; replicated by default: the export survives this node; must-fit: refused
    at creation unless the cluster can hold it)."""
    export_cache: int = 64 << 20
    """Bytes of hot pages each replicated export keeps on its serving node too (compressed; 0:
    none): reads of them need no holder. Its index costs about 64 bytes a block besides."""
    export_grace: float = 3600.0
    """Seconds a holder keeps the pages of an export whose server it does not hear from (0:
    until `ramster export delete`); a node's own pages use owner_grace."""
    refuse_oversized_exports: bool = False
    """Refuse to create a replicated export larger than what the cluster can hold for it (its
    live holders' lent budgets over R, as this node knows them when it would create it):
    nothing is created, an export-refused event says why. False: created and served with an
    export-oversized warning. An export's own `must-fit` asks the same of it alone."""
    nbd_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Client addresses or networks allowed to use the NBD exports."""
    nbd_swap_safety: bool = True
    """With NBD: mlockall, oom_score_adj -1000 and PR_SET_IO_FLUSHER where the OS allows them."""
    admin_read_token: bool | None = None
    """Require the admin token for reads too (everything but /v1/health and the dashboard's
    files); None: yes when the admin API binds a non-loopback address."""
    test_hooks: bool = False
    """Serve debug.damage, which corrupts held copies: for tests only, logged as a warning."""

    def __post_init__(self) -> None:
        parse_address(self.listen)
        for peer in self.peers:
            parse_address(peer)
        if not 0 < len(self.cluster) <= 64:
            raise ValueError("cluster must be a name of 1 to 64 characters")
        if self.node_id is not None and not 0 < len(self.node_id) <= 64:
            raise ValueError("node id must be 1 to 64 characters")
        if self.local_budget < 0 or self.lent_budget < 0:
            raise ValueError("budgets cannot be negative")
        if not 1 <= self.max_dials <= 64:
            raise ValueError(f"max_dials must be within 1..64, got {self.max_dials}")
        if not 1 <= self.replicas <= 8:
            raise ValueError(f"replicas must be within 1..8, got {self.replicas}")
        if not 0 < self.low_watermark < self.high_watermark <= 1:
            raise ValueError(
                "watermarks must satisfy 0 < low < high <= 1, "
                f"got low={self.low_watermark} high={self.high_watermark}"
            )
        if self.export_cache < 0:
            raise ValueError("export_cache cannot be negative")
        if self.export_grace < 0:
            raise ValueError("export_grace cannot be negative")
        if self.owner_grace <= self.dead_after:
            raise ValueError("owner_grace must be longer than dead_after")
        if not 0 < self.heartbeat < self.dead_after:
            raise ValueError("heartbeat must be positive and shorter than dead_after")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError(f"log level must be debug, info, warning or error: {self.log_level}")
        if self.admin_listen is not None:
            parse_address(self.admin_listen)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("a node with tls_ca needs its own tls_cert and tls_key")
        if self.nbd is not None:
            self.nbd_config()
        elif self.nbd_exports:
            raise ValueError("NBD exports need an NBD address (--nbd HOST:PORT)")

    def nbd_config(self) -> NbdConfig:
        """The NBD server's settings (validated); ValueError when `nbd` is not set."""
        from ramster.nbd.config import REPLICATED, NbdConfig, parse_exports

        if self.nbd is None:
            raise ValueError("no NBD address configured")
        return NbdConfig(
            exports=parse_exports(self.nbd_exports, REPLICATED),
            allow_no_exports=True,
            listen=self.nbd,
            allow=self.nbd_allow,
            swap_safety=self.nbd_swap_safety,
        )

    def admin_token(self, env: Mapping[str, str] | None = None) -> str | None:
        """The admin token from admin_token_file, else $RAMSTER_ADMIN_TOKEN; None if neither."""
        if self.admin_token_file is not None:
            token = self.admin_token_file.read_text().strip()
            if not token:
                raise ValueError(f"{self.admin_token_file} is empty: no admin token in it")
            return token
        token = (os.environ if env is None else env).get("RAMSTER_ADMIN_TOKEN", "").strip()
        return token or None

    def client_secret(self, env: Mapping[str, str] | None = None) -> Secret | None:
        """The client secret from client_secret_file, else $RAMSTER_CLIENT_SECRET, else None."""
        from ramster.rpc import KeyKind, Secret, load_secret

        if self.client_secret_file is not None:
            return load_secret(self.client_secret_file, kind=KeyKind.CLIENT)
        text = (os.environ if env is None else env).get(CLIENT_SECRET_ENV, "")
        return Secret(text.encode(), KeyKind.CLIENT) if text else None

    def rpc_config(self) -> RpcConfig:
        """The RPC settings of this node's server and of its calls to peers."""
        from ramster.rpc import RpcConfig

        return RpcConfig(
            cluster=self.cluster,
            encrypt=self.encrypt,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            tls_ca=self.tls_ca,
            tls_client_auth=self.tls_client_auth,
        )

    @property
    def host(self) -> str:
        """Host part of `listen`."""
        return parse_address(self.listen)[0]

    @property
    def port(self) -> int:
        """Port part of `listen`."""
        return parse_address(self.listen)[1]


KINDS: dict[str, Kind] = {
    **dict.fromkeys(("local_budget", "lent_budget", "page_size", "export_cache"), Kind.SIZE),
    **dict.fromkeys(
        (
            "high_watermark",
            "low_watermark",
            "heartbeat",
            "dead_after",
            "owner_grace",
            "export_grace",
        ),
        Kind.FLOAT,
    ),
    **dict.fromkeys(("replicas", "max_dials"), Kind.INT),
    **dict.fromkeys(
        (
            "secret_file",
            "client_secret_file",
            "state_dir",
            "admin_token_file",
            "tls_cert",
            "tls_key",
            "tls_ca",
        ),
        Kind.PATH,
    ),
    "admin_listen": Kind.OPTIONAL,
    **dict.fromkeys(("peers", "nbd_exports", "nbd_allow"), Kind.LIST),
    **dict.fromkeys(
        (
            "nbd_swap_safety",
            "encrypt",
            "test_hooks",
            "admin_read_token",
            "tls_client_auth",
            "refuse_oversized_exports",
        ),
        Kind.BOOL,
    ),
}
"""How each setting that is not plain text is read."""


def load_config(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    file: Path | None = None,
) -> NodeConfig:
    """Merge the TOML file ([node] table), then RAMSTER_* variables, then flags."""
    return load_settings(NodeConfig, KINDS, flags, env, file, section="node")


def new_incarnation() -> str:
    """A fresh id for one run of a node: start time (hex ns, so newer sorts higher) and random."""
    return f"{time.time_ns():x}-{secrets.token_hex(4)}"


def node_id_for(config: NodeConfig) -> str:
    """The configured id, or the one kept in state_dir (created on first use)."""
    if config.node_id:
        return config.node_id
    path = config.state_dir / "node-id"
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    config.state_dir.mkdir(parents=True, exist_ok=True)
    text = f"node-{secrets.token_hex(4)}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    return text


def claim_run(config: NodeConfig, node_id: str, incarnation: str) -> tuple[int | None, str | None]:
    """Lock this node's state dir for this run: (the lock's fd, to keep open; the incarnation of
    the run it replaces, which is known dead because its lock was free). (None, None) when the
    lock is held by a live process or the state dir cannot be written: the holders then tell a
    restart from a twin by time alone (dead_after)."""
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(config.state_dir / f"run-{node_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None, None
    previous = os.pread(fd, 256, 0).decode(errors="replace").strip() or None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{incarnation}\n".encode(), 0)
    return fd, previous
