"""Bridges, veth pairs, network namespaces and cgroups of one harness instance.

Everything a harness instance creates carries its index ``k`` in its name, so that two instances
coexist and a crashed run's leftovers can be found and removed by name:

- bridges ``kaibr<k>`` (booted hosts, 10.250.<k>.0/24) and ``kailb<k>`` (light hosts, 10.251.<k>.0/24)
- network namespaces ``kai<k>-n<i>`` / ``kai<k>-l<i>``, host-side veths ``kai<k>n<i>`` / ``kl<k>h<i>``
- cgroups ``kai<k>-*`` at the top of every cgroup hierarchy, holding every process the instance starts

The machine's own settings are not touched: no iptables rule, no forwarding; a bridge only lets the
hosts reach the machine's address on it (the gateway) and each other.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def run(*cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(cmd), capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def ip_batch(lines: list[str], netns: str | None = None) -> None:
    if lines:
        run("ip", *(["-n", netns] if netns else []), "-batch", "-", input="\n".join(lines) + "\n")


@dataclass(frozen=True)
class Bridge:
    """A bridge in the machine's namespace; ``gateway`` is the machine's address on it.

    Services for the hosts (the apt proxy, the local mirror) listen on ``gateway``.
    """
    name: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    def address(self, i: int) -> str:
        """Address of host number ``i`` (1-based): .2, .3, …"""
        addr = self.subnet.network_address + 1 + i
        if addr >= self.subnet.broadcast_address:
            raise ValueError(f"host index {i} does not fit in {self.subnet}")
        return str(addr)

    def exists(self) -> bool:
        return Path("/sys/class/net", self.name).exists()

    def create(self) -> None:
        if self.exists():
            self.delete()
        ip_batch([
            f"link add {self.name} type bridge",
            f"addr add {self.gateway}/{self.prefixlen} dev {self.name}",
            f"link set {self.name} up",
        ])

    def delete(self) -> None:
        if self.exists():
            run("ip", "link", "del", self.name, check=False)


def add_hosts_to_bridge(bridge: Bridge, hosts: list[tuple[str, str, str]],
                        default_route: bool) -> None:
    """Create a netns per host with a veth ``eth0`` on ``bridge``; hosts are (netns, veth, address)."""
    root_lines: list[str] = []
    for netns, veth, _ in hosts:
        root_lines += [f"netns add {netns}",
                       f"link add {veth} type veth peer name eth0 netns {netns}",
                       f"link set {veth} master {bridge.name}",
                       f"link set {veth} up"]
    ip_batch(root_lines)
    for netns, _, address in hosts:
        lines = ["link set lo up", f"addr add {address}/{bridge.prefixlen} dev eth0",
                 "link set eth0 up"]
        if default_route:
            lines.append(f"route add default via {bridge.gateway}")
        ip_batch(lines, netns=netns)


def delete_netns(names: list[str]) -> None:
    """Delete namespaces; their veth ends go with them, and so do the bridge-side peers."""
    existing = set(list_netns())
    ip_batch([f"netns del {n}" for n in names if n in existing])


def list_netns(prefix: str = "") -> list[str]:
    path = Path("/run/netns")
    return sorted(p.name for p in path.iterdir() if p.name.startswith(prefix)) if path.exists() else []


def list_links(prefix: str) -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))


def forwarding_enabled() -> bool:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "0"


# ---- cgroups -----------------------------------------------------------------------------------

def hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, the v2 'unified' one)."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mountpoint, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2") and mountpoint.startswith(str(CGROUP_ROOT)):
            out.append(Path(mountpoint))
    return out


def create_cgroup(name: str) -> list[Path]:
    """Create ``name`` in every hierarchy (pitfall 3: each container needs its own cgroups)."""
    dirs = []
    for h in hierarchies():
        d = h / name
        d.mkdir(exist_ok=True)
        if (h / "cpuset.cpus").exists():  # an empty cpuset refuses processes
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())
        dirs.append(d)
    return dirs


def cgroup_join_script(name: str) -> str:
    """Shell that moves the running shell into cgroup ``name`` everywhere (before exec'ing on)."""
    return " ".join(f"echo $$ > {h / name}/cgroup.procs;" for h in hierarchies())


def cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for h in hierarchies():
        top = h / name
        if top.exists():
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids |= {int(p) for p in procs.read_text().split()}
                except OSError:
                    pass
    return pids


def kill_cgroup(name: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in cgroup ``name`` until it is empty."""
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(name):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"cgroup {name} still has processes {sorted(pids)}")
        time.sleep(0.05)


def kill_processes_matching(needle: str) -> None:
    """SIGKILL processes whose command line contains ``needle`` (a path unique to one instance)."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if needle in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    os.kill(int(d.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def remove_cgroup(name: str, timeout: float = 10.0) -> None:
    """Kill what is left in ``name`` and remove it (children first) from every hierarchy."""
    kill_cgroup(name, timeout)
    deadline = time.monotonic() + timeout
    for h in hierarchies():
        top = h / name
        if not top.exists():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True) + [top]
        for d in dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last exiting task leaves
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def list_cgroups(prefix: str) -> list[str]:
    names = set()
    for h in hierarchies():
        names |= {p.name for p in h.iterdir() if p.is_dir() and p.name.startswith(prefix)}
    return sorted(names)
