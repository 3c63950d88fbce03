"""Loopback ports for the servers fraudloop starts beside itself (the staging test's service, the
demo's scoring service) and the ones tests and benches start."""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: not the global generator: a test or a run that seeds `random` would give every process the
#: same ports in the same order
_CHOOSER = random.SystemRandom()
#: how far below the ephemeral range ports are chosen from (16384-32767 with Linux's default)
SPAN = 16384


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A free loopback port for a server about to start in another process, chosen below the
    kernel's ephemeral range. A port from bind(0) lies inside that range, where any outgoing
    connection on the host may take it as its source port between choosing it and the server
    binding it: CI lost the Docker stack's test to that (its webserver, started minutes after
    its port was chosen while the stack's containers connected to PostgreSQL and S3, found the
    port taken), and a staging test in a busy run container runs the same risk."""
    low, _ = _ephemeral_range()
    first = max(1024, low - SPAN)
    for _ in range(200):
        port = _CHOOSER.randrange(first, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port in {first}-{low - 1} after 200 tries")
