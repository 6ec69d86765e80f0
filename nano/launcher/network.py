"""Which local address and network interface lead to a given host (for multi-node rendezvous)."""

from __future__ import annotations

import fcntl
import socket
import struct

_SIOCGIFADDR = 0x8915


def interface_address(name: str) -> str | None:
    """The IPv4 address of interface ``name``, or None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def route_to(host: str) -> tuple[str, str | None]:
    """``(local IPv4 address, interface name)`` this machine uses to reach ``host``.

    Raises ``OSError`` with the reason when ``host`` does not resolve or has no route.
    """
    address = socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((address, 9))  # UDP connect sends nothing; it only picks the route
        local = s.getsockname()[0]
    if local.startswith("127."):
        return local, "lo"
    for _, name in socket.if_nameindex():
        if interface_address(name) == local:
            return local, name
    return local, None
