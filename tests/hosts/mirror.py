"""The tests' local mirror, in the layout of docs/architecture.md §6, and a small HTTP server for it.

    root = build_mirror()                       # cached under tests/.cache/mirror/<key>/
    with MirrorServer(root, "10.250.0.1") as m: # or "127.0.0.1"
        spec["mirror"] = {"url": m.url}

Contents: containerd / runc / CNI plugins as upstream-style release files repackaged from Debian's
packages; an apt flat repository per Kubernetes minor (signed like pkgs.k8s.io) holding the
stand-in packages kubeadm, kubelet, kubectl, cri-tools and kubernetes-cni; stand-in CNI and
local-path-provisioner manifests; helm, the cilium chart repository and the monitoring release
files with their checksum files (addon_files.py). Versions come from installers/versions.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from installers import versions

from . import addon_files
from .standins import manifests as standin_manifests

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
CACHE = Path(os.environ.get("KAI_TEST_CACHE_DIR") or HERE.parent / ".cache") / "mirror"
DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins")
ARCH = "amd64"
GPG_UID = "kai test mirror <mirror@kai.invalid>"


@dataclass(frozen=True)
class MirrorInputs:
    minors: dict[str, str] = field(default_factory=lambda: {
        m.minor: m.default_patch for m in versions.KUBERNETES_MINORS.values()})
    cnis: dict[str, tuple[str, str]] = field(default_factory=lambda: {
        c.name: (c.version, c.manifest_file) for c in versions.CNIS.values()})
    local_path_version: str = versions.LOCAL_PATH_VERSION

    def key(self) -> str:
        h = hashlib.sha256(json.dumps([self.minors, self.cnis, self.local_path_version]).encode())
        h.update(json.dumps(addon_files.pinned_versions()).encode())
        for f in sorted(STANDINS.glob("*.py")) + [Path(__file__), Path(addon_files.__file__)]:
            h.update(f.name.encode() + f.read_bytes())
        return h.hexdigest()[:16]


def standin_files() -> list[Path]:
    """What the packages install on the hosts (manifests.py is the mirror's and gen_schemas.py
    the developer's, not the hosts')."""
    return [f for f in sorted(STANDINS.glob("*.py")) if f.name not in ("manifests.py", "gen_schemas.py")]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(*cmd: str, cwd: Path | None = None, env: dict | None = None, input: bytes | None = None) -> bytes:
    r = subprocess.run(cmd, cwd=cwd, env=env, input=input, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode(errors='replace')[-2000:]}")
    return r.stdout


def upstream_version(deb_version: str) -> str:
    """Debian "1.6.20~ds1-1+deb12u3" -> upstream "1.6.20"."""
    v = deb_version.split(":", 1)[-1]
    for sep in ("~", "+", "-"):
        v = v.split(sep, 1)[0]
    return v


# --- Debian packages -> upstream release files -------------------------------------------------

def fetch_debian_debs(dest: Path) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    have = {p: next(dest.glob(f"{p}_*.deb"), None) for p in DEBIAN_PACKAGES}
    missing = [p for p, f in have.items() if f is None]
    if missing:
        os.chmod(dest, 0o755)  # apt's _apt user wants to write there; root's download works anyway
        run("apt-get", "download", *missing, cwd=dest)
        have = {p: next(dest.glob(f"{p}_*.deb")) for p in DEBIAN_PACKAGES}
    return have  # type: ignore[return-value]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _write_release_file(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            _add_bytes(tar, name, data)


def build_runtime_files(root: Path, debs: dict[str, Path], work: Path) -> dict[str, str]:
    """containerd / runc / CNI plugins in the upstream release formats. -> versions."""
    out: dict[str, str] = {}
    for pkg, deb in debs.items():
        x = work / pkg
        run("dpkg-deb", "-x", str(deb), str(x))
        out[pkg] = upstream_version(run("dpkg-deb", "-f", str(deb), "Version").decode().strip())

    v = out["containerd"]
    d = root / "containerd" / f"v{v}"
    name = f"containerd-{v}-linux-{ARCH}.tar.gz"
    bins = work / "containerd" / "usr" / "bin"
    _write_release_file(d / name, {f"bin/{b.name}": b.read_bytes() for b in sorted(bins.iterdir())})
    (d / f"{name}.sha256sum").write_text(f"{sha256_file(d / name)}  {name}\n")

    v = out["runc"]
    d = root / "runc" / f"v{v}"
    d.mkdir(parents=True, exist_ok=True)
    runc = next(p for p in (work / "runc" / "usr" / "sbin" / "runc", work / "runc" / "usr" / "bin" / "runc")
                if p.exists() and not p.is_symlink())
    shutil.copyfile(runc, d / f"runc.{ARCH}")
    os.chmod(d / f"runc.{ARCH}", 0o755)
    (d / "runc.sha256sum").write_text(f"{sha256_file(d / f'runc.{ARCH}')}  runc.{ARCH}\n")

    v = out["containernetworking-plugins"]
    d = root / "cni-plugins" / f"v{v}"
    name = f"cni-plugins-linux-{ARCH}-v{v}.tgz"
    plugins = work / "containernetworking-plugins" / "usr" / "lib" / "cni"
    _write_release_file(d / name, {f"./{p.name}": p.read_bytes() for p in sorted(plugins.iterdir())})
    (d / f"{name}.sha256").write_text(f"{sha256_file(d / name)}  {name}\n")
    return {"containerd": out["containerd"], "runc": out["runc"], "cni-plugins": out["containernetworking-plugins"]}


# --- stand-in packages ---------------------------------------------------------------------------

KUBELET_SERVICE = """\
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

