"""One harness instance: its index, lock, state directory and background services.

The index ``k`` namespaces every name the instance creates (see network.py), so a developer's
CLI-started hosts (index 0 by default) and one or more test sessions (index 1, 2, … picked
automatically, or ``KAI_TEST_INDEX``) coexist. Holding the lock means owning the index: whatever
carries the index but has no lock holder is a crashed run's leftover and is removed.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import network
from .network import Bridge
from .rootfs import REPO_ROOT, cache_dir

LOCK_DIR = Path("/run/kai-test-hosts")
MAX_INDEX = 200


class IndexBusy(RuntimeError):
    pass


class InstanceLock:
    """An flock on /run/kai-test-hosts/<kind>-<k>.lock, held for the owner's lifetime."""

    def __init__(self, kind: str, index: int):
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        self.path = LOCK_DIR / f"{kind}-{index}.lock"
        self._fh = open(self.path, "a+")  # not "w": that would blank the holder's pid
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise IndexBusy(f"test-host index {index} ({kind}) is in use by another process") from None
        self._fh.truncate(0)
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()

    @property
    def released(self) -> bool:
        return self._fh.closed

    def release(self) -> None:
        if not self._fh.closed:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


def acquire_index(kind: str, index: int | None) -> tuple[int, InstanceLock]:
    """Lock ``index`` or, when None, ``KAI_TEST_INDEX`` or the first free index from 1 up."""
    if index is None and os.environ.get("KAI_TEST_INDEX"):
        index = int(os.environ["KAI_TEST_INDEX"])
    if index is not None:
        if not 0 <= index < MAX_INDEX:
            raise ValueError(f"index: must be 0..{MAX_INDEX - 1}, got {index}")
        return index, InstanceLock(kind, index)
    for k in range(1, MAX_INDEX):
        try:
            return k, InstanceLock(kind, k)
        except IndexBusy:
            continue
    raise IndexBusy(f"no free test-host index for {kind}")


def state_dir(kind: str, index: int) -> Path:
    path = cache_dir() / "hosts" / f"{kind}-{index}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_tcp(address: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {address}:{port} not reachable after {timeout}s: {exc}") from None
            time.sleep(0.05)


@dataclass(frozen=True)
class Service:
    """A process serving the hosts from the bridge's gateway (apt proxy, local mirror, …).

    ``argv`` gets the bridge and returns the command; the process must listen on
    ``bridge.gateway:port``. It runs in its own cgroup, so teardown finds it even after a crash.
    """
    name: str
    argv: Callable[[Bridge], list[str]]
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)


def start_service(service: Service, bridge: Bridge, cgroup: str, log_dir: Path,
                  timeout: float = 20.0) -> subprocess.Popen:
    network.create_cgroup(cgroup)
    log = open(log_dir / f"{service.name}.log", "ab")
    argv = service.argv(bridge)
    # The shell joins the cgroup, then becomes the service.
    proc = subprocess.Popen(
        ["sh", "-c", network.cgroup_join_script(cgroup) + ' exec "$@"', "sh", *argv],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **service.env}, start_new_session=True)
    log.close()
    if service.port is not None:
        try:
            wait_tcp(bridge.gateway, service.port, timeout, f"service {service.name}")
        except TimeoutError:
            proc.kill()
            proc.wait()
            network.remove_cgroup(cgroup)
            tail = (log_dir / f"{service.name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"service {service.name} did not start:\n{tail}") from None
    return proc


def apt_proxy_service() -> Service:
    from .aptproxy import PORT
    return Service(
        name="aptproxy", port=PORT,
        argv=lambda bridge: [sys.executable, "-m", "tests.hosts.aptproxy",
                             "--listen", f"{bridge.gateway}:{PORT}", "--cache", str(cache_dir() / "apt")])
