"""The shared root filesystem of the booted test hosts.

Built once with debootstrap, adjusted for systemd-nspawn on this kind of machine (see
/work/shared/notes/test-hosts.md, "the nine things that broke"), cached as tar.zst under
``tests/.cache/`` and kept extracted beside it: every host mounts it read-only as the overlayfs
lower layer.

Two cache levels, so that changing a tweak does not re-run the 80 s debootstrap:
``base-<packages key>/`` (the bare debootstrap result) and ``rootfs-<full key>.tar.zst`` +
``rootfs-<full key>/`` (base + tweaks). The full key covers the package list, the suite, the
mirror, the kernel release (modules.builtin) and the source of the tweaks below.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import inspect
import logging
import os
import platform
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SUITE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "iputils-ping", "kmod",
    "procps", "iptables", "ca-certificates", "curl", "gnupg", "sudo",
    # for the stand-ins (tests/hosts/standins/)
    "python3", "python3-yaml", "python3-cryptography", "openssl",
    # debootstrap does not resolve virtual packages: python3-cryptography needs this provider
    "python3-cffi-backend",
    # the control planes' stacked etcd, run by the kubelet stand-in from kubeadm's manifest
    "etcd-server", "etcd-client",
)
DEBIAN_HOST = "deb.debian.org"
DEBIAN_MIRROR = f"http://{DEBIAN_HOST}/debian"

KAI_USER = "kai"
KAI_PASSWORD = "kai-test-password"  # test-only account inside throw-away hosts

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """``tests/.cache`` unless ``KAI_TEST_CACHE_DIR`` points elsewhere (e.g. a CI cache)."""
    path = Path(os.environ.get("KAI_TEST_CACHE_DIR") or REPO_ROOT / "tests" / ".cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


# Kernel modules kai's scripts may modprobe, with the config symbol that builds each in. This
# machine's kernel has CONFIG_MODULES=n: listing the built-in ones in modules.builtin lets
# `modprobe overlay` succeed inside the hosts (pitfall 8), and never claims a module the kernel lacks.
MODULE_CONFIG = {
    "overlay": "OVERLAY_FS", "br_netfilter": "BRIDGE_NETFILTER", "bridge": "BRIDGE",
    "veth": "VETH", "vxlan": "VXLAN", "ip_tables": "IP_NF_IPTABLES",
    "iptable_filter": "IP_NF_FILTER", "iptable_nat": "IP_NF_NAT", "iptable_mangle": "IP_NF_MANGLE",
    "ip6_tables": "IP6_NF_IPTABLES", "ip6table_filter": "IP6_NF_FILTER",
    "ip6table_nat": "IP6_NF_NAT", "nf_nat": "NF_NAT", "nf_conntrack": "NF_CONNTRACK",
    "nf_tables": "NF_TABLES", "nft_compat": "NFT_COMPAT", "x_tables": "NETFILTER_XTABLES",
    "xt_conntrack": "NETFILTER_XT_MATCH_CONNTRACK", "xt_MASQUERADE": "NETFILTER_XT_TARGET_MASQUERADE",
    "xt_comment": "NETFILTER_XT_MATCH_COMMENT", "xt_mark": "NETFILTER_XT_MARK",
    "xt_addrtype": "NETFILTER_XT_MATCH_ADDRTYPE", "xt_multiport": "NETFILTER_XT_MATCH_MULTIPORT",
    "ip_set": "IP_SET", "ip_vs": "IP_VS", "ip_vs_rr": "IP_VS_RR", "ip_vs_wrr": "IP_VS_WRR",
    "ip_vs_sh": "IP_VS_SH", "nf_conntrack_netlink": "NF_CT_NETLINK", "tun": "TUN",
    "dummy": "DUMMY", "ipip": "NET_IPIP", "wireguard": "WIREGUARD", "sch_htb": "NET_SCH_HTB",
}


def builtin_modules() -> list[str]:
    """Names of kernel modules built into the running kernel (from /proc/config.gz and /sys/module)."""
    names = {p.name for p in Path("/sys/module").iterdir() if not (p / "initstate").exists()}
    config = Path("/proc/config.gz")
    if config.exists():
        enabled = {
            line.split("=", 1)[0].removeprefix("CONFIG_")
            for line in gzip.decompress(config.read_bytes()).decode().splitlines()
            if line.endswith("=y")
        }
        names |= {mod for mod, symbol in MODULE_CONFIG.items() if symbol in enabled}
    return sorted(names)


# Files written into the rootfs (paths relative to it). Per-host files (hostname, hosts, keys,
# machine-id, apt proxy) are written into each host's overlay upper instead: see booted.py.
TWEAK_FILES = {
    # Pitfall 4: runc creates cgroups; nspawn mounts the v1 hierarchies read-only.
    "etc/systemd/system/kai-remount-cgroups.service": """\
