"""Booted test hosts: systemd-nspawn containers with systemd as PID 1, sshd and apt.

Each host has its own network namespace with a veth on the instance's bridge, its own overlayfs
upper layer over the shared rootfs, its own sshd host key, and its own cgroups. Every fix of the
"nine things that broke" in /work/shared/notes/test-hosts.md is applied here or in rootfs.py;
the numbers in the comments refer to that list.

    hosts = BootedHosts(count=3)
    hosts.up()
    hosts[0].exec("hostname").stdout
    hosts.reset()          # every host back to the pristine rootfs, in seconds
    hosts.down()           # nothing left behind
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import network
from .instance import (Service, acquire_index, apt_proxy_service, start_service,
                       state_dir, wait_tcp)
from .network import Bridge
from .rootfs import KAI_USER, ensure_rootfs

log = logging.getLogger(__name__)

KIND = "booted"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def bridge_for(index: int) -> Bridge:
    return Bridge(f"kaibr{index}", ipaddress.ip_network(f"10.250.{index}.0/24"))


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Host:
    name: str
    address: str
    index: int                 # 1-based position in the instance
    known_hosts: Path
    key_file: Path
    workdir: Path              # upper/, work/, merged/, containerd/, launch.sh, console.log
    lower: Path
    ssh_port: int = 22
    launcher_pid: int | None = None
    leader_pid: int | None = None
    _launcher: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def netns(self) -> str:
        return self.name

    @property
    def cgroup(self) -> str:
        return self.name

    # ---- running commands inside, without ssh ----------------------------------------------

    def exec(self, cmd: str | list[str], check: bool = True, timeout: float | None = 600,
             input: str | None = None, user: str = "root") -> subprocess.CompletedProcess:
        """Run ``cmd`` (a shell string or argv) inside the host via nsenter; ssh is not involved."""
        if self.leader_pid is None or not _alive(self.leader_pid):
            raise RuntimeError(f"{self.name}: not running")
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if user != "root":
            argv = ["runuser", "-u", user, "--", *argv]
        env = ["env", "-i", f"PATH={HOST_PATH}", "LANG=C.UTF-8", "TERM=dumb",
               f"HOME={'/root' if user == 'root' else '/home/' + user}"]
        # The shell joins the host's pids cgroup first, so that nothing it starts outlives teardown.
        wrapper = (f"echo $$ > {network.CGROUP_ROOT}/pids/{self.cgroup}/cgroup.procs 2>/dev/null; "
                   'exec "$@"')
        full = ["sh", "-c", wrapper, "sh", "nsenter", "-t", str(self.leader_pid), "-a", "--",
                *env, *argv]
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def journal(self, unit: str | None = None, lines: int = 200) -> str:
        cmd = ["journalctl", "--no-pager", "-n", str(lines)] + (["-u", unit] if unit else [])
        return self.exec(cmd, check=False).stdout

    def put_file(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Write a file inside the running host (e.g. a stand-in binary)."""
        raw = data.encode() if isinstance(data, str) else data
        d = shlex.quote(os.path.dirname(path) or "/")
        p = shlex.quote(path)
        cmd = f"mkdir -p {d} && cat > {p} && chmod {mode:o} {p}"
        result = subprocess.run(["nsenter", "-t", str(self.leader_pid), "-a", "--", "sh", "-c", cmd],
                                input=raw, capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: writing {path} failed: {result.stderr.decode()}")

    def system_state(self) -> str:
        return self.exec(["systemctl", "is-system-running"], check=False).stdout.strip()

    @property
    def running(self) -> bool:
        return self.launcher_pid is not None and _alive(self.launcher_pid)


class BootedHosts:
    """N booted hosts on bridge ``kaibr<k>`` (10.250.<k>.0/24, gateway .1, hosts .2 …)."""

    def __init__(self, count: int = 3, index: int | None = None,
                 services: list[Service] | None = None, boot_timeout: float = 90.0):
        if count < 1 or count > 200:
            raise ValueError(f"count: must be 1..200, got {count}")
        self.count = count
        self.index, self._lock = acquire_index(KIND, index)
        self.bridge = bridge_for(self.index)
        self.state = state_dir(KIND, self.index)
        self.services = [apt_proxy_service(), *(services or [])]
        self.provisioners: list[Callable[[Host], None]] = []
        self.boot_timeout = boot_timeout
        self.known_hosts = self.state / "known_hosts"
        self.key_file = self.state / "id_ed25519"
        self.hosts: list[Host] = []
        self._service_procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}

    # ---- names ------------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"kai{self.index}-"

    def host_name(self, i: int) -> str:
        return f"kai{self.index}-n{i}"

    def veth_name(self, i: int) -> str:
        return f"kai{self.index}n{i}"

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    # ---- lifecycle --------------------------------------------------------------------------

    def up(self) -> "BootedHosts":
        t0 = time.monotonic()
        self.cleanup_stale()
        shutil.rmtree(self.state / "hosts", ignore_errors=True)  # a crashed run's layers and keys
        lower, build_s = ensure_rootfs()
        self.timings["rootfs_build_s"] = build_s
        t1 = time.monotonic()
        self._make_client_key()
        self.hosts = [self._new_host(i, lower) for i in range(1, self.count + 1)]
        for h in self.hosts:  # after all exist: /etc/hosts lists every host
            self._prepare_upper(h)
        self._write_known_hosts()
        self.bridge.create()
        # Only a default route when the machine cannot forward: then nothing leaves the bridge.
        network.add_hosts_to_bridge(
            self.bridge, [(h.netns, self.veth_name(h.index), h.address) for h in self.hosts],
            default_route=not network.forwarding_enabled())
        for service in self.services:
            self.start_service(service)
        for h in self.hosts:
            self._start(h)
        self._wait_ready(self.hosts)
        self.timings["bring_up_s"] = time.monotonic() - t1
        self.timings["total_up_s"] = time.monotonic() - t0
        self._save_state()
        return self

    def start_service(self, service: Service) -> None:
        """Start a service on the gateway (also after up(): e.g. the local mirror)."""
        proc = start_service(service, self.bridge, f"{self.prefix}svc-{service.name}", self.state)
        self._service_procs[service.name] = proc
        self._save_state()

    def add_provisioner(self, fn: Callable[[Host], None], apply_now: bool = True) -> None:
        """Run ``fn(host)`` on every host now and after every reset (e.g. install stand-ins)."""
        self.provisioners.append(fn)
        if apply_now and self.hosts:
            with ThreadPoolExecutor(len(self.hosts)) as pool:
                list(pool.map(fn, self.hosts))

    def reset(self, hosts: list[Host] | None = None) -> float:
        """Bring hosts back to the pristine rootfs: stop, wipe the upper layer, boot again."""
        t0 = time.monotonic()
        hosts = hosts or self.hosts
        def stop_and_wipe(h: Host) -> None:
            self._stop(h)
            self._prepare_upper(h)

        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(stop_and_wipe, hosts))
        for h in hosts:
            self._start(h)
        self._wait_ready(hosts)
        for fn in self.provisioners:
            with ThreadPoolExecutor(len(hosts)) as pool:
                list(pool.map(fn, hosts))
        self._save_state()
        self.timings["reset_s"] = time.monotonic() - t0
        return self.timings["reset_s"]

    def power_off(self, h: Host) -> None:
        """Pull the plug: the link goes dark first (no FIN or RST reaches anyone, as when a
        machine loses power), then every process of the host is SIGKILLed. Its disk (the upper
        layer) stays as it was: power_on() boots it again."""
        network.run("ip", "link", "set", self.veth_name(h.index), "down")
        network.remove_cgroup(h.cgroup)  # SIGKILLs all of it: nspawn, systemd, sshd, the step
        if h._launcher is not None:
            h._launcher.wait()
            h._launcher = None
        h.launcher_pid = h.leader_pid = None

    def power_on(self, h: Host) -> float:
        """Boot a powered-off host again on its old disk; returns the seconds until sshd answers."""
        t0 = time.monotonic()
        network.run("ip", "link", "set", self.veth_name(h.index), "up")
        self._start(h)
        self._wait_ready([h])
        self._save_state()
        return time.monotonic() - t0

    def detach(self) -> None:
        """Give up the index but leave the hosts running (the CLI); a later down() removes them."""
        self._lock.release()

    def down(self) -> None:
        if self._lock.released:
            return  # already down; the index may belong to someone else by now
        try:
            if self.hosts:
                with ThreadPoolExecutor(len(self.hosts)) as pool:
                    list(pool.map(self._stop, self.hosts))
            self.cleanup_stale()
            shutil.rmtree(self.state / "hosts", ignore_errors=True)
            (self.state / "state.json").unlink(missing_ok=True)
        finally:
            self._lock.release()

    def cleanup_stale(self) -> None:
        """Remove everything carrying this index: processes, cgroups, namespaces, links, bridge."""
        for cg in network.list_cgroups(self.prefix):
            if cg.startswith(f"kai{self.index}-l") or cg == f"kai{self.index}-light":
                continue  # light hosts of the same index are another owner's
            network.remove_cgroup(cg)
        for proc in self._service_procs.values():
            proc.poll()
        self._service_procs.clear()
        network.delete_netns([n for n in network.list_netns(f"kai{self.index}-n")])
        for link in network.list_links(f"kai{self.index}n"):
            network.run("ip", "link", "del", link, check=False)
        self.bridge.delete()

    # ---- helpers ----------------------------------------------------------------------------

    def _make_client_key(self) -> None:
        for p in (self.key_file, self.key_file.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        network.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kai-test-{self.index}",
                    "-f", str(self.key_file))

    def _new_host(self, i: int, lower: Path) -> Host:
        h = Host(name=self.host_name(i), address=self.bridge.address(i), index=i,
                 known_hosts=self.known_hosts, key_file=self.key_file,
                 workdir=self.state / "hosts" / f"n{i}", lower=lower)
        keydir = h.workdir / "hostkey"
        keydir.mkdir(parents=True, exist_ok=True)
        network.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name,
                    "-f", str(keydir / "ssh_host_ed25519_key"))
        return h

    def _write_known_hosts(self) -> None:
        lines = []
        for h in self.hosts:
            pub = (h.workdir / "hostkey" / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{h.name},{h.address} {pub[0]} {pub[1]}\n")
        self.known_hosts.write_text("".join(lines))

    def _etc_hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{self.bridge.gateway}\tkai-gateway"]
        lines += [f"{h.address}\t{h.name}" for h in self.hosts]
        return "\n".join(lines) + "\n"

    def _prepare_upper(self, h: Host) -> None:
        """A fresh upper layer holding only the per-host files. Never called while h runs."""
        for sub in ("upper", "work", "containerd", "merged"):
            shutil.rmtree(h.workdir / sub, ignore_errors=True)
            (h.workdir / sub).mkdir(parents=True)
        passwd = {line.split(":")[0]: line.split(":") for line in
                  (h.lower / "etc/passwd").read_text().splitlines()}
        kai_uid, kai_gid = int(passwd[KAI_USER][2]), int(passwd[KAI_USER][3])
        keydir = h.workdir / "hostkey"
        client_pub = self.key_file.with_suffix(".pub").read_text()
        files = [
            ("etc/hostname", h.name + "\n", 0o644, 0, 0),
            ("etc/hosts", self._etc_hosts(), 0o644, 0, 0),
            ("etc/machine-id", uuid.uuid4().hex + "\n", 0o444, 0, 0),
            ("etc/ssh/ssh_host_ed25519_key", (keydir / "ssh_host_ed25519_key").read_text(), 0o600, 0, 0),
            ("etc/ssh/ssh_host_ed25519_key.pub", (keydir / "ssh_host_ed25519_key.pub").read_text(), 0o644, 0, 0),
            ("root/.ssh/authorized_keys", client_pub, 0o600, 0, 0),
            (f"home/{KAI_USER}/.ssh/authorized_keys", client_pub, 0o600, kai_uid, kai_gid),
            # Debian through the proxy; services on the gateway itself (the local mirror) direct.
            ("etc/apt/apt.conf.d/01kai-proxy",
             f'Acquire::http::Proxy "http://{self.bridge.gateway}:3142";\n'
             f'Acquire::http::Proxy::{self.bridge.gateway} "DIRECT";\n', 0o644, 0, 0),
        ]
        upper = h.workdir / "upper"
        for rel, text, mode, uid, gid in files:
            _upper_mkdirs(upper, h.lower, Path(rel).parent, default_owner=(uid, gid))
            path = upper / rel
            path.write_text(text)
            os.chown(path, uid, gid)
            path.chmod(mode)

    def _launch_script(self, h: Host) -> str:
        w = h.workdir
        nspawn = [
            "systemd-nspawn", "--boot", f"--directory={w / 'merged'}", f"--machine={h.name}",
            "--register=no", "--keep-unit",                        # 1
            f"--network-namespace-path=/run/netns/{h.netns}",
            "--capability=all",                                    # 9
            "--system-call-filter=@keyring bpf",                   # 5
            f"--bind={w / 'containerd'}:/var/lib/containerd",      # 6
            "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=read-only",
        ]
        inner = " && ".join([
            "mount -t tmpfs tmpfs /run/systemd",                   # 2
            f"mount -t overlay overlay -o lowerdir={h.lower},upperdir={w / 'upper'},"
            f"workdir={w / 'work'} {w / 'merged'}",
            "exec env SYSTEMD_NSPAWN_API_VFS_WRITABLE=network " + shlex.join(nspawn),  # 7
        ])
        return "\n".join([
            "#!/bin/sh",
            "# generated by tests/hosts/booted.py: one booted test host",
            "set -e",
            network.cgroup_join_script(h.cgroup),                  # 3
            "exec unshare --mount --propagation private --fork --kill-child -- sh -c "
            + shlex.quote(inner),
            "",
        ])

    def _start(self, h: Host) -> None:
        network.create_cgroup(h.cgroup)
        script = h.workdir / "launch.sh"
        script.write_text(self._launch_script(h))
        console = open(h.workdir / "console.log", "wb")
        h._launcher = subprocess.Popen(["sh", str(script)], stdin=subprocess.DEVNULL,
                                       stdout=console, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        console.close()
        h.launcher_pid = h._launcher.pid
        h.leader_pid = None

    def _find_leader(self, h: Host) -> int | None:
        """The container's PID 1 as seen from the machine: systemd under nspawn under unshare."""
        for nspawn in _children(h.launcher_pid):
            for child in _children(nspawn):
                try:
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        return child
                except OSError:
                    pass
        return None

    def _wait_one(self, h: Host) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while h.leader_pid is None:
            if not _alive(h.launcher_pid):
                raise RuntimeError(f"{h.name}: nspawn exited early:\n{self._console_tail(h)}")
            h.leader_pid = self._find_leader(h)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{h.name}: no init after {self.boot_timeout}s:\n{self._console_tail(h)}")
            time.sleep(0.05)
        wait_tcp(h.address, h.ssh_port, max(1.0, deadline - time.monotonic()), f"{h.name} sshd")
        state = ""
        while time.monotonic() < deadline:
            state = h.exec(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state not in ("initializing", "starting", ""):
                break
            time.sleep(0.1)
        if state != "running":
            failed = h.exec(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
            raise RuntimeError(f"{h.name}: system state {state!r}; failed units:\n{failed}")

    def _wait_ready(self, hosts: list[Host]) -> None:
        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(self._wait_one, hosts))

    def _console_tail(self, h: Host) -> str:
        try:
            return (h.workdir / "console.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _stop(self, h: Host, timeout: float = 8.0) -> None:
        """SIGTERM to nspawn (clean poweroff of the container), SIGKILL to what remains."""
        if h.launcher_pid is not None and _alive(h.launcher_pid):
            for nspawn in _children(h.launcher_pid):
                try:
                    os.kill(nspawn, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while _alive(h.launcher_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        network.remove_cgroup(h.cgroup)
        if h._launcher is not None:
            h._launcher.wait()
            h._launcher = None
        h.launcher_pid = h.leader_pid = None

    # ---- state for the CLI ------------------------------------------------------------------

    def _save_state(self) -> None:
        data = {"index": self.index, "bridge": self.bridge.name, "gateway": self.bridge.gateway,
                "known_hosts": str(self.known_hosts), "key_file": str(self.key_file),
                "hosts": [{"name": h.name, "address": h.address, "leader_pid": h.leader_pid,
                           "launcher_pid": h.launcher_pid} for h in self.hosts]}
        (self.state / "state.json").write_text(json.dumps(data, indent=2) + "\n")

    def spec_fragment(self, roles: dict[str, list[str]] | None = None) -> dict:
        return spec_fragment(self.hosts, roles)


def spec_fragment(hosts: list[Host], roles: dict[str, list[str]] | None = None) -> dict:
    """The ``ssh`` and ``nodes`` part of a kai cluster spec for these hosts, as a plain dict.

    Host keys are verified against the harness's known_hosts file. Without ``roles`` the first
    host is the control plane and the rest are workers.
    """
    if not hosts:
        raise ValueError("hosts: empty")
    roles = roles or {}
    return {
        "ssh": {"user": "root", "port": hosts[0].ssh_port, "private_key_file": str(hosts[0].key_file),
                "known_hosts_file": str(hosts[0].known_hosts)},
        "nodes": [{"name": h.name, "address": h.address,
                   "roles": roles.get(h.name, ["control-plane"] if i == 0 else ["worker"])}
                  for i, h in enumerate(hosts)],
    }


def _upper_mkdirs(upper: Path, lower: Path, rel: Path, default_owner: tuple[int, int]) -> None:
    """Create ``rel``'s directories in the upper layer with the lower layer's owner and mode.

    In overlayfs the upper directory's metadata wins, so a /root made 0755 here would be 0755 in
    the host; directories absent below get ``default_owner`` and 0700.
    """
    current = Path()
    for part in rel.parts:
        current /= part
        up = upper / current
        if up.exists():
            continue
        up.mkdir()
        low = lower / current
        if low.exists():
            st = low.stat()
            os.chown(up, st.st_uid, st.st_gid)
            up.chmod(st.st_mode & 0o7777)
        else:
            os.chown(up, *default_owner)
            up.chmod(0o700)
