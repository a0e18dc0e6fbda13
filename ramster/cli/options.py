"""Every option the subcommands share, defined once: its flag, its type and the help that says
its unit and default. A parser takes the options it needs from here."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramster.settings import parse_size

if TYPE_CHECKING:
    from ramster.rpc import RpcConfig, Secret

    Sub = argparse._SubParsersAction[argparse.ArgumentParser]
    """The subparsers of the `ramster` parser."""

ArgGroup = argparse.ArgumentParser | argparse._ArgumentGroup

EXPORT_HELP = (
    "an export (repeatable): a name of letters, digits, '.', '_', '-' and a size, a multiple of "
    "4 KiB with K, M, G, T suffixes (powers of 1024), e.g. swap0:8GiB; AREA picks the frontswap "
    "area (default: 31, 30, ... so that exports stay clear of clients using area 0); a last "
    ":local or :replicated picks the durability (ramster node: replicated by default, acknowledged "
    "once R other nodes hold each block, so the export survives its node; ramster nbd: local); a "
    "last :must-fit refuses to create a replicated export larger than what the cluster can hold "
    "for it (it is not served; created with a warning without it)"
)
ALLOW_HELP = (
    "client addresses or networks allowed to connect, comma-separated, repeatable "
    "(e.g. 127.0.0.1,10.0.0.0/8); others are closed and counted (default: loopback only)"
)
NO_SAFETY_HELP = (
    "do not mlockall, set oom_score_adj to -1000 or PR_SET_IO_FLUSHER (on by default: a swap "
    "server must not be swapped out or killed)"
)
NODE_HELP = "RPC address of the node, host:port (default: $RAMSTER_NODE or 127.0.0.1:7070)"
ADMIN_HELP = (
    "admin API of any node, URL or host:port (default: $RAMSTER_ADMIN or http://127.0.0.1:7171)"
)


def positive_int(text: str) -> int:
    """argparse type: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def size(text: str) -> int:
    """argparse type: bytes, with K, M, G, T suffixes."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def config_file(p: ArgGroup, table: str) -> None:
    """--config: a TOML file whose [table] holds the same settings."""
    p.add_argument("--config", type=Path, help=f"TOML file with these settings ([{table}] table)")


def local_budget(p: ArgGroup, default: str, beyond: str) -> None:
    """--local-budget: the RAM for this process's own pages."""
    p.add_argument(
        "--local-budget",
        type=size,
        help=f"RAM for the compressed pages, e.g. 512MiB (default: {default}); beyond it {beyond}",
    )


def log_level(p: ArgGroup) -> None:
    """--log-level."""
    p.add_argument("--log-level", help="debug, info, warning or error (default: info)")


def nbd_exports(p: ArgGroup, dest: str, required: bool = False) -> None:
    """--export NAME:SIZE[:AREA] (repeatable)."""
    p.add_argument(
        "--export",
        dest=dest,
        action="append",
        default=[],
        required=required,
        metavar="NAME:SIZE[:AREA]",
        help=EXPORT_HELP,
    )


def nbd_allow(p: ArgGroup, dest: str, *flags: str) -> None:
    """--nbd-allow LIST (repeatable)."""
    p.add_argument(
        *flags,
        "--nbd-allow",
        dest=dest,
        action="append",
        default=[],
        metavar="LIST",
        help=ALLOW_HELP,
    )


def no_swap_safety(p: ArgGroup, dest: str) -> None:
    """--no-swap-safety."""
    p.add_argument(
        "--no-swap-safety",
        dest=dest,
        action="store_const",
        const=False,
        default=None,
        help=NO_SAFETY_HELP,
    )


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def client(p: ArgGroup) -> None:
    """--node, the secret and TLS: how a program reaches a node over the RPC."""
    p.add_argument(
        "--node", default=os.environ.get("RAMSTER_NODE", "127.0.0.1:7070"), help=NODE_HELP
    )
    p.add_argument(
        "--cluster",
        default=os.environ.get("RAMSTER_CLUSTER", "ramster"),
        help="cluster name (default: $RAMSTER_CLUSTER or ramster)",
    )
    p.add_argument(
        "--secret-file",
        type=Path,
        default=None,
        help="file holding the cluster secret (default: $RAMSTER_SECRET_FILE, "
        "else the secret itself in $RAMSTER_CLUSTER_SECRET)",
    )
    p.add_argument(
        "--client-secret-file",
        type=Path,
        default=_env_path("RAMSTER_CLIENT_SECRET_FILE"),
        help="file holding the node's client secret, used instead of the cluster secret "
        "(default: $RAMSTER_CLIENT_SECRET_FILE)",
    )
    for flag, name, what in (
        ("--tls-ca", "RAMSTER_TLS_CA", "CA bundle the node's certificate must chain to"),
        ("--tls-cert", "RAMSTER_TLS_CERT", "this program's certificate, for mutual TLS"),
        ("--tls-key", "RAMSTER_TLS_KEY", "the key of --tls-cert"),
    ):
        p.add_argument(flag, type=Path, default=_env_path(name), help=f"{what} (default: ${name})")


@dataclass(frozen=True)
class Access:
    """What a program needs to call a node: a secret and the RPC settings (cluster, TLS)."""

    secret: Secret
    config: RpcConfig


def access(args: argparse.Namespace) -> Access:
    """The secret and RPC settings from the client options."""
    from ramster.rpc import KeyKind, RpcConfig, load_secret

    if args.client_secret_file is not None:
        key = load_secret(args.client_secret_file, kind=KeyKind.CLIENT)
    else:
        key = secret(args.secret_file)
    config = RpcConfig(
        cluster=args.cluster, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key
    )
    return Access(key, config)


def admin_client(p: ArgGroup) -> None:
    """--admin, --token-file and --json: how an operator command reaches the admin API."""
    p.add_argument("--admin", help=ADMIN_HELP)
    p.add_argument(
        "--token-file",
        type=Path,
        help="file with the admin bearer token (default: $RAMSTER_ADMIN_TOKEN_FILE, "
        "else the token itself in $RAMSTER_ADMIN_TOKEN)",
    )
    json_output(p)


def json_output(p: ArgGroup) -> None:
    """--json."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def given(args: argparse.Namespace, *skip: str) -> dict[str, Any]:
    """The parsed flags as settings: lists as tuples, the command itself left out."""
    return {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in vars(args).items()
        if k not in {"command", "config", *skip}
    }


def secret(path: Path | None) -> Secret:
    """The cluster secret from `path`, else $RAMSTER_SECRET_FILE, else $RAMSTER_CLUSTER_SECRET."""
    from ramster.rpc import load_secret

    env_file = os.environ.get("RAMSTER_SECRET_FILE")
    return load_secret(path or (Path(env_file) if env_file else None))
