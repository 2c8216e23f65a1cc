"""The etcd_restore mode's plan: every control plane's etcd back to a named snapshot.

etcd's disaster-recovery procedure (https://etcd.io/docs/v3.6/op-guide/recovery/) on a kubeadm
cluster, each step on every control plane before the next one starts:

1. restore-snapshot (controller) — the named snapshot found in the cluster's backup directory, its
   sha256 taken, and a cluster token made for this run.
2. etcd-restore-stage — the snapshot streamed to each control plane, its sha256 checked there, and
   restored into a fresh data directory beside the live one with `etcdutl snapshot restore` in the
   running etcd container (the etcd 3.6 image kubeadm 1.35+ runs ships etcdutl; the node need not):
   the member's name and peer URL, the whole --initial-cluster, the NEW --initial-cluster-token.
   etcd is untouched so far: a failure here leaves the cluster as it was.
3. etcd-restore-stop — the etcd and kube-apiserver static pod manifests moved aside: the kubelet
   stops both (no API server may write while etcd's data is replaced).
4. etcd-restore-swap — /var/lib/etcd moved aside under a dated name (kept for a manual recovery),
   the restored directory put in its place.
5. etcd-restore-start — the manifests back; wait until the local etcd and API server answer.
6. etcd-restore-verify, kubeconfig, verify — every member back in the one restored cluster and
   healthy, then the health mode's look at the cluster through the API.

The members are the spec's control planes (kubeadm names a member after its node, with the node's
address as peer URL); the stage step refuses a node whose etcd manifest says otherwise.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from installers.plan_model import HostJob, Phase
    from installers.spec import ClusterSpec, Node

ETCD_PEER_PORT = 2380
# The waits inside the stop and start steps end this long before the step's timeout: the script
# fails with what it was waiting for instead of being killed without a word.
WAIT_MARGIN_S = 15


def peer_url(node: Node) -> str:
    """The member's peer URL as kubeadm writes it (--initial-advertise-peer-urls)."""
    host = node.address
    if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
        host = f"[{host}]"
    return f"https://{host}:{ETCD_PEER_PORT}"


def initial_cluster(spec: ClusterSpec) -> str:
    return ",".join(f"{n.name}={peer_url(n)}" for n in spec.control_planes())


def _wait_s(spec: ClusterSpec, kind: str) -> str:
    from installers.plan_model import policy_for
    return str(max(10, int(policy_for(spec, kind).timeout_s) - WAIT_MARGIN_S))


def _restore_job(kind: str, node: Node, env: dict[str, str]) -> HostJob:
    from installers.plan_model import host_job as _job
    part = kind.removeprefix("etcd_restore_")
    return _job(kind, node, {"KAI_RESTORE_PART": part, **env})


def etcd_restore_stage_job(spec: ClusterSpec, node: Node, snapshot: str) -> HostJob:
    """The task adds at run time: KAI_SNAPSHOT_SHA256, KAI_ETCD_CLUSTER_TOKEN and the snapshot
    itself (file `snapshot.db`): what the plan cannot know without reading the controller's disk."""
    return _restore_job("etcd_restore_stage", node, {
        "KAI_SNAPSHOT_NAME": snapshot, "KAI_ETCD_NAME": node.name, "KAI_ETCD_PEER_URL": peer_url(node),
        "KAI_ETCD_INITIAL_CLUSTER": initial_cluster(spec)})


def etcd_restore_stop_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _restore_job("etcd_restore_stop", node, {"KAI_RESTORE_WAIT_S": _wait_s(spec, "etcd_restore_stop")})


def etcd_restore_swap_job(spec: ClusterSpec, node: Node, snapshot: str) -> HostJob:
    """The task adds KAI_ETCD_CLUSTER_TOKEN: the done-marker is this run's (a new run swaps again)."""
    return _restore_job("etcd_restore_swap", node, {"KAI_SNAPSHOT_NAME": snapshot})


def etcd_restore_start_job(spec: ClusterSpec, node: Node) -> HostJob:
    from installers.kubeadm import API_PORT
    return _restore_job("etcd_restore_start", node, {
        "KAI_API_ADDRESS": node.address, "KAI_API_PORT": str(API_PORT),
        "KAI_RESTORE_WAIT_S": _wait_s(spec, "etcd_restore_start")})


def etcd_restore_verify_job(spec: ClusterSpec, node: Node) -> HostJob:
    return _restore_job("etcd_restore_verify", node, {
        "KAI_ETCD_MEMBERS": " ".join(n.name for n in spec.control_planes()),
        "KAI_RESTORE_WAIT_S": _wait_s(spec, "etcd_restore_verify")})


def etcd_restore_phases(spec: ClusterSpec, nodes: list[Node], snapshot: str) -> list[Phase]:
    from installers.plan import _kubeconfig_phase, _verify_phase
    from installers.plan_model import Phase, plan_step as _step
    cps = spec.control_planes()
    first = cps[0]
    return [
        Phase("check", "Find the snapshot", (
            _step(spec, "restore-snapshot", "restore_snapshot",
                  f"{snapshot}: found in the backup directory, sha256 taken; a new cluster token", []),)),
        Phase("restore", "Restore etcd on every control plane", (
            _step(spec, "etcd-restore-stage", "etcd_restore_stage",
                  "Snapshot streamed to each control plane (sha256 checked) and restored beside the "
                  "live data (etcdutl, new cluster token)",
                  [etcd_restore_stage_job(spec, n, snapshot) for n in cps]),
            _step(spec, "etcd-restore-stop", "etcd_restore_stop",
                  "Static pods etcd and kube-apiserver stopped (manifests moved aside)",
                  [etcd_restore_stop_job(spec, n) for n in cps]),
            _step(spec, "etcd-restore-swap", "etcd_restore_swap",
                  "Restored data swapped in for /var/lib/etcd (the old one kept aside, named)",
                  [etcd_restore_swap_job(spec, n, snapshot) for n in cps]),
            _step(spec, "etcd-restore-start", "etcd_restore_start",
                  "Manifests back; wait until etcd and the API server answer",
                  [etcd_restore_start_job(spec, n) for n in cps]),
        )),
        Phase("members", "Check the restored etcd cluster", (
            _step(spec, "etcd-restore-verify", "etcd_restore_verify",
                  "Every control plane's member back in the restored cluster, all healthy",
                  [etcd_restore_verify_job(spec, first)]),)),
        _kubeconfig_phase(spec, first),
        _verify_phase(spec, kind="health"),
    ]
