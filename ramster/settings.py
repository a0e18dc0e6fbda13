"""Settings as users give them: sizes ('256MiB'), addresses ('host:port'), and whole
configurations merged from flags, RAMSTER_* variables and a TOML file (flags win over
variables, variables over the file), each coerced by its kind and validated once."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
ENV_PREFIX = "RAMSTER_"


def parse_size(text: str | int) -> int:
    """Bytes from '512', '64KiB', '256MiB', '1G', '1.5GiB' (K, M, G, T are powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 64KiB, 256MiB, 1GiB)")
    number, unit, _ = match.groups()
    value = float(number) * (1024 ** _POWERS[unit.lower()])
    return int(value)


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """(host, port) from 'host:port', ':port' or '[v6]:port'."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"not an address: {text!r} (expected host:port)")
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"not a port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def parse_bool(value: Any) -> bool:
    """True or False from a bool or from yes/no, true/false, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"not a yes/no value: {value!r} (use true or false)")


class Kind(Enum):
    """How a setting's text becomes its value."""

    TEXT = "text"
    SIZE = "size"
    """Bytes, with K, M, G, T suffixes."""
    FLOAT = "float"
    INT = "int"
    PATH = "path"
    BOOL = "bool"
    LIST = "list"
    """A tuple of texts (comma-separated in a variable)."""
    OPTIONAL = "optional"
    """A text that "off" or "none" turns off (None)."""


def coerce(kind: Kind, value: Any) -> Any:
    """One setting's value from what a user gave (None stays None)."""
    if value is None:
        return None
    if kind is Kind.OPTIONAL:
        return None if str(value).strip().lower() in {"", "off", "none"} else str(value)
    if kind is Kind.SIZE:
        return parse_size(value)
    if kind is Kind.FLOAT:
        return float(value)
    if kind is Kind.INT:
        return int(value)
    if kind is Kind.PATH:
        return Path(value).expanduser()
    if kind is Kind.BOOL:
        return parse_bool(value)
    if kind is Kind.LIST:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return tuple(str(p) for p in value)
    return str(value)


def load_settings(
    cls: type[T],
    kinds: Mapping[str, Kind],
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    file: Path | None = None,
    *,
    section: str,
    prefix: str = ENV_PREFIX,
) -> T:
    """Merge the TOML file (its [section] table, or its top level), then `prefix`+NAME
    variables, then flags (None or () means not given) into a `cls` dataclass."""
    env = os.environ if env is None else env
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    merged: dict[str, Any] = {}
    if file is not None:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
        table = data.get(section, data)
        unknown = set(table) - names
        if unknown:
            raise ValueError(f"{file}: unknown setting(s) {', '.join(sorted(unknown))}")
        merged.update(table)
    for name in names:
        text = env.get(prefix + name.upper())
        if text is not None and text != "":
            merged[name] = text
    merged.update({n: v for n, v in flags.items() if n in names and v is not None and v != ()})
    try:
        return cls(**{k: coerce(kinds.get(k, Kind.TEXT), v) for k, v in merged.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid configuration: {exc}") from None
