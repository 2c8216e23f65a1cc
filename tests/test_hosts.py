"""The test-host harness itself: booted hosts boot, verify host keys, install containerd through
the apt proxy, reset fast, and leave nothing behind; light hosts come up by the dozen.

Measurements are printed (run with -s to see them): bring-up, reset, light-host bring-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import pytest

from tests.hosts import network
from tests.hosts.booted import BootedHosts
from tests.hosts.fixtures import require
from tests.hosts.light import LightHosts
from tests.hosts.rootfs import KAI_PASSWORD, KAI_USER

pytestmark = pytest.mark.hosts


# ---- what a harness instance leaves on the machine ---------------------------------------------

def snapshot(kind: str, index: int, state: Path) -> dict[str, set[str]]:
    """Everything on the machine that belongs to harness instance ``index`` of ``kind``.

    Booted and light hosts of one index have different owners, so each kind looks only at its own
    names: booted ``kai<k>-n*`` / ``kai<k>-svc-*`` / ``kai<k>n*`` / ``kaibr<k>``, light
    ``kai<k>-l*`` / ``kai<k>-light`` / ``kl<k>h*`` / ``kailb<k>``.
    """
    if kind == "booted":
        prefixes, links, bridge = (f"kai{index}-n", f"kai{index}-svc-"), f"kai{index}n", f"kaibr{index}"
    else:
        prefixes, links, bridge = (f"kai{index}-l",), f"kl{index}h", f"kailb{index}"
    procs = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cgroups = (d / "cgroup").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(f"/{p}" in cgroups or p in cmdline for p in prefixes) or str(state) in cmdline:
            procs.add(f"{d.name} {cmdline[:100]}")
    mounts = {line for line in Path("/proc/self/mounts").read_text().splitlines()
              if str(state) in line or any(f"/run/netns/{p}" in line for p in prefixes)}
    return {
        "processes": procs,
        "netns": {n for n in network.list_netns() if n.startswith(prefixes)},
        "links": {link for link in os.listdir("/sys/class/net")
                  if link.startswith(links) or link == bridge},
        "cgroups": {c for c in network.list_cgroups(f"kai{index}-") if c.startswith(prefixes)},
        "mounts": mounts,
    }


def assert_nothing_left(kind: str, index: int, state: Path, grace: float = 10.0) -> None:
    # Grace: an sshd session process orphaned by its killed listener stays a zombie until the
    # machine's PID 1 reaps it; real leftovers outlast the grace period.
    deadline = time.monotonic() + grace
    while (left := {k: v for k, v in snapshot(kind, index, state).items() if v}) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"harness instance {index} left behind: {left}"


# ---- booted hosts ---------------------------------------------------------------------------------

def test_hosts_are_booted_and_named(clean_hosts):
    assert len(clean_hosts) == int(os.environ.get("KAI_TEST_HOSTS", "3"))
    addresses = {h.address for h in clean_hosts}
    assert len(addresses) == len(clean_hosts)
    for h in clean_hosts:
        assert h.system_state() == "running", h.exec("systemctl --failed", check=False).stdout
        assert h.exec("hostname").stdout.strip() == h.name
        # every host resolves every other host through /etc/hosts (there is no DNS)
        for other in clean_hosts:
            assert h.exec(["getent", "hosts", other.name]).stdout.split()[0] == other.address
        # each host has its own machine-id and its own host key
    assert len({h.exec("cat /etc/machine-id").stdout for h in clean_hosts}) == len(clean_hosts)
    assert len({h.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
                 for h in clean_hosts}) == len(clean_hosts)


def test_ssh_verifies_host_keys(clean_hosts):
    for h in clean_hosts:
        client = paramiko.SSHClient()
        client.load_host_keys(str(h.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(h.address, port=h.ssh_port, username="root", key_filename=str(h.key_file),
                       allow_agent=False, look_for_keys=False, timeout=10)
        try:
            _, out, _ = client.exec_command("hostname")
            assert out.read().decode().strip() == h.name
        finally:
            client.close()
    # the same connection with a known_hosts file that lacks the host is refused
    h = clean_hosts[0]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(h.address, username="root", key_filename=str(h.key_file),
                       allow_agent=False, look_for_keys=False, timeout=10)
    client.close()


def test_kai_user_sudo_needs_password(clean_hosts):
    h = clean_hosts[0]
    no_password = h.exec(["sudo", "-n", "true"], user=KAI_USER, check=False)
    assert no_password.returncode != 0
    assert "password is required" in no_password.stderr
    with_password = h.exec(["sudo", "-S", "-p", "", "id", "-u"], user=KAI_USER,
                           input=KAI_PASSWORD + "\n")
    assert with_password.stdout.strip() == "0"


def test_apt_proxy_refuses_other_destinations(clean_hosts):
    h = clean_hosts[0]
    gateway = clean_hosts.bridge.gateway
    code = h.exec(f"curl -s -o /dev/null -w '%{{http_code}}' -x http://{gateway}:3142 "
                  "http://example.com/", check=False).stdout
    assert code == "403"
    # no tunnel: CONNECT (https through the proxy) is refused
    tunnel = h.exec(f"curl -s -o /dev/null -x http://{gateway}:3142 https://deb.debian.org/",
                    check=False)
    assert tunnel.returncode != 0


def test_container_fixes_inside_hosts(clean_hosts):
    h = clean_hosts[0]
    machine_value = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text()
    h.exec("modprobe overlay && modprobe br_netfilter")               # pitfall 8
    h.exec("sysctl -w net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1")  # pitfall 7
    h.exec("sysctl --system")
    # net.* is per namespace: the machine's own values are untouched
    assert Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text() == machine_value
    assert not network.forwarding_enabled()
    h.exec("test -w /sys/fs/cgroup/cpuset")                             # pitfall 4
    assert h.exec("findmnt -n -o FSTYPE /var/lib/containerd").stdout.strip() != "overlay"  # 6


def test_containerd_installs_on_all_hosts_in_parallel(clean_hosts):
    def install(h):
        t0 = time.monotonic()
        h.exec("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd",
               timeout=600)
        return time.monotonic() - t0

    with ThreadPoolExecutor(len(clean_hosts)) as pool:
        seconds = list(pool.map(install, clean_hosts))
    print(f"\ncontainerd install through the proxy, {len(clean_hosts)} hosts in parallel: "
          f"{max(seconds):.1f}s")
    for h in clean_hosts:
        assert h.exec(["systemctl", "is-active", "containerd"]).stdout.strip() == "active"
        assert "Server:" in h.exec(["ctr", "version"]).stdout
        assert "containerd" in h.journal("containerd.service")


def test_reset_is_fast_and_clean(clean_hosts):
    for h in clean_hosts:
        h.exec("echo dirty > /root/marker && mkdir -p /var/lib/containerd/x")
    seconds = clean_hosts.reset()
    print(f"\nreset of {len(clean_hosts)} booted hosts: {seconds:.1f}s")
    assert seconds < 30
    for h in clean_hosts:
        assert h.system_state() == "running"
        assert h.exec("test -e /root/marker", check=False).returncode == 1
        assert h.exec("test -e /var/lib/containerd/x", check=False).returncode == 1
        assert h.exec("test -e /usr/bin/containerd", check=False).returncode == 1


def test_spec_fragment_lists_the_hosts(clean_hosts):
    spec = clean_hosts.spec_fragment()
    assert spec["ssh"] == {"user": "root", "port": 22, "private_key_file": str(clean_hosts.key_file),
                           "known_hosts_file": str(clean_hosts.known_hosts)}
    assert [n["address"] for n in spec["nodes"]] == [h.address for h in clean_hosts]
    assert spec["nodes"][0]["roles"] == ["control-plane"]


def test_teardown_and_stale_cleanup_leave_nothing():
    """A crashed run's leftovers are removed by the next run of the same index; down() leaves nothing."""
    require(booted=True)
    crashed = BootedHosts(1)
    index, state = crashed.index, crashed.state
    crashed.cleanup_stale()
    assert_nothing_left("booted", index, state)
    crashed.up()
    t0 = time.monotonic()
    assert snapshot("booted", index, state)["netns"] == {f"kai{index}-n1"}
    crashed.detach()  # as if the process had died: everything still runs, nobody owns it

    again = BootedHosts(2, index=index)
    try:
        again.up()
        print(f"\nbring-up of 2 booted hosts over a crashed run's leftovers: "
              f"{again.timings['total_up_s']:.1f}s (cached rootfs)")
        assert again[0].system_state() == "running"
        assert snapshot("booted", index, state)["netns"] == {f"kai{index}-n1", f"kai{index}-n2"}
        # A real crash leaves these to PID 1; here this process is their parent and reaps them.
        for proc in [h._launcher for h in crashed.hosts] + list(crashed._service_procs.values()):
            proc.wait(timeout=10)
    finally:
        again.down()
    assert_nothing_left("booted", index, state)
    assert time.monotonic() - t0 < 120