[Unit]
Description=Make the cgroup v1 hierarchies writable (test host under systemd-nspawn)
DefaultDependencies=no
Before=sysinit.target
ConditionPathIsDirectory=/sys/fs/cgroup

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for d in /sys/fs/cgroup/*/; do mount -o remount,rw,bind "$d" "$d" || true; done'

[Install]
WantedBy=sysinit.target
""",
    # Bounded shutdown: a stuck unit must not hold a reset for 90 s.
    "etc/systemd/system.conf.d/kai-test.conf": "[Manager]\nDefaultTimeoutStopSec=5s\n",
    "etc/ssh/sshd_config.d/kai-test.conf": """\
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication yes
UseDNS no
""",
    # The sudo tests need a user whose sudo asks for the password.
    "etc/sudoers.d/kai": f"{KAI_USER} ALL=(ALL:ALL) ALL\n",
    "etc/apt/apt.conf.d/90kai-test": 'Acquire::Languages "none";\nAcquire::Retries "3";\n',
    # No DNS inside the hosts: names come from /etc/hosts.
    "etc/resolv.conf": "# test host: no DNS; names are in /etc/hosts\n",
    # Same Debian sources as the machine's apt, reached through the gateway's proxy.
    "etc/apt/sources.list": "",
    "etc/apt/sources.list.d/debian.sources": f"""\
Types: deb
URIs: {DEBIAN_MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://{DEBIAN_HOST}/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
""",
}
# Pitfall 7: global sysctls stay the machine's; `sysctl --system` must not fail on them.
MASKED_SYSCTL_FILES = ("50-pid-max.conf", "99-protect-links.conf")


def _chroot(root: Path, *cmd: str, stdin: str | None = None) -> None:
    subprocess.run(["chroot", str(root), *cmd], input=stdin, text=True, check=True,
                   capture_output=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})


def _apply_tweaks(root: Path, kernel: str, modules: list[str]) -> None:
    for rel, text in TWEAK_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(text)
    (root / "etc/sudoers.d/kai").chmod(0o440)
    (root / "etc/systemd/system/sysinit.target.wants").mkdir(parents=True, exist_ok=True)
    os.symlink("/etc/systemd/system/kai-remount-cgroups.service",
               root / "etc/systemd/system/sysinit.target.wants/kai-remount-cgroups.service")
    for name in MASKED_SYSCTL_FILES:
        os.symlink("/dev/null", root / "etc/sysctl.d" / name)
    # Host keys are per host (written at start); the rootfs must not carry shared ones.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Each host gets its own machine-id in its upper layer.
    (root / "etc/machine-id").write_text("")
    moddir = root / "lib/modules" / kernel
    moddir.mkdir(parents=True, exist_ok=True)
    (moddir / "modules.builtin").write_text("".join(f"kernel/builtin/{m}.ko\n" for m in modules))
    (moddir / "modules.order").write_text("")
    _chroot(root, "depmod", "-a", kernel)
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", KAI_USER)
    _chroot(root, "chpasswd", stdin=f"{KAI_USER}:{KAI_PASSWORD}\n")
    _chroot(root, "visudo", "-c", "-q")
    # Container-irrelevant units that would otherwise leave the system "degraded" or slow.
    for unit in ("systemd-networkd-wait-online.service", "apt-daily.timer",
                 "apt-daily-upgrade.timer", "e2scrub_reap.service", "e2scrub_all.timer",
                 "fstrim.timer", "systemd-timesyncd.service"):
        link = root / "etc/systemd/system" / unit
        if not link.exists():
            os.symlink("/dev/null", link)
    # Debian's etcd.service (data in /var/lib/etcd/default) would occupy kubeadm's etcd ports and
    # data dir: the test hosts' etcd is only the static pod's (the kubelet stand-in runs it).
    for link in ("etc/systemd/system/multi-user.target.wants/etcd.service", "etc/systemd/system/etcd2.service",
                 "etc/systemd/system/etcd.service"):
        (root / link).unlink(missing_ok=True)
    os.symlink("/dev/null", root / "etc/systemd/system/etcd.service")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for f in (root / "var/lib/apt/lists").glob("*_*"):
        f.unlink()


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def base_key() -> str:
    return _key(SUITE, DEBIAN_MIRROR, *PACKAGES)


def rootfs_key() -> str:
    kernel = platform.release()
    tweaks_src = inspect.getsource(_apply_tweaks) + repr(TWEAK_FILES) + repr(MASKED_SYSCTL_FILES)
    return _key(base_key(), kernel, ",".join(builtin_modules()), tweaks_src)


@contextmanager
def _locked(path: Path):
    """Serialise builds between harness instances (two test runs may start at once)."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _debootstrap(target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
           SUITE, str(tmp), DEBIAN_MIRROR]
    log.info("debootstrap: %s", " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{result.stdout[-3000:]}"
                           f"\n{result.stderr[-2000:]}")
    tmp.rename(target)


def ensure_rootfs() -> tuple[Path, float]:
    """Return the extracted, tweaked rootfs directory and the seconds spent building it (0 if cached)."""
    cache = cache_dir()
    key = rootfs_key()
    final = cache / f"rootfs-{key}"
    archive = cache / f"rootfs-{key}.tar.zst"
    started = time.monotonic()
    with _locked(cache / "rootfs.lock"):
        if (final / ".kai-complete").exists():
            return final, 0.0
        tmp = cache / f"rootfs-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if archive.exists():
            tmp.mkdir()
            subprocess.run(["tar", "--zstd", "-xpf", str(archive), "-C", str(tmp),
                            "--numeric-owner", "--xattrs"], check=True)
        else:
            base = cache / f"base-{base_key()}"
            if not base.exists():
                _debootstrap(base)
            subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(tmp)], check=True)
            _apply_tweaks(tmp, platform.release(), builtin_modules())
            partial = archive.with_name(archive.name + ".tmp")
            subprocess.run(["tar", "--zstd", "-cpf", str(partial), "-C", str(tmp),
                            "--numeric-owner", "--xattrs", "."], check=True)
            partial.rename(archive)
        (tmp / ".kai-complete").write_text(key + "\n")
        tmp.rename(final)
        # Older archives are dead weight. Older extracted trees may still be another running
        # harness's lower layer, so they stay (remove tests/.cache by hand to reclaim them).
        for old in cache.glob("rootfs-*.tar.zst"):
            if old != archive:
                old.unlink(missing_ok=True)
    return final, time.monotonic() - started


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    path, seconds = ensure_rootfs()
    print(f"{path} built in {seconds:.1f}s")
