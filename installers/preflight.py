"""Preflight rules: judge the facts that facts.sh gathered (docs/architecture.md §5).

One place for the rules, including the cross-host ones (unique hostname/MAC/product_uuid,
clock skew). `spec.preflight.ignore` turns a named check's errors into warnings, like kubeadm's
--ignore-preflight-errors (except a changed Kubernetes version, which only an upgrade may do).
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal, Mapping

from installers import modes
from installers import versions as V
from installers.spec import PREFLIGHT_CHECKS, ClusterSpec

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    node: str
    check: str
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.node}: {self.severity}: [{self.check}] {self.message}"


def _int(facts: Mapping[str, str], key: str) -> int | None:
    try:
        return int(str(facts.get(key, "")).strip())
    except ValueError:
        return None


class _Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, node: str, check: str, severity: Severity, message: str) -> None:
        assert check in PREFLIGHT_CHECKS, check
        self.findings.append(Finding(node, check, severity, message))


def _check_node(c: _Collector, spec: ClusterSpec, mode: str, name: str,
                facts: Mapping[str, str]) -> None:
    try:
        node = spec.node(name)
    except KeyError:
        c.add(name, "facts", "error", "facts came from a host that is not a node of the spec")
        return
    cp = node.is_control_plane
    if not facts:
        c.add(name, "facts", "error", "no facts were gathered from this host")
        return

    os_id = facts.get("os_id", "")
    if os_id not in V.SUPPORTED_OS:
        c.add(name, "os", "error", f"unsupported OS {facts.get('os_pretty') or os_id!r} "
                                   f"(supported: {', '.join(V.SUPPORTED_OS)})")
    elif facts.get("pkg_family") not in ("apt", "dnf"):
        c.add(name, "os", "error", f"no supported package manager (pkg_family={facts.get('pkg_family')!r})")

    arch = facts.get("arch", "")
    if arch not in V.ARCHES:
        c.add(name, "arch", "error", f"unsupported architecture {arch!r} (amd64 or arm64)")

    cpus = _int(facts, "cpus")
    if cpus is None:
        c.add(name, "facts", "error", f"unreadable cpus fact {facts.get('cpus')!r}")
    elif cp and cpus < V.MIN_CONTROL_PLANE_CPUS:
        c.add(name, "cpus", "error", f"{cpus} CPU(s); a control plane needs ≥ {V.MIN_CONTROL_PLANE_CPUS}")

    mem = _int(facts, "mem_mb")
    if mem is None:
        c.add(name, "facts", "error", f"unreadable mem_mb fact {facts.get('mem_mb')!r}")
    elif cp and mem < V.MIN_CONTROL_PLANE_MEM_MB:
        c.add(name, "memory", "error", f"{mem} MB memory; a control plane needs ≥ {V.MIN_CONTROL_PLANE_MEM_MB} MB")
    elif not cp and mem < V.MIN_WORKER_MEM_MB:
        c.add(name, "memory", "warning", f"{mem} MB memory leaves little room for pods")

    disk = _int(facts, "disk_free_mb")
    if disk is None:
        c.add(name, "facts", "error", f"unreadable disk_free_mb fact {facts.get('disk_free_mb')!r}")
    elif disk < V.MIN_DISK_MB:
        c.add(name, "disk", "error", f"{disk} MB free under /var/lib; need ≥ {V.MIN_DISK_MB} MB")
    elif disk < V.RECOMMENDED_DISK_MB:
        c.add(name, "disk", "warning", f"{disk} MB free under /var/lib; ≥ {V.RECOMMENDED_DISK_MB} MB recommended")

    swap = _int(facts, "swap_total_kb")
    if swap:
        c.add(name, "swap", "warning", f"swap is on ({swap} kB); os-prep turns it off (persistently)")

    cgroup = facts.get("cgroup_version")
    if cgroup == "1":
        if spec.kubelet.fail_cgroup_v1:
            c.add(name, "cgroup", "error", "cgroup v1 host: the kubelet (≥ 1.35) refuses to start; "
                                           "boot with cgroup v2 or set kubelet.fail_cgroup_v1: false")
        else:
            c.add(name, "cgroup", "warning", "cgroup v1 host (allowed by kubelet.fail_cgroup_v1: false)")

    state = facts.get("systemd_state", "none")
    if state == "degraded":
        c.add(name, "systemd", "warning", "systemd reports degraded (some unit failed)")
    elif state != "running":
        c.add(name, "systemd", "error", f"systemd is not running (state {state!r}); kubelet needs it")

    for module in V.REQUIRED_MODULES:
        value = facts.get(f"module_{module}")
        if value == "missing":
            c.add(name, "modules", "error", f"kernel module {module} is neither built in nor loadable")
        elif value is None:
            c.add(name, "modules", "warning", f"kernel module {module} was not reported")

    for binary in V.REQUIRED_BINARIES + V.OPTIONAL_BINARIES:
        value = facts.get(f"binary_{binary}")
        if value in (None, "missing", ""):
            if binary in V.REQUIRED_BINARIES:
                c.add(name, "binaries", "error", f"required binary {binary} not found")
            else:
                c.add(name, "binaries", "warning", f"optional binary {binary} not found")

    in_cluster = (facts.get("kubeadm_done") == "1" or facts.get("kube_manifests_empty") == "0"
                  or (cp and facts.get("etcd_dir_empty") == "0"))
    if in_cluster and member_of_this_cluster(spec, node, facts):
        # A rerun or a resume: finished steps are skipped by their done-markers.
        c.add(name, "already_in_cluster", "warning",
              f"node {name} is already a member of this cluster ({facts.get('kubelet_server')}); "
              f"finished steps will be skipped")
        _check_version_unchanged(c, spec, mode, name, facts)
    elif in_cluster:
        what = ("/etc/kubernetes/kubelet.conf exists" if facts.get("kubeadm_done") == "1"
                else "/etc/kubernetes/manifests or /var/lib/etcd is not empty")
        hint = ("run `kai reset` on it first" if mode != "add_nodes"
                else "it is not a new node: leave it out of --nodes, or run `kai reset` on it first")
        c.add(name, "already_in_cluster", "error",
              f"node {name} is already part of a cluster ({what}); {hint}, or use add_nodes "
              f"to add only new nodes")
    else:
        # Ports are only meaningful on a clean node (on a cluster member kubelet holds 10250).
        expected = set(V.ports_for(node.roles, spec.networking.cni))
        used = [p for p in (facts.get("ports_in_use") or "").split(",") if p.strip()]
        busy = sorted({int(p) for p in used if p.strip().isdigit() and int(p) in expected})
        if busy:
            c.add(name, "ports", "error", "ports already in use: " + ", ".join(map(str, busy)))


# Modes that install packages: run against a member, a changed version would install the new
# kubelet on every node at once, newer than the API servers (the version-skew policy forbids it).
_INSTALL_MODES = tuple(m.name for m in modes.MODES if m.installs) + ("preflight",)
# Errors that `preflight.ignore` cannot turn into warnings: ignoring them breaks the cluster.
NOT_IGNORABLE = frozenset({"version_change"})


def _check_version_unchanged(c: _Collector, spec: ClusterSpec, mode: str, name: str,
                             facts: Mapping[str, str]) -> None:
    installed = (facts.get("kubelet_version") or "").removeprefix("v")
    if mode not in _INSTALL_MODES or not re.fullmatch(r"\d+\.\d+\.\d+", installed):
        return
    wanted = spec.kubernetes.full_version
    if installed != wanted:
        minor = spec.kubernetes.minor
        have = tuple(int(p) for p in installed.split("."))
        # kubeadm upgrades one minor at a time: name the next step, not a refused jump
        to = spec.kubernetes.version if int(minor.split(".")[1]) <= have[1] + 1 else f"{have[0]}.{have[1] + 1}"
        c.add(name, "version_change", "error",
              f"node {name} is a member of this cluster running kubelet v{installed}, and the spec "
              f"asks for kubernetes.version {spec.kubernetes.version} (v{wanted}): an install "
              f"never changes a running cluster's version (its kubelets would be newer than the "
              f"API servers). That is an upgrade, one minor at a time, control planes first: "
              f"`kai upgrade SPEC --to {to}`; or set kubernetes.version back to {installed}, or "
              f"rebuild the cluster at {minor} (rebuild resets every node: the cluster's state is lost)")


def member_of_this_cluster(spec: ClusterSpec, node, facts: Mapping[str, str]) -> bool:
    """The node's kubelet talks to this spec's endpoint (or, on a control plane, its own API)."""
    server = (facts.get("kubelet_server") or "").rstrip("/")
    ours = {f"https://{spec.endpoint()}", f"https://{node.address}:6443"}
    return facts.get("kubeadm_done") == "1" and server in ours


def _check_unique(c: _Collector, facts: Mapping[str, Mapping[str, str]], key: str, check: str,
                  label: str, ignore: set[str]) -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for node, f in facts.items():
        values = [v.strip().lower() for v in (f.get(key) or "").split(",")] if key == "macs" \
            else [(f.get(key) or "").strip()]
        for v in set(values):
            if v and v not in ignore:
                owners[v].append(node)
    for value, nodes in sorted(owners.items()):
        if len(nodes) > 1:
            for node in nodes:
                others = ", ".join(n for n in nodes if n != node)
                c.add(node, check, "error", f"{label} {value} is also on {others}")


def _check_clock(c: _Collector, facts: Mapping[str, Mapping[str, str]]) -> None:
    times = {n: t for n in facts if (t := _int(facts[n], "time_epoch")) is not None}
    if len(times) < 2:
        return
    median = statistics.median(times.values())
    for node, t in sorted(times.items()):
        skew = t - median
        if abs(skew) > V.MAX_CLOCK_SKEW_S:
            c.add(node, "clock_skew", "error",
                  f"clock is {skew:+.0f} s off the other hosts (> {V.MAX_CLOCK_SKEW_S} s breaks "
                  f"certificates and etcd); enable NTP")


def evaluate(spec: ClusterSpec, mode: str, facts: Mapping[str, Mapping[str, str]]) -> list[Finding]:
    """Findings for the hosts whose facts are given (node name -> facts.env as a dict)."""
    if mode == "reset":
        return []  # reset runs on whatever state a node is in
    c = _Collector()
    for node in sorted(facts):
        _check_node(c, spec, mode, node, facts[node])
    _check_unique(c, facts, "hostname", "hostname_unique", "hostname", set())
    _check_unique(c, facts, "macs", "mac_unique", "MAC address", {"00:00:00:00:00:00"})
    _check_unique(c, facts, "product_uuid", "product_uuid_unique", "product_uuid", {"unreadable"})
    _check_clock(c, facts)
    ignored = set(spec.preflight.ignore)
    ignored -= NOT_IGNORABLE
    return [Finding(f.node, f.check, "warning", f.message + " (ignored: preflight.ignore)")
            if f.severity == "error" and f.check in ignored else f for f in c.findings]


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def parse_facts_env(text: str) -> dict[str, str]:
    """facts.env (`key=value` lines) -> dict; values keep everything after the first '='."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out
