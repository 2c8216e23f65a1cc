"""The stand-ins' real etcd, locally: kubeadm's etcd manifest, the kubelet's unit made from it, and
the crictl path kai uses to reach etcd (`ps` / `exec … etcdctl`), strict about everything else.
On booted hosts with Debian's etcd: tests/test_standins.py (test_hosts_init_apply_join_reset)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "hosts" / "standins"))

import crictl  # noqa: E402
import standin_etcd as etcd  # noqa: E402
from standin_common import Fail  # noqa: E402

CID = "ab" * 32


def test_first_member_and_joining_member_commands():
    first = etcd.pod_command("cp-1", "10.250.0.2", "cp-1=https://10.250.0.2:2380", existing=False)
    assert first[0] == "etcd" and "--name=cp-1" in first
    assert "--listen-client-urls=https://127.0.0.1:2379,https://10.250.0.2:2379" in first
    assert "--initial-cluster-state=existing" not in first
    joining = etcd.pod_command("cp-2", "10.250.0.3", "cp-1=https://10.250.0.2:2380,cp-2=https://10.250.0.3:2380",
                               existing=True)
    assert "--initial-cluster-state=existing" in joining
    assert "--initial-cluster=cp-1=https://10.250.0.2:2380,cp-2=https://10.250.0.3:2380" in joining
    flags = [a.split("=", 1)[0] for a in joining[1:]]
    assert len(flags) == len(set(flags)) and all(f.startswith("--") for f in flags)


def test_the_kubelet_runs_exactly_the_manifests_command():
    cmd = etcd.pod_command("cp-1", "10.250.0.2", "cp-1=https://10.250.0.2:2380", existing=False)
    text = etcd.manifest(cmd)
    assert etcd.manifest_command(text) == cmd
    assert etcd.manifest_flag(text, "initial-advertise-peer-urls") == "https://10.250.0.2:2380"
    unit = etcd.unit_text(etcd.manifest_command(text), "f" * 64)
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert shlex.split(exec_line.removeprefix("ExecStart=")) == [etcd.ETCD_BIN, *cmd[1:]]
    assert "Restart=always" in unit and "f" * 64 in unit  # a changed manifest changes the unit
    with pytest.raises(etcd.EtcdError, match="not etcd"):
        etcd.manifest_command(text.replace("- etcd\n", "- sh\n", 1))


def test_crictl_ps_prints_the_running_etcd_container(monkeypatch, capsys):
    monkeypatch.setattr(etcd, "running_container", lambda: CID)
    assert crictl.main(["ps", "--name", "etcd", "--state", "running", "-q"]) == 0
    assert capsys.readouterr().out == CID + "\n"
    monkeypatch.setattr(etcd, "running_container", lambda: None)
    assert crictl.main(["ps", "--name", "etcd", "--state", "running", "-q"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv", [
    ["ps"], ["ps", "--name", "coredns", "--state", "running", "-q"], ["images"],
    ["ps", "--name", "etcd", "-q"], ["exec", "-it", CID, "etcdctl", "member", "list"],
])
def test_crictl_refuses_anything_else(argv, monkeypatch):
    monkeypatch.setattr(etcd, "running_container", lambda: CID)
    with pytest.raises(Fail):
        crictl.main(argv)


def test_crictl_exec_runs_etcdctl_in_the_running_container_only(monkeypatch, tmp_path):
    seen = tmp_path / "argv"
    fake = tmp_path / "etcdctl"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {seen}\n')
    fake.chmod(0o755)
    monkeypatch.setattr(etcd, "ETCDCTL_BIN", str(fake))
    monkeypatch.setattr(etcd, "running_container", lambda: CID)
    args = ["--cacert=/etc/kubernetes/pki/etcd/ca.crt", "--cert", "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
            "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key", "snapshot", "save", "/var/lib/etcd/kai.db"]
    assert crictl.main(["exec", CID[:13], "etcdctl", *args]) == 0
    assert seen.read_text().splitlines() == args
    with pytest.raises(Fail, match="NotFound"):  # another (an old) container's id
        crictl.main(["exec", "cd" * 32, "etcdctl", "member", "list"])
    with pytest.raises(Fail, match="only etcdctl"):
        crictl.main(["exec", CID, "sh", "-c", "id"])
    monkeypatch.setattr(etcd, "running_container", lambda: None)
    with pytest.raises(Fail, match="NotFound"):
        crictl.main(["exec", CID, "etcdctl", "member", "list"])


def test_crictl_ps_prints_the_running_api_server(monkeypatch, capsys):
    monkeypatch.setattr(etcd, "unit_container", lambda unit, name: "ab" * 32 if unit == crictl.API_UNIT else None)
    assert crictl.main(["ps", "--name", "kube-apiserver", "--state", "running", "-q"]) == 0
    assert capsys.readouterr().out == "ab" * 32 + "\n"


def test_crictl_exec_etcdutl_restores_with_etcdctl_34s_flags_only(monkeypatch, tmp_path, capsys):
    """etcd 3.6's image: `etcdutl snapshot restore` (its etcdctl has none), run as Debian's etcdctl
    3.4 `snapshot restore`, which takes the same flags; any other etcdutl flag fails."""
    seen = tmp_path / "argv"
    fake = tmp_path / "etcdctl"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {seen}\n')
    fake.chmod(0o755)
    monkeypatch.setattr(etcd, "ETCDCTL_BIN", str(fake))
    monkeypatch.setattr(etcd, "running_container", lambda: CID)
    flags = ["--data-dir=/var/lib/etcd/kai-restore/data", "--name", "cp-1",
             "--initial-cluster=cp-1=https://10.0.0.1:2380", "--initial-cluster-token=t",
             "--initial-advertise-peer-urls=https://10.0.0.1:2380"]
    assert crictl.main(["exec", CID, "etcdutl", "snapshot", "restore", "/var/lib/etcd/s.db", *flags]) == 0
    assert seen.read_text().splitlines() == ["snapshot", "restore", "/var/lib/etcd/s.db",
                                             flags[0], "--name=cp-1", *flags[3:]]
    assert crictl.main(["exec", CID, "etcdutl", "version"]) == 0
    assert capsys.readouterr().out.startswith("etcdutl version: 3.6.")
    with pytest.raises(Fail, match="unknown flag: --bump-revision"):
        crictl.main(["exec", CID, "etcdutl", "snapshot", "restore", "/var/lib/etcd/s.db", "--bump-revision=9"])
    with pytest.raises(Fail, match="only `version` and `snapshot restore"):
        crictl.main(["exec", CID, "etcdutl", "defrag"])
    assert crictl.main(["exec", CID, "etcdctl", "snapshot", "restore", "/var/lib/etcd/s.db"]) == 1
    assert 'unknown command "restore"' in capsys.readouterr().err
    seen.unlink()
    assert crictl.main(["exec", CID, "etcdutl", "snapshot", "restore", "/root/s.db", flags[0]]) == 1
    assert "no such file or directory" in capsys.readouterr().err and not seen.exists()


@pytest.mark.parametrize("args", [
    ["--cert=/etc/kubernetes/pki/apiserver-etcd-client.crt", "member", "list"],  # not mounted in the pod
    ["--cacert", "/tmp/ca.crt", "member", "list"],
    ["snapshot", "save", "/root/backup.db"],
    ["snapshot", "save", "/var/lib/etcd/../../../root/x.db"],
])
def test_crictl_exec_sees_only_the_pods_mounts(args, monkeypatch, capsys, tmp_path):
    ran = tmp_path / "ran"
    monkeypatch.setattr(etcd, "ETCDCTL_BIN", f"/usr/bin/touch {ran}")
    monkeypatch.setattr(etcd, "running_container", lambda: CID)
    assert crictl.main(["exec", CID, "etcdctl", *args]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    assert not ran.exists()
