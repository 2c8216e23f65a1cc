"""Loopback ports for tests: one free to listen on, or one where nothing listens."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port nobody is bound to (bound and released: nobody else took it since)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port where nothing listens: a connect there is refused."""
    return free_port()
