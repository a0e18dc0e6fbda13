"""An mDNS flood: thousands of announcements of `_ramster._tcp.local.` services with random
names, nodes and ports, all naming the victim's cluster, sent as unsolicited responses.

    python -m tests.chaos.mdns_flood --interface 10.231.8.4 --cluster ramster --count 3000

Run it only inside a network namespace (`NetnsLab.exec_args`): it multicasts on the interface
with the address given, and nowhere else. Half the services point at this host (their ports
refuse connections), half at addresses of the subnet where nobody answers (a dial hangs).
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import time

from zeroconf._dns import DNSAddress, DNSPointer, DNSService, DNSText
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import (
    _CLASS_IN,
    _CLASS_IN_UNIQUE,
    _FLAGS_AA,
    _FLAGS_QR_RESPONSE,
    _MDNS_ADDR,
    _MDNS_PORT,
    _TYPE_A,
    _TYPE_PTR,
    _TYPE_SRV,
    _TYPE_TXT,
)

SERVICE = "_ramster._tcp.local."
TTL = 4500


def _txt(props: dict[str, str]) -> bytes:
    out = b""
    for key, value in props.items():
        item = f"{key}={value}".encode()
        out += bytes([len(item)]) + item
    return out


def packets(interface: str, cluster: str, count: int, proto: str, seed: int) -> list[bytes]:
    """The flood, one service per packet."""
    rng = random.Random(seed)
    net = interface.rsplit(".", 1)[0]
    out = []
    for i in range(count):
        tag = f"{rng.getrandbits(48):012x}"
        name = f"{cluster}-flood{tag}.{SERVICE}"
        server = f"flood{tag}.local."
        here = i % 2 == 0
        address = interface if here else f"{net}.{rng.randint(100, 250)}"
        port = rng.randint(1024, 65000)
        msg = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
        props = {"cluster": cluster, "node": f"n-{tag}", "inc": "0-0", "rpc": str(port),
                 "admin": "0", "proto": proto}  # fmt: skip
        msg.add_answer_at_time(DNSPointer(SERVICE, _TYPE_PTR, _CLASS_IN, TTL, name), 0)
        msg.add_answer_at_time(
            DNSService(name, _TYPE_SRV, _CLASS_IN_UNIQUE, TTL, 0, 0, port, server), 0
        )
        msg.add_answer_at_time(DNSText(name, _TYPE_TXT, _CLASS_IN_UNIQUE, TTL, _txt(props)), 0)
        msg.add_answer_at_time(
            DNSAddress(server, _TYPE_A, _CLASS_IN_UNIQUE, TTL, socket.inet_aton(address)), 0
        )
        out.extend(msg.packets())
    return out


def main() -> None:
    """Send the flood."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", required=True, help="IPv4 address of the interface")
    parser.add_argument("--cluster", default="ramster")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--proto", default="2")
    parser.add_argument("--seconds", type=float, default=5.0, help="spread over this long")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    flood = packets(args.interface, args.cluster, args.count, args.proto, args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("B", 255))
    sock.bind((args.interface, 0))
    pause = args.seconds / max(1, len(flood))
    for packet in flood:
        sock.sendto(packet, (_MDNS_ADDR, _MDNS_PORT))
        time.sleep(pause)
    print(f"sent {len(flood)} announcements", flush=True)


if __name__ == "__main__":
    main()
