"""Light test hosts: a network namespace each, running the machine's own sshd. Nothing else.

For transport, scale and benchmark tests of harmless commands only: a command run there runs on
the machine itself (same filesystem, same processes), just from another network address. 50 come
up in a few seconds.

Bridge ``kailb<k>``, subnet 10.251.<k>.0/24 (gateway .1, hosts .2 …), namespaces ``kai<k>-l<i>``,
all sshd processes in cgroup ``kai<k>-light``. One generated host key is shared by all light
hosts; the known_hosts file lists it for every address.

The key files (client key, authorized_keys, host key) live in a private directory,
``/var/lib/kai-test-hosts/light-<k>`` (0700), not in the cache dir: sshd's StrictModes refuses
an authorized_keys file if any directory above it is group- or world-writable, so a cache under
/tmp would make every light host refuse the harness's key ("authentication failed").
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import network
from .instance import acquire_index, state_dir, wait_tcp
from .network import Bridge

KIND = "light"
SSHD = "/usr/sbin/sshd"
KEYS_ROOT = Path("/var/lib/kai-test-hosts")  # root-owned parents only, whatever the cache dir is


@dataclass(frozen=True)
class LightHost:
    name: str
    address: str
    known_hosts: Path
    key_file: Path
    ssh_port: int = 22

    def exec(self, cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``cmd`` in the host's network namespace (it is the machine otherwise)."""
        result = subprocess.run(["ip", "netns", "exec", self.name, "sh", "-c", cmd],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)
        return result


def bridge_for(index: int) -> Bridge:
    return Bridge(f"kailb{index}", ipaddress.ip_network(f"10.251.{index}.0/24"))


class LightHosts:
    def __init__(self, count: int, index: int | None = None):
        if not 1 <= count <= 250:
            raise ValueError(f"count: must be 1..250, got {count}")
        self.count = count
        self.index, self._lock = acquire_index(KIND, index)
        self.bridge = bridge_for(self.index)
        self.state = state_dir(KIND, self.index)
        self.cgroup = f"kai{self.index}-light"
        self.keys = KEYS_ROOT / f"{KIND}-{self.index}"
        self.known_hosts = self.state / "known_hosts"
        self.key_file = self.keys / "id_ed25519"
        self.hosts: list[LightHost] = []
        self.timings: dict[str, float] = {}

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, i: int) -> LightHost:
        return self.hosts[i]

    def up(self, timeout: float = 60.0) -> "LightHosts":
        t0 = time.monotonic()
        self.cleanup_stale()
        self._make_keys()
        self.hosts = [LightHost(f"kai{self.index}-l{i}", self.bridge.address(i), self.known_hosts,
                                self.key_file) for i in range(1, self.count + 1)]
        self.known_hosts.write_text("".join(f"{h.name},{h.address} {self._host_pub}\n"
                                            for h in self.hosts))
        self.bridge.create()
        network.add_hosts_to_bridge(
            self.bridge, [(h.name, f"kl{self.index}h{i}", h.address)
                          for i, h in enumerate(self.hosts, 1)], default_route=False)
        network.create_cgroup(self.cgroup)
        join = network.cgroup_join_script(self.cgroup)
        log = open(self.state / "sshd.log", "ab")
        cfg = self._write_config()
        for h in self.hosts:
            # /run is the machine's: each sshd gets a private tmpfs /run in its own mount namespace.
            # The cgroup is joined before `ip netns exec`, which hides /sys/fs/cgroup behind a new /sys.
            inner = f"mount -t tmpfs none /run && mkdir /run/sshd && exec {SSHD} -D -e -f {cfg}"
            proc = subprocess.Popen(["sh", "-c", f'{join} exec "$@"', "sh",
                                     "ip", "netns", "exec", h.name, "sh", "-c", inner],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self._procs.append(proc)
        log.close()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda h: wait_tcp(h.address, h.ssh_port, timeout, h.name), self.hosts))
        self.timings["bring_up_s"] = time.monotonic() - t0
        return self

    _procs: list[subprocess.Popen]

    def _make_keys(self) -> None:
        self._procs = []
        self.keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.keys, 0o700)  # an existing directory keeps its mode otherwise
        if problems := strict_modes_problems(self.keys):
            raise RuntimeError(f"{self.keys}: sshd's StrictModes would refuse keys here: "
                               + "; ".join(problems))
        for name in ("id_ed25519", "ssh_host_ed25519_key"):
            for p in (self.keys / name, self.keys / f"{name}.pub"):
                p.unlink(missing_ok=True)
            network.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kai-light-{self.index}",
                        "-f", str(self.keys / name))
        pub = (self.keys / "ssh_host_ed25519_key.pub").read_text().split()
        self._host_pub = f"{pub[0]} {pub[1]}"
        shutil.copy(self.keys / "id_ed25519.pub", self.keys / "authorized_keys")

    def _write_config(self) -> Path:
        cfg = self.state / "sshd_config"
        cfg.write_text("\n".join([
            "ListenAddress 0.0.0.0",  # only the namespace's own address exists there
            f"HostKey {self.keys / 'ssh_host_ed25519_key'}",
            f"AuthorizedKeysFile {self.keys / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "UseDNS no",
            "PidFile /run/sshd.pid", "MaxSessions 20", "MaxStartups 200",
            "Subsystem sftp internal-sftp", "",
        ]))
        return cfg

    def detach(self) -> None:
        """Give up the index but leave the hosts running (the CLI); a later down() removes them."""
        self._lock.release()

    def down(self) -> None:
        if self._lock.released:
            return  # already down; the index may belong to someone else by now
        try:
            self.cleanup_stale()
            for proc in getattr(self, "_procs", []):
                proc.wait(timeout=10)
            self._procs = []
        finally:
            self._lock.release()

    def cleanup_stale(self) -> None:
        # By cgroup, and by config path for sshds started before they were put in the cgroup.
        network.kill_processes_matching(str(self.state / "sshd_config"))
        network.remove_cgroup(self.cgroup)
        network.delete_netns(network.list_netns(f"kai{self.index}-l"))
        for link in network.list_links(f"kl{self.index}h"):
            network.run("ip", "link", "del", link, check=False)
        self.bridge.delete()


def strict_modes_problems(directory: Path) -> list[str]:
    """Why sshd's StrictModes would refuse files in ``directory`` (root's keys): it and every
    directory above it must be owned by root and not group- or world-writable."""
    problems = []
    for path in [directory, *directory.parents]:
        st = path.stat()
        if st.st_uid != 0:
            problems.append(f"{path} is owned by uid {st.st_uid}, not root")
        if st.st_mode & 0o022:
            problems.append(f"{path} is group/world-writable (mode {st.st_mode & 0o7777:o})")
    return problems
