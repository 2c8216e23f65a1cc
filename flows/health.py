"""health: look at a running cluster — nodes, system and CNI pods, storage, etcd, certificate
expiry, and drift (each node's kubelet, kubeadm and containerd against the spec).

Read-only, so it takes no host locks and can run while an install is in progress; schedule it.
"""

from prefect import flow

from flows.common import kai_run
from installers.spec import ClusterSpec
from tasks.kubeconfig import kubeconfig
from tasks.verify import verify
from tasks.versions import node_versions


@flow(name="health")
def health(spec: ClusterSpec) -> dict:
    """Fetch a fresh admin kubeconfig from the first control plane, read each node's installed
    versions, and verify the cluster."""
    with kai_run(spec, "health") as (run, plan):  # no host locks: the mode table says so
        kubeconfig(plan.get("kubeconfig"))
        node_versions(plan.get("node-versions"))
        return verify(plan.get("verify"))
