"""What an NBD server serves and to whom: exports, address, allow-list, limits (validated)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramster.frontswap.local import DEFAULT_MAX_AREAS
from ramster.nbd import const
from ramster.settings import Kind, load_settings, parse_address, parse_size

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PAGE = 4096
"""Export sizes are whole frontswap pages of the default size."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

LOOPBACK = ("127.0.0.0/8", "::1/128")


LOCAL, REPLICATED = "local", "replicated"
DURABILITIES = (LOCAL, REPLICATED)
"""local: a write is acknowledged once in the serving node's pool (lost with that node);
replicated: once R copies (at least min_replicas) are held by other nodes (survives it)."""
MUST_FIT = "must-fit"
"""The last part of an export's text that refuses it at creation unless the cluster can hold it."""


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """One export: its name, its size in bytes, the frontswap area that holds its blocks (of
    the node's own frontswap; a replicated export has one of its own) and its durability."""

    name: str
    size: int
    area: int
    durability: str = LOCAL
    must_fit: bool = False
    """Refuse to create it (replicated only) when it is larger than what the cluster can hold
    for it then (`ExportDoesNotFit`); else it is created and served with a warning."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"export name {self.name!r}: 1 to 64 of A-Z a-z 0-9 . _ -, starting with a "
                "letter or digit"
            )
        if not 0 < self.size <= const.MAX_EXPORT_SIZE or self.size % PAGE:
            raise ValueError(
                f"export {self.name}: size must be a positive multiple of {PAGE} bytes up to "
                f"16TiB, got {self.size}"
            )
        if self.durability not in DURABILITIES:
            raise ValueError(
                f"export {self.name}: durability must be local or replicated, "
                f"got {self.durability!r}"
            )
        if not 0 <= self.area < DEFAULT_MAX_AREAS:
            raise ValueError(
                f"export {self.name}: area must be within 0..{DEFAULT_MAX_AREAS - 1}, "
                f"got {self.area}"
            )
        if self.must_fit and self.durability != REPLICATED:
            raise ValueError(f"export {self.name}: must-fit is for replicated exports")

    def __str__(self) -> str:
        return f"{self.name}:{self.size}:{self.area}:{self.durability}"


def parse_exports(
    texts: Iterable[str], durability: str = LOCAL, allowed: Sequence[str] = DURABILITIES
) -> tuple[ExportSpec, ...]:
    """Specs from 'NAME:SIZE[:AREA][:local|replicated][:must-fit]' texts (durability by default
    as given; must-fit: refused at creation unless the cluster can hold it); areas not given are
    taken from the top (31, 30, ...) so that exports do not share an area with clients that
    store pages in area 0."""
    parsed: list[tuple[str, int, int | None, str, bool]] = []
    for text in texts:
        parts = str(text).strip().split(":")
        must_fit = len(parts) > 2 and parts[-1] == MUST_FIT
        if must_fit:
            parts.pop()
        chosen = durability
        if len(parts) > 2 and parts[-1] in DURABILITIES:
            chosen = parts.pop()
        if chosen not in allowed:
            raise ValueError(f"export {parts[0]!r}: {chosen} durability needs a cluster node")
        if len(parts) not in (2, 3):
            raise ValueError(
                f"not an export: {text!r} (expected NAME:SIZE[:AREA][:local|replicated][:must-fit])"
            )
        try:
            size = parse_size(parts[1])
        except ValueError as exc:
            raise ValueError(f"export {parts[0]!r}: {exc}") from None
        area: int | None = None
        if len(parts) == 3:
            try:
                area = int(parts[2])
            except ValueError:
                raise ValueError(
                    f"export {parts[0]!r}: {parts[2]!r} is no area number nor durability "
                    "(local or replicated)"
                ) from None
        parsed.append((parts[0], size, area, chosen, must_fit))
    taken = {a for _, _, a, _, _ in parsed if a is not None}
    free = (a for a in range(DEFAULT_MAX_AREAS - 1, -1, -1) if a not in taken)
    specs = []
    for name, size, given, chosen, fit in parsed:
        area = next(free, -1) if given is None else given
        specs.append(ExportSpec(name, size, area, chosen, fit))
    return tuple(specs)


def parse_allow(texts: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Networks from '127.0.0.1', '10.0.0.0/8', '::1' (comma-separated lists allowed)."""
    nets: list[IpNetwork] = []
    for text in texts:
        for raw in str(text).split(","):
            item = raw.strip()
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"not an address or network: {item!r} (examples: 127.0.0.1, 10.0.0.0/8)"
                ) from None
    if not nets:
        raise ValueError("the allow-list is empty: no client could connect")
    return tuple(nets)


