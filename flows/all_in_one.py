"""all_in_one: a single node that is control plane and worker at once."""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.spec import ClusterSpec
from tasks.addons import monitoring
from tasks.kubeconfig import kubeconfig
from tasks.node_tasks import cni, kube_packages, kubeadm_init, os_prep, runtime, storage
from tasks.preflight import preflight
from tasks.verify import verify


@flow(name="all_in_one", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def all_in_one(spec: ClusterSpec, lock_wait_s: float = 30) -> dict:
    """Install a single-node cluster (the node is schedulable: `taints: []` at init)."""
    with kai_run(spec, "all_in_one", lock_wait_s=lock_wait_s) as (run, plan):
        preflight(plan.get("facts"))
        os_prep(plan.get("os-prep"))
        runtime(plan.get("runtime"))
        kube_packages(plan.get("kube-packages"))
        kubeadm_init(plan.get("kubeadm-init"))
        kubeconfig(plan.get("kubeconfig"))
        cni(plan.get("cni"))
        storage(plan.get("storage"))  # None (nothing runs) when the spec turns storage off
        monitoring(plan.get("monitoring"))  # None unless addons.monitoring
        return verify(plan.get("verify"))
