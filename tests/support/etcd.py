"""Reaching a test cluster's etcd from a test, the way kai does on a real cluster: etcdctl in the
node's etcd container (crictl exec) with the etcd healthcheck client certificate. And a real etcd
cluster on loopback (Debian's binary from the test hosts' rootfs) for tests without hosts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.support.ports import free_port

ETCDCTL_TLS = ("--cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
               "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key")


def etcdctl(h, args: str, check: bool = True) -> subprocess.CompletedProcess:
    cid = h.exec("crictl ps --name etcd --state running -q").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), f"no running etcd container on {h.name}: {cid!r}"
    return h.exec(f"crictl exec {cid} etcdctl {ETCDCTL_TLS} {args}", check=check, timeout=60)


def etcd_members(h) -> list[str]:
    """The member names, sorted (a member added but not started yet has none: '')."""
    return sorted(m.get("name", "") for m in json.loads(etcdctl(h, "member list -w json").stdout)["members"])


def etcd_healthy(h) -> bool:
    """Every member of the cluster answers (`endpoint health --cluster`)."""
    return etcdctl(h, "endpoint health --cluster", check=False).returncode == 0


# --- a real etcd cluster on loopback ------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def etcd_pki(d: Path) -> Path:
    """kubeadm's etcd PKI, reduced: a CA, one serving/peer certificate for 127.0.0.1, and the
    healthcheck client certificate the script uses."""
    d.mkdir(parents=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=etcd-ca", cwd=d)
    for name, cn, ext in (("server", "m", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
                          ("healthcheck-client", "kube-etcd-healthcheck-client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=d)
    return d


class LoopbackEtcd:
    """Members m1..mN of one real etcd cluster on 127.0.0.1 (free ports), TLS as kubeadm sets it."""

    def __init__(self, binaries: Path, d: Path, count: int) -> None:
        self.etcdctl_bin, self.d = binaries / "etcdctl", d
        self.pki = etcd_pki(d / "pki")
        self.ports = {f"m{i}": (free_port(), free_port()) for i in range(1, count + 1)}
        initial = ",".join(f"{n}=https://127.0.0.1:{peer}" for n, (_, peer) in self.ports.items())
        tls = (f"--cert-file={self.pki}/server.crt", f"--key-file={self.pki}/server.key",
               "--client-cert-auth=true", f"--trusted-ca-file={self.pki}/ca.crt",
               f"--peer-cert-file={self.pki}/server.crt", f"--peer-key-file={self.pki}/server.key",
               "--peer-client-cert-auth=true", f"--peer-trusted-ca-file={self.pki}/ca.crt")
        self.procs: dict[str, subprocess.Popen] = {}
        for name, (client, peer) in self.ports.items():
            log = open(d / f"{name}.log", "w")  # noqa: SIM115  (the process keeps it)
            self.procs[name] = subprocess.Popen(
                [str(binaries / "etcd"), f"--name={name}", f"--data-dir={d / name}",
                 f"--listen-client-urls=https://127.0.0.1:{client}",
                 f"--advertise-client-urls=https://127.0.0.1:{client}",
                 f"--listen-peer-urls=https://127.0.0.1:{peer}",
                 f"--initial-advertise-peer-urls=https://127.0.0.1:{peer}",
                 f"--initial-cluster={initial}", "--initial-cluster-state=new",
                 "--initial-cluster-token=kai-test", *tls,
                 # on a loaded machine etcd's 100/1000 ms defaults elect anew now and then: a
                 # `member remove` during an election times out (the step would retry; this runs once)
                 "--heartbeat-interval=250", "--election-timeout=2500"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()

    def etcdctl(self, names: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        endpoints = ",".join(f"https://127.0.0.1:{self.ports[n][0]}" for n in names)
        return subprocess.run([str(self.etcdctl_bin), f"--endpoints={endpoints}", f"--cacert={self.pki}/ca.crt",
                               f"--cert={self.pki}/healthcheck-client.crt",
                               f"--key={self.pki}/healthcheck-client.key", *args],
                              capture_output=True, text=True, timeout=60)

    def members(self, via: str) -> dict[str, int]:
        res = self.etcdctl([via], "member", "list", "-w", "json")
        assert res.returncode == 0, res.stderr
        return {m.get("name", ""): m["ID"] for m in json.loads(res.stdout)["members"]}

    def healthy(self, names: list[str]) -> bool:
        return self.etcdctl(names, "endpoint", "health").returncode == 0

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n" + (self.d / f"{n}.log").read_text()[-1500:] for n in self.procs)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
