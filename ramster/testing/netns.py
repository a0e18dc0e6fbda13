"""N hosts as Linux network namespaces on one bridge, for multi-host tests on one machine.

Each host `h<i>` gets a veth pair: `eth0` inside the namespace with 10.231.<net>.<i+1>/24, the
other end enslaved to a bridge in the root namespace that has .254, so the test process can
reach every host. Addresses exist only on these interfaces; everything is removed by
`close()` (also after a failure, and leftovers of an earlier crashed run are swept first).
Needs root and iproute2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

PREFIX = "rmst"


def available() -> str | None:
    """None when namespaces can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass
class NetnsLab:
    """A bridge and `hosts` namespaces; `net` picks the 10.231.<net>.0/24 subnet."""

    hosts: int
    net: int = 0
    names: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{PREFIX}br{self.net}"

    def ns(self, i: int) -> str:
        """Namespace name of host i."""
        return f"{PREFIX}{self.net}h{i}"

    def addr(self, i: int) -> str:
        """IPv4 address of host i."""
        return f"10.231.{self.net}.{i + 1}"

    def veth(self, i: int) -> str:
        """Root-side veth of host i."""
        return f"{PREFIX}{self.net}v{i}"

    def __enter__(self) -> NetnsLab:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Build the bridge and the hosts."""
        self.close()  # a crashed run may have left some behind
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._firewall(add=True)
            _ip("addr", "add", f"10.231.{self.net}.254/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.hosts):
                ns, veth = self.ns(i), self.veth(i)
                _ip("netns", "add", ns)
                self.names.append(ns)
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", self.bridge)
                _ip("link", "set", veth, "up")
                _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                # mDNS needs a route for multicast out of eth0.
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        except subprocess.CalledProcessError as exc:
            self.close()
            raise RuntimeError(f"building namespaces failed: {exc.stderr.strip()}") from exc

    def close(self) -> None:
        """Remove every namespace and the bridge (idempotent)."""
        for i in range(self.hosts):
            _ip("link", "del", self.veth(i), check=False)
            _ip("netns", "del", self.ns(i), check=False)
        _ip("link", "del", self.bridge, check=False)
        self._firewall(add=False)
        self.names.clear()

    def _firewall(self, add: bool) -> None:
        # With br_netfilter loaded (Docker loads it), frames between bridge ports go through
        # the FORWARD chain, whose policy Docker sets to DROP: let this bridge's own traffic
        # pass while the lab exists, and remove the rule with it.
        if shutil.which("iptables") is None:
            return
        rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        while (
            subprocess.run(
                ["iptables", "-C", *rule], capture_output=True, check=False, timeout=30
            ).returncode
            == 0
        ):
            subprocess.run(["iptables", "-D", *rule], capture_output=True, check=False, timeout=30)
        if add:
            subprocess.run(["iptables", "-I", *rule], capture_output=True, check=True, timeout=30)

    def exec_args(self, i: int, argv: list[str]) -> list[str]:
        """argv run inside host i."""
        return ["ip", "netns", "exec", self.ns(i), *argv]

    def link(self, i: int, up: bool) -> None:
        """Cut (or heal) host i's link to the bridge."""
        _ip("link", "set", self.veth(i), "up" if up else "down")

    def partition(self, groups: list[list[int]]) -> None:
        """Split the hosts into groups that cannot reach each other (the test process still
        reaches all of them over the bridge): packets from and to other groups are dropped
        inside every namespace, multicast included."""
        self.heal()
        group_of = {i: g for g, members in enumerate(groups) for i in members}
        for i in range(self.hosts):
            for j in range(self.hosts):
                if j != i and group_of.get(j) != group_of.get(i):
                    self._iptables(i, "-A", "INPUT", "-s", self.addr(j), "-j", "DROP")
                    self._iptables(i, "-A", "OUTPUT", "-d", self.addr(j), "-j", "DROP")

    def heal(self) -> None:
        """Undo `partition`."""
        for i in range(self.hosts):
            self._iptables(i, "-F", "INPUT")
            self._iptables(i, "-F", "OUTPUT")

    def _iptables(self, i: int, *rule: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.ns(i), "iptables", *rule],
            capture_output=True,
            check=True,
            timeout=30,
        )
