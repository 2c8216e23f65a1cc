"""Reaching a test cluster's etcd from a test, the way kai does on a real cluster: etcdctl in the
node's etcd container (crictl exec) with the etcd healthcheck client certificate."""

from __future__ import annotations

import json
import re
import subprocess

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