def allowed(host: str, networks: Sequence[IpNetwork]) -> bool:
    """True when the client address is inside one of the networks."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


@dataclass(frozen=True, slots=True)
class NbdConfig:
    """An NBD server's settings; sizes in bytes, times in seconds."""

    exports: tuple[ExportSpec, ...]
    listen: str = f"127.0.0.1:{const.DEFAULT_PORT}"
    """Address to listen on, host:port (port 0 picks a free one)."""
    allow: tuple[str, ...] = LOOPBACK
    """Client addresses or networks allowed to connect; others are closed and counted."""
    max_connections: int = const.DEFAULT_MAX_CONNECTIONS
    max_inflight: int = const.DEFAULT_MAX_INFLIGHT
    """Requests read but not yet answered per connection before reading pauses."""
    max_queued_bytes: int = const.DEFAULT_MAX_QUEUED_BYTES
    """Write payload bytes read but not yet stored per connection before reading pauses."""
    max_payload: int = const.MAX_PAYLOAD
    handshake_timeout: float = const.DEFAULT_HANDSHAKE_TIMEOUT
    swap_safety: bool = True
    """mlockall, oom_score_adj -1000 and PR_SET_IO_FLUSHER where the OS allows them."""
    networks: tuple[IpNetwork, ...] = field(init=False, repr=False, compare=False)

    allow_no_exports: bool = False
    """A node may listen with no export of its own yet (it can adopt moved ones)."""

    def __post_init__(self) -> None:
        parse_address(self.listen)
        if not self.exports and not self.allow_no_exports:
            raise ValueError("at least one export is needed (--export NAME:SIZE)")
        names = [e.name for e in self.exports]
        if len(set(names)) != len(names):
            raise ValueError(f"export names must be distinct: {', '.join(names)}")
        areas = [e.area for e in self.exports]
        if len(set(areas)) != len(areas):
            raise ValueError("two exports cannot share a frontswap area")
        object.__setattr__(self, "networks", parse_allow(self.allow))
        if not 1 <= self.max_connections <= 65536:
            raise ValueError(f"max_connections must be within 1..65536: {self.max_connections}")
        if not 1 <= self.max_inflight <= 65536:
            raise ValueError(f"max_inflight must be within 1..65536: {self.max_inflight}")
        if not const.MIN_BLOCK <= self.max_payload <= 1 << 30:
            raise ValueError(f"max_payload must be within 512 bytes..1GiB: {self.max_payload}")
        if self.max_queued_bytes < self.max_payload:
            raise ValueError("max_queued_bytes must hold at least one max_payload write")
        if not self.handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")

    def export(self, name: str) -> ExportSpec | None:
        """The export of that name; the empty name is the first export (the spec's default)."""
        if name == "":
            return self.exports[0] if self.exports else None
        return next((e for e in self.exports if e.name == name), None)


@dataclass(frozen=True, slots=True)
class StandaloneConfig:
    """`ramster nbd`: exports over a local pool of its own; sizes in bytes."""

    exports: tuple[str, ...] = ()
    """NAME:SIZE[:AREA] each."""
    listen: str = f"127.0.0.1:{const.DEFAULT_PORT}"
    local_budget: int = 256 << 20
    """RAM for the compressed pages; beyond it writes get ENOSPC."""
    allow: tuple[str, ...] = LOOPBACK
    max_connections: int = const.DEFAULT_MAX_CONNECTIONS
    swap_safety: bool = True
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError(f"log level must be debug, info, warning or error: {self.log_level}")
        if self.local_budget <= 0:
            raise ValueError("the local budget must be positive")
        self.nbd_config()

    def nbd_config(self) -> NbdConfig:
        """The server's settings (validated)."""
        return NbdConfig(
            exports=parse_exports(self.exports, allowed=(LOCAL,)),
            listen=self.listen,
            allow=self.allow,
            max_connections=self.max_connections,
            swap_safety=self.swap_safety,
        )


STANDALONE_KINDS: dict[str, Kind] = {
    "exports": Kind.LIST,
    "allow": Kind.LIST,
    "local_budget": Kind.SIZE,
    "max_connections": Kind.INT,
    "swap_safety": Kind.BOOL,
}


def load_standalone(
    flags: Mapping[str, Any], env: Mapping[str, str] | None = None, file: Path | None = None
) -> StandaloneConfig:
    """`ramster nbd`'s settings: the TOML file's [nbd] table, then RAMSTER_NBD_* variables, then
    flags (the same variables name the same things for `ramster node --nbd`)."""
    return load_settings(
        StandaloneConfig, STANDALONE_KINDS, flags, env, file, section="nbd", prefix="RAMSTER_NBD_"
    )