KUBEADM_DROPIN = """\
# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort. Preferably, the user should use
# the .NodeRegistration.KubeletExtraArgs object in the configuration files instead. KUBELET_EXTRA_ARGS should be sourced from this file.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    depends: str
    description: str
    tool: str | None = None          # /usr/bin/<tool> runs standins/<tool>.py
    postinst: str | None = None


def _deb(pkg: Package, out_dir: Path, work: Path, extra: dict[str, tuple[bytes, int]] | None = None) -> Path:
    d = work / f"{pkg.name}-{pkg.version}"
    (d / "DEBIAN").mkdir(parents=True)
    (d / "DEBIAN" / "control").write_text(
        f"Package: {pkg.name}\nVersion: {pkg.version}\nArchitecture: {ARCH}\n"
        f"Maintainer: kai tests <tests@kai.invalid>\nSection: admin\nPriority: optional\n"
        + (f"Depends: {pkg.depends}\n" if pkg.depends else "") + f"Description: {pkg.description}\n"
        f" Stand-in built by kai's test mirror (tests/hosts/mirror.py); not the real program.\n")
    if pkg.postinst:
        (d / "DEBIAN" / "postinst").write_text(pkg.postinst)
        os.chmod(d / "DEBIAN" / "postinst", 0o755)
    if pkg.tool:
        lib = d / "usr" / "lib" / "kai-standins" / pkg.name
        lib.mkdir(parents=True)
        for f in standin_files():
            shutil.copyfile(f, lib / f.name)
        (lib / "VERSION").write_text(pkg.version.split("-")[0] + "\n")
        (d / "usr" / "bin").mkdir(parents=True)
        wrapper = d / "usr" / "bin" / pkg.tool
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/python3 /usr/lib/kai-standins/{pkg.name}/{pkg.tool}.py "$@"\n')
        os.chmod(wrapper, 0o755)
    for rel, (data, mode) in (extra or {}).items():
        p = d / rel.lstrip("/")
        if rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)
    out = out_dir / f"{pkg.name}_{pkg.version}_{ARCH}.deb"
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(d), str(out))
    return out


def build_packages(minor: str, patch: str, out_dir: Path, work: Path) -> list[Path]:
    py = "python3, python3-yaml, python3-cryptography"
    pkgs = [
        (Package("kubeadm", f"{patch}-1.1", f"cri-tools (>= {minor}.0), kubernetes-cni (>= 1.1.1), {py}",
                 "Command-line utility for administering a Kubernetes cluster", tool="kubeadm"), None),
        (Package("kubelet", f"{patch}-1.1", f"iptables, iproute2, mount, kubernetes-cni (>= 1.1.1), {py}",
                 "Node agent for Kubernetes clusters", tool="kubelet",
                 # Like the real package: the unit is installed, not started; kubeadm starts it.
                 postinst="#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n"),
         {"/usr/lib/systemd/system/kubelet.service": (KUBELET_SERVICE.encode(), 0o644),
          "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": (KUBEADM_DROPIN.encode(), 0o644),
          "/etc/kubernetes/manifests/": (b"", 0o755)}),  # an empty directory, like the real package
        (Package("kubectl", f"{patch}-1.1", "python3, python3-yaml, python3-cryptography",
                 "Command-line utility for interacting with a Kubernetes cluster", tool="kubectl"), None),
        (Package("cri-tools", f"{minor}.0-1.1", "python3", "Command-line utility for interacting with a container runtime",
                 tool="crictl"), None),
    ]
    return [_deb(p, out_dir, work, extra) for p, extra in pkgs]


def build_kubernetes_cni(cni_plugins_dir: Path, cni_version: str, out_dir: Path, work: Path) -> Path:
    """One kubernetes-cni package (the same plugins for every minor, like upstream's), built once."""
    pkg = Package("kubernetes-cni", f"{cni_version}-1.1", "",
                  "Binaries required to provision kubernetes container networking")
    return _deb(pkg, out_dir, work,
                {f"/opt/cni/bin/{p.name}": (p.read_bytes(), 0o755) for p in sorted(cni_plugins_dir.iterdir())})


# --- apt flat repository ---------------------------------------------------------------------------

def packages_index(repo: Path, debs: list[Path]) -> str:
    stanzas = []
    for deb in sorted(debs):
        control = run("dpkg-deb", "-f", str(deb)).decode().rstrip("\n")
        data = deb.read_bytes()
        stanzas.append(control + f"\nFilename: ./{deb.relative_to(repo)}\nSize: {len(data)}\n"
                       f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA1: {hashlib.sha1(data).hexdigest()}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    return "\n".join(stanzas)


def release_file(repo: Path, minor: str, files: list[str]) -> str:
    lines = [f"Origin: obs://build.opensuse.org/isv:kubernetes:core:stable:v{minor}/deb",
             f"Label: isv:kubernetes:core:stable:v{minor}", "Architectures: amd64",
             f"Date: {formatdate(usegmt=True)}"]
    sums = {"MD5Sum": hashlib.md5, "SHA1": hashlib.sha1, "SHA256": hashlib.sha256}
    out = lines
    for label, fn in sums.items():
        out.append(f"{label}:")
        for f in files:
            data = (repo / f).read_bytes()
            out.append(f" {fn(data).hexdigest()} {len(data):>8} {f}")
    return "\n".join(out) + "\n"


class Signer:
    """A throwaway GPG key in its own GNUPGHOME (batch mode)."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {**os.environ, "GNUPGHOME": str(home)}
        if not (home / "pubring.kbx").exists() or not self._has_key():
            home.mkdir(parents=True, exist_ok=True)
            os.chmod(home, 0o700)
            run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", GPG_UID, "rsa3072", "sign", "2y",
                env=self.env)

    def _has_key(self) -> bool:
        r = subprocess.run(["gpg", "--batch", "--list-secret-keys", GPG_UID], env=self.env, capture_output=True)
        return r.returncode == 0

    def public_armored(self) -> bytes:
        return run("gpg", "--batch", "--armor", "--export", GPG_UID, env=self.env)

    def sign_release(self, repo: Path) -> None:
        for out, mode in (("InRelease", "--clearsign"), ("Release.gpg", "--detach-sign")):
            (repo / out).unlink(missing_ok=True)
            run("gpg", "--batch", "--yes", "--local-user", GPG_UID, "--digest-algo", "SHA256", "--armor", mode,
                "--output", str(repo / out), str(repo / "Release"), env=self.env)


def build_apt_repo(repo: Path, minor: str, debs: list[Path], signer: Signer) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    placed = []
    for deb in debs:
        os.link(deb, repo / deb.name)  # kubernetes-cni is shared by every minor's repo
        placed.append(repo / deb.name)
    index = packages_index(repo, placed)
    (repo / "Packages").write_text(index)
    (repo / "Packages.gz").write_bytes(gzip.compress(index.encode(), mtime=0))
    (repo / "Release").write_text(release_file(repo, minor, ["Packages", "Packages.gz"]))
    signer.sign_release(repo)
    (repo / "Release.key").write_bytes(signer.public_armored())


# --- the whole mirror ------------------------------------------------------------------------------

def build_mirror(inputs: MirrorInputs | None = None, cache: Path = CACHE) -> Path:
    """Build (or reuse) the mirror for these inputs; returns its root directory."""
    inputs = inputs or MirrorInputs()
    root = cache / inputs.key()
    if (root / ".complete").exists():
        (root / ".last-used").touch()  # a mirror in use is never pruned (_prune)
        return root
    t0 = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    debs = fetch_debian_debs(cache / "debian-debs")
    signer = Signer(cache / "gnupg")
    partial_root = cache / f".{inputs.key()}.partial"
    shutil.rmtree(partial_root, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        got = build_runtime_files(partial_root, debs, work)
        plugins = work / "containernetworking-plugins" / "usr" / "lib" / "cni"
        cni_deb = build_kubernetes_cni(plugins, got["cni-plugins"], work, work)
        for minor, patch in inputs.minors.items():
            pkg_work = work / f"pkgs-{minor}"
            pkg_work.mkdir()
            built = build_packages(minor, patch, pkg_work, pkg_work) + [cni_deb]
            build_apt_repo(partial_root / "pkgs.k8s.io" / f"core:/stable:/v{minor}" / "deb", minor, built, signer)
    for name, (ver, file) in inputs.cnis.items():
        d = partial_root / "manifests" / name / f"v{ver}"
        d.mkdir(parents=True, exist_ok=True)
        (d / file).write_text(standin_manifests.cni_manifest(name, ver))
    d = partial_root / "manifests" / "local-path-provisioner" / f"v{inputs.local_path_version}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "local-path-storage.yaml").write_text(standin_manifests.local_path_manifest(inputs.local_path_version))
    addon_files.build_addon_files(partial_root, inputs.cnis)
    (partial_root / "versions.json").write_text(json.dumps({**got, "kubernetes": inputs.minors}, indent=1))
    (partial_root / ".complete").write_text(f"{time.monotonic() - t0:.1f}s\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(partial_root, root)
    log.info("mirror built in %.1f s at %s", time.monotonic() - t0, root)
    _prune(cache, keep=root)
    return root


IN_USE_S = 6 * 3600  # a mirror built or reused this recently may be served by a running test


def _last_used(d: Path) -> float:
    return max((f.stat().st_mtime for f in (d / ".last-used", d / ".complete") if f.exists()), default=0.0)


def _prune(cache: Path, keep: Path, keep_others: int = 1) -> None:
    """Drop mirrors of older inputs (each is ~90 MB), keeping the newest few in case a run uses
    them — and every one used in the last IN_USE_S: the cache is shared by concurrent test runs
    (worktrees of other branches build other mirrors), and pruning one mid-run made every later
    download of that run a 404."""
    others = sorted((d for d in cache.iterdir() if d.is_dir() and d != keep and len(d.name) == 16
                     and (d / ".complete").exists()), key=_last_used, reverse=True)
    for d in others[keep_others:]:
        if time.time() - _last_used(d) > IN_USE_S:
            shutil.rmtree(d, ignore_errors=True)
    for d in cache.glob("tmp*"):
        if d.is_dir() and time.time() - d.stat().st_mtime > 3600:
            shutil.rmtree(d, ignore_errors=True)


def mirror_versions(root: Path) -> dict:
    """What the mirror holds: {"containerd": "1.6.20", "runc": …, "cni-plugins": …, "kubernetes": {minor: patch}}."""
    return json.loads((root / "versions.json").read_text())


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        log.debug("mirror: " + fmt, *args)


class MirrorServer:
    """Serves a mirror directory over HTTP on host:port (port 0 = any free port)."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0):
        self.root, self.host = root, host
        self.httpd = ThreadingHTTPServer((host, port), partial(_Quiet, directory=str(root)))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "MirrorServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "MirrorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


MIRROR_PORT = 8080


def mirror_service(root: Path | None = None, port: int = MIRROR_PORT):
    """A tests.hosts.instance.Service serving the (built) mirror on the bridge gateway:

        hosts.start_service(mirror_service())   # then http://{hosts.bridge.gateway}:8080
    """
    import sys

    from .instance import Service
    root = root or build_mirror()
    return Service(name="mirror", port=port,
                   argv=lambda bridge: [sys.executable, "-m", "tests.hosts.mirror", "--root", str(root),
                                        "--listen", f"{bridge.gateway}:{port}"])


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m tests.hosts.mirror",
                                description="Build the test mirror (and serve it with --listen).")
    p.add_argument("--root", type=Path, help="serve this mirror directory (default: build/reuse the cached one)")
    p.add_argument("--listen", help="ADDR:PORT to serve on (loopback or a test bridge's gateway)")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    root = a.root or build_mirror()
    print(f"mirror at {root} ({time.monotonic() - t0:.1f}s)", flush=True)
    if a.listen:
        host, _, port = a.listen.rpartition(":")
        srv = MirrorServer(root, host, int(port))
        print(f"serving {srv.url}", flush=True)
        srv.httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def serve_mirror_to(hosts, needed: int | None = None):
    """Booted hosts that reach the local mirror: build it (cached), serve it on the hosts' bridge
    once per session, and let the hosts' apt reach it directly (their proxy forwards only to
    Debian). Fails, naming the setting, when fewer than `needed` hosts were booted."""
    import pytest

    if needed is not None and len(hosts) < needed:
        pytest.fail(f"these tests need {needed} booted hosts: set KAI_TEST_HOSTS={needed} "
                    "(the Makefile does)")
    root = build_mirror()
    if "mirror" not in hosts._service_procs:  # another module may have started it
        hosts.start_service(mirror_service(root))
    gateway = hosts.bridge.gateway

    def mirror_direct(host):
        host.put_file("/etc/apt/apt.conf.d/02kai-mirror-direct",
                      f'Acquire::http::Proxy::{gateway} "DIRECT";\n')

    hosts.add_provisioner(mirror_direct)
    hosts.mirror_url = f"http://{gateway}:{MIRROR_PORT}"
    hosts.mirror_versions = mirror_versions(root)
    return hosts
