"""Node addresses a test can aim a run at without leaving the machine: a light test host (an
address in a network namespace this test run creates; nodes on loopback are refused by the spec)
and, inside it, a listener that accepts connections and never speaks (SSH waits for a banner)."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

SILENT_LISTENER = """
import socket, sys
srv = socket.socket()
srv.bind((sys.argv[1], 0))
srv.listen(8)
print(srv.getsockname()[1], flush=True)
conns = []
while True:
    conns.append(srv.accept()[0])
    print("accepted", flush=True)
"""


def node_spec(name: str, address: str, port: int, timeout: float = 2, **ssh) -> dict:
    """A one-node spec whose runs fail fast at facts unless something answers on `port`."""
    return {"name": name,
            "nodes": [{"name": "n1", "address": address, "roles": ["control-plane"]}],
            "ssh": {"port": port, "connect_timeout": timeout, **ssh},
            "steps": {"facts": {"retries": 0}}}  # one attempt


@pytest.fixture(scope="module")
def netns_node():
    """A light test host: an address in a network namespace of this run; its sshd listens on 22,
    every other port there is closed."""
    from tests.hosts.fixtures import require
    from tests.hosts.light import LightHosts

    require(booted=False)
    hosts = LightHosts(1).up()
    yield hosts[0]
    hosts.down()


@dataclass
class SilentListener:
    address: str
    port: int
    proc: subprocess.Popen
    _seen: bytes = field(default=b"", repr=False)

    def accepted(self) -> int:
        """How many connections it has accepted so far."""
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            self._seen += chunk
        return self._seen.count(b"accepted\n")


@contextlib.contextmanager
def silent_listener(node):
    proc = subprocess.Popen(["ip", "netns", "exec", node.name, sys.executable, "-c",
                             SILENT_LISTENER, node.address],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        port = int(proc.stdout.readline())
        yield SilentListener(node.address, port, proc)
    finally:
        proc.kill()
        proc.wait(10)
