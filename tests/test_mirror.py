"""The local mirror: layout of docs/architecture.md §6, checksums, a signed apt repo that verifies."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import tarfile
import time

import httpx
import pytest
import yaml

from installers import versions
from tests.hosts.mirror import MirrorServer, build_mirror, mirror_versions

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "dpkg-deb", "gpg", "gpgv", "apt-get"], capture_output=True).returncode != 0,
    reason="needs dpkg-deb, gpg, gpgv and apt-get")


@pytest.fixture(scope="module")
def mirror():
    t0 = time.monotonic()
    root = build_mirror()
    print(f"mirror ready in {time.monotonic() - t0:.1f}s")
    return root


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_runtime_release_files_match_their_checksums(mirror):
    v = mirror_versions(mirror)
    assert v["containerd"].count(".") == 2 and v["runc"].count(".") == 2
    ctd = mirror / "containerd" / f"v{v['containerd']}" / f"containerd-{v['containerd']}-linux-amd64.tar.gz"
    digest, name = (ctd.parent / f"{ctd.name}.sha256sum").read_text().split()
    assert (digest, name) == (_sha256(ctd), ctd.name)
    with tarfile.open(ctd) as t:
        names = set(t.getnames())
    assert {"bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"} <= names

    runc = mirror / "runc" / f"v{v['runc']}" / "runc.amd64"
    assert (runc.parent / "runc.sha256sum").read_text().split() == [_sha256(runc), "runc.amd64"]

    cni = mirror / "cni-plugins" / f"v{v['cni-plugins']}" / f"cni-plugins-linux-amd64-v{v['cni-plugins']}.tgz"
    assert (cni.parent / f"{cni.name}.sha256").read_text().split() == [_sha256(cni), cni.name]
    with tarfile.open(cni) as t:
        assert {"./bridge", "./host-local", "./loopback", "./portmap"} <= set(t.getnames())


@pytest.mark.parametrize("minor", sorted(versions.KUBERNETES_MINORS))
def test_apt_repo_is_signed_and_indexes_match(mirror, minor, tmp_path):
    repo = mirror / "pkgs.k8s.io" / f"core:/stable:/v{minor}" / "deb"
    keyring = tmp_path / "k8s.gpg"
    subprocess.run(["gpg", "--dearmor", "-o", str(keyring), str(repo / "Release.key")], check=True)
    # What apt does with InRelease / Release.gpg: gpgv against the keyring named by signed-by=.
    subprocess.run(["gpgv", "--keyring", str(keyring), str(repo / "InRelease")], check=True, capture_output=True)
    subprocess.run(["gpgv", "--keyring", str(keyring), str(repo / "Release.gpg"), str(repo / "Release")],
                   check=True, capture_output=True)
    # A tampered Release must not verify.
    bad = tmp_path / "Release"
    bad.write_text((repo / "Release").read_text().replace("amd64", "arm64"))
    assert subprocess.run(["gpgv", "--keyring", str(keyring), str(repo / "Release.gpg"), str(bad)],
                          capture_output=True).returncode != 0

    release = (repo / "Release").read_text()
    sha_section = release.split("SHA256:")[1]
    for name in ("Packages", "Packages.gz"):
        assert f" {_sha256(repo / name)} " in sha_section
    assert gzip.decompress((repo / "Packages.gz").read_bytes()).decode() == (repo / "Packages").read_text()

    stanzas = [dict(line.split(": ", 1) for line in s.splitlines() if not line.startswith(" "))
               for s in (repo / "Packages").read_text().strip().split("\n\n")]
    by_name = {s["Package"]: s for s in stanzas}
    assert set(by_name) == {"kubeadm", "kubelet", "kubectl", "cri-tools", "kubernetes-cni"}
    patch = versions.KUBERNETES_MINORS[minor].default_patch
    assert by_name["kubeadm"]["Version"] == f"{patch}-1.1"
    assert "kubernetes-cni" in by_name["kubelet"]["Depends"]
    for s in stanzas:
        deb = repo / s["Filename"]
        assert _sha256(deb) == s["SHA256"] and int(s["Size"]) == deb.stat().st_size


def test_apt_get_resolves_the_repo(mirror, tmp_path):
    """apt itself (a private root dir, no system state touched) reads and verifies the served repo."""
    minor = versions.DEFAULT_KUBERNETES_MINOR
    with MirrorServer(mirror, "127.0.0.1") as srv:
        repo_url = f"{srv.url}/pkgs.k8s.io/core:/stable:/v{minor}/deb/"
        key = httpx.get(repo_url + "Release.key").content
        keyring = tmp_path / "keyring.gpg"
        subprocess.run(["gpg", "--dearmor", "-o", str(keyring)], input=key, check=True)
        for d in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
                  "var/cache/apt/archives/partial", "var/lib/dpkg"):
            (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / "var/lib/dpkg/status").write_text("")
        (tmp_path / "etc/apt/sources.list").write_text(f"deb [signed-by={keyring}] {repo_url} /\n")
        opts = ["-o", f"Dir={tmp_path}", "-o", "Dir::State::status=" + str(tmp_path / "var/lib/dpkg/status"),
                "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]
        r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
        assert r.returncode == 0 and "NO_PUBKEY" not in r.stderr and "not signed" not in r.stderr, r.stdout + r.stderr
        r = subprocess.run(["apt-cache", *opts, "policy", "kubeadm"], capture_output=True, text=True, check=True)
        patch = versions.KUBERNETES_MINORS[minor].default_patch
        assert f"Candidate: {patch}-1.1" in r.stdout, r.stdout
        r = subprocess.run(["apt-get", *opts, "download", "kubeadm"], capture_output=True, text=True,
                           cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert list(tmp_path.glob(f"kubeadm_{patch}-1.1_amd64.deb"))


def test_packages_hold_the_standins(mirror, tmp_path):
    repo = mirror / "pkgs.k8s.io" / "core:/stable:/v1.36" / "deb"
    subprocess.run(["dpkg-deb", "-x", str(repo / "kubelet_1.36.4-1.1_amd64.deb"), str(tmp_path)], check=True)
    assert (tmp_path / "usr/lib/systemd/system/kubelet.service").exists()
    dropin = (tmp_path / "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf").read_text()
    assert "KUBELET_KUBEADM_ARGS" in dropin
    out = subprocess.run(["python3", str(tmp_path / "usr/lib/kai-standins/kubelet/kubelet.py"), "--version"],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "Kubernetes v1.36.4"


def test_manifests_follow_the_versions_table(mirror):
    for cni in versions.CNIS.values():
        f = mirror / "manifests" / cni.name / f"v{cni.version}" / cni.manifest_file
        docs = list(yaml.safe_load_all(f.read_text()))
        daemonsets = [d["metadata"]["name"] for d in docs if d["kind"] == "DaemonSet"]
        assert daemonsets == [{"calico": "calico-node", "flannel": "kube-flannel-ds", "cilium": "cilium"}[cni.name]]
    flannel = (mirror / "manifests" / "flannel" / f"v{versions.CNIS['flannel'].version}" / "kube-flannel.yml").read_text()
    assert '"Network": "10.244.0.0/16"' in flannel
    lp = mirror / "manifests" / "local-path-provisioner" / f"v{versions.LOCAL_PATH_VERSION}" / "local-path-storage.yaml"
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(lp.read_text())}
    assert ("Deployment", "local-path-provisioner") in kinds and ("StorageClass", "local-path") in kinds
