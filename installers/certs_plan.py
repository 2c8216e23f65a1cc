"""The plan of the certs mode: look at every kubeadm certificate of the control planes; with
renew, renew them one control plane at a time and look again.

    kubeconfig   a fresh admin kubeconfig from the first control plane
    check        certs-check (every control plane at once, read-only): `kubeadm certs
                 check-expiration -o json` → days left per certificate per node
    renew        (renew only) certs-renew (one control plane after another — etcd loses one member
                 at a time, the API answers from the others): `kubeadm certs renew all`, the static
                 pods restarted on the new certificates → kubeconfig-renewed (the admin kubeconfig
                 kai keeps on the controller, with its new client certificate) → certs-check-renewed
                 (every renewable certificate must expire later than before)
    verify       the health look at the cluster (kind health): the API answers, the certificates
                 it serves and the controller's kubeconfig presents, days left in cluster_info

A check alone changes nothing and takes no host locks (installers/modes.py `locks_only_with`):
schedule it. The judging: installers/certs.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from installers.plan_model import HostJob, Phase, host_job, plan_step

if TYPE_CHECKING:
    from installers.spec import ClusterSpec, Node

# How long one static pod may take to stop, and to come back, on a control plane being renewed:
# the kubelet looks at its manifests every 20 s (fileCheckFrequency), then stops or starts the pod.
POD_TIMEOUT_S = 120


def _plan():
    # installers/plan.py imports this module for its PLANNERS row: import it back lazily
    from installers import plan
    return plan


def certs_check_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("certs_check", node)


def certs_renew_job(spec: ClusterSpec, node: Node) -> HostJob:
    return host_job("certs_renew", node, {"KAI_NODE_NAME": node.name,
                                              "KAI_POD_TIMEOUT_S": str(POD_TIMEOUT_S)})


def certs_plan(spec: ClusterSpec, nodes: list[Node], renew: bool = False) -> list[Phase]:
    p = _plan()
    cps = spec.control_planes()
    phases = [p._kubeconfig_phase(spec, cps[0]),
              Phase("check", "Days left of every kubeadm certificate on each control plane", (
                  plan_step(spec, "certs-check", "certs_check", "kubeadm certs check-expiration on "
                            "every control plane", [certs_check_job(spec, n) for n in cps]),))]
    if renew:
        phases.append(Phase("renew", "Renew the certificates, one control plane at a time", (
            plan_step(spec, "certs-renew", "certs_renew", "kubeadm certs renew all, then the static "
                    "pods restarted on the new certificates (one control plane at a time)",
                    [certs_renew_job(spec, n) for n in cps], parallel=False),
            plan_step(spec, "kubeconfig-renewed", "kubeconfig",
                    "Fetch the renewed admin.conf (a new client certificate)",
                    [p.kubeconfig_job(spec, cps[0])]),
            plan_step(spec, "certs-check-renewed", "certs_check", "kubeadm certs check-expiration "
                    "again: every renewable certificate expires later", [certs_check_job(spec, n) for n in cps]),
        )))
    phases.append(p._verify_phase(spec, kind="health"))
    return phases
