"""Certificates made with `openssl` for TLS tests: a cluster CA, leaves it signs, and a rogue
CA with a leaf of its own (what a stranger would bring)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from tests.conftest import need_tool


@dataclasses.dataclass(frozen=True)
class Pki:
    """The files of one PKI; leaves by name (signed by `ca`) and `stranger` (by the rogue)."""

    ca: Path
    leaves: dict[str, tuple[Path, Path]]
    rogue_ca: Path
    stranger: tuple[Path, Path]

    @property
    def node_cert(self) -> Path:
        return self.leaves["node"][0]

    @property
    def node_key(self) -> Path:
        return self.leaves["node"][1]

    @property
    def other_cert(self) -> Path:
        return self.stranger[0]

    @property
    def other_key(self) -> Path:
        return self.stranger[1]


def _openssl(openssl: str, *args: str) -> None:
    subprocess.run([openssl, *args], check=True, capture_output=True)


def _leaf(openssl: str, d: Path, name: str, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    _openssl(openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")  # fmt: skip
    _openssl(openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2")  # fmt: skip
    key.chmod(0o600)
    return cert, key


def _ca(openssl: str, d: Path, name: str) -> tuple[Path, Path]:
    ca, key = d / f"{name}.pem", d / f"{name}.key"
    _openssl(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(ca), "-days", "2",
             "-subj", f"/CN={name}")  # fmt: skip
    return ca, key


def make_pki(d: Path, names: tuple[str, ...] = ("node",)) -> Pki:
    """A cluster CA with a leaf per name, and a rogue CA with its `stranger` leaf."""
    openssl = need_tool("openssl", "apt-get install openssl")
    ca, ca_key = _ca(openssl, d, "cluster-ca")
    rogue_ca, rogue_key = _ca(openssl, d, "rogue-ca")
    leaves = {name: _leaf(openssl, d, name, ca, ca_key) for name in names}
    stranger = _leaf(openssl, d, "stranger", rogue_ca, rogue_key)
    return Pki(ca, leaves, rogue_ca, stranger)
