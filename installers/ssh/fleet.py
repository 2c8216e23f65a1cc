"""The connections of one run: one per node, one per bastion, opened as steps need them; the local
machine's node (a LocalTarget) gets a LocalConnection, the same agent pool without SSH."""

from __future__ import annotations

import threading
from typing import Mapping

from installers.ssh.connection import Connection
from installers.ssh.local import LocalConnection, LocalTarget
from installers.ssh.target import SSHTarget


class Fleet:
    """Connection pool keyed by node; thread-safe; shares one connection per bastion."""

    def __init__(self, targets: Mapping[str, SSHTarget | LocalTarget] | None = None):
        self._targets: dict[str, SSHTarget | LocalTarget] = dict(targets or {})
        self._conns: dict[str, Connection] = {}
        self._bastions: dict[tuple, Connection] = {}
        self._lock = threading.Lock()

    def add(self, target: SSHTarget | LocalTarget) -> None:
        with self._lock:
            self._targets[target.node] = target

    def get(self, node: str) -> Connection:
        with self._lock:
            conn = self._conns.get(node)
            if conn is None:
                try:
                    target = self._targets[node]
                except KeyError:
                    raise KeyError(f"Fleet: no SSH target for node {node!r}") from None
                if isinstance(target, LocalTarget):
                    conn = self._conns[node] = LocalConnection(target)
                    return conn
                bastion = None
                if target.bastion is not None:
                    b = target.bastion
                    key = (b.host, b.port, b.user)
                    bastion = self._bastions.get(key)
                    if bastion is None:
                        bastion = self._bastions[key] = Connection(b)
                conn = self._conns[node] = Connection(target, bastion=bastion)
            return conn

    def close(self) -> None:
        with self._lock:
            conns = list(self._conns.values()) + list(self._bastions.values())
            self._conns.clear()
            self._bastions.clear()
        for c in conns:
            c.close()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
