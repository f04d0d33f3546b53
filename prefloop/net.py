"""A free local TCP port, for the servers prefloop starts itself (a round's labeling server, an arena's
model server) and for the tests and benches that start servers side by side."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now: the OS picks it for a socket that is closed at once, so that the server
    started next can bind it."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