# ---- light hosts ----------------------------------------------------------------------------------

def eth0_addresses(h) -> str:
    """`ip addr` of the host's eth0, over SSH as root (its key, its pinned host key)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(h.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(h.address, username="root", key_filename=str(h.key_file),
                   allow_agent=False, look_for_keys=False, timeout=20)
    try:
        _, out, _ = client.exec_command("ip -4 -o addr show dev eth0")
        return out.read().decode()
    finally:
        client.close()


def test_fifty_light_hosts(light_hosts):
    hosts: LightHosts = light_hosts(50)
    index, state = hosts.index, hosts.state
    print(f"\n50 light hosts up in {hosts.timings['bring_up_s']:.1f}s")
    t0 = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        outputs = list(pool.map(eth0_addresses, hosts))
    print(f"paramiko command on 50 light hosts: {time.monotonic() - t0:.1f}s")
    for h, out in zip(hosts, outputs):
        assert f" {h.address}/" in out
    assert len(snapshot("light", index, state)["netns"]) == 50
    hosts.down()
    assert_nothing_left("light", index, state)


def test_cli_status_without_hosts_says_so():
    result = subprocess.run([sys.executable, "-m", "tests.hosts", "--index", "199", "status"],
                            capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 1
    assert "bridge kaibr199: absent" in result.stdout
    assert "no booted hosts with index 199" in result.stderr


def test_light_hosts_work_with_the_cache_under_a_world_writable_dir(light_hosts, tmp_path, monkeypatch):
    """sshd's StrictModes refuses an authorized_keys file with a group/world-writable parent; a
    cache dir under /tmp (mode 1777) must not make every light host refuse the harness's key."""
    world_writable = Path("/tmp")
    assert tmp_path.is_relative_to(world_writable) and world_writable.stat().st_mode & 0o002
    monkeypatch.setenv("KAI_TEST_CACHE_DIR", str(tmp_path / "cache"))
    hosts: LightHosts = light_hosts(2)
    assert hosts.state.is_relative_to(tmp_path)
    for h in hosts:
        assert f" {h.address}/" in eth0_addresses(h)
