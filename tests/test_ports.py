"""Ports for servers started in other processes: outside the range outgoing connections use."""

import contextlib
import socket

import pytest

from fraudloop.core import ports
from fraudloop.core.ports import free_port


def test_a_free_port_lies_below_the_ephemeral_range_and_can_be_bound():
    low, high = ports._ephemeral_range()
    assert 1024 <= low <= high
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if it was not free
            sock.listen()


@contextlib.contextmanager
def _three_free_ports_held():
    """Three consecutive loopback ports, each bound by a socket here."""
    for _ in range(50):
        first, held = free_port(), []
        try:
            for port in range(first, first + 3):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            for sock in held:
                sock.close()
            continue
        try:
            yield first, held
        finally:
            for sock in held:
                sock.close()
        return
    raise AssertionError("no three consecutive free ports")


def test_a_taken_port_is_never_handed_out_and_a_full_range_says_so(monkeypatch):
    with _three_free_ports_held() as (first, held):
        monkeypatch.setattr(ports, "SPAN", 3)
        monkeypatch.setattr(ports, "_ephemeral_range", lambda: (first + 3, first + 1000))
        with pytest.raises(RuntimeError, match=f"no free loopback port in {first}-{first + 2}"):
            free_port()
        held[1].close()  # one port of the three comes free: it is the answer, every time
        assert {free_port() for _ in range(10)} == {first + 1}
