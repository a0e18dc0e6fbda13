"""Parsing sizes and addresses as users type them: '256MiB', '1G', '4096', 'host:port'."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


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
