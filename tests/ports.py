"""Free TCP ports for test servers, chosen outside the kernel's ephemeral range.

Why not ``bind(0)``: the kernel hands out a port from the ephemeral range,
the same range it draws every outgoing connection's source port from. A test
that picks a port now and starts a server on it later (a subprocess, or a
proxy that is cut and restored) can find it taken by a client's connection in
between; CI saw exactly that (``postgres: port ... is already in use``) while
the demo's broker was busy. Ports below the ephemeral range are never handed
out implicitly, so only another listener can take them.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 20000
_DEFAULT_EPHEMERAL_LOW = 32768


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and no client will take implicitly."""
    high = _ephemeral_low()
    if high - _LOWEST < 1000:  # an unusual range: fall back to the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for port in random.sample(range(_LOWEST, high), 200):
        if _is_free(port):
            return port
    raise RuntimeError(f"no free port found in {_LOWEST}-{high - 1}")
