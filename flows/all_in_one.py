"""all_in_one: a single node that is control plane and worker at once."""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.spec import ClusterSpec
from tasks.kubeconfig import kubeconfig
from tasks.node_tasks import cni, kube_packages, kubeadm_init, os_prep, runtime, storage
from tasks.preflight import preflight
from tasks.verify import verify


@flow(name="all_in_one", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def all_in_one(spec: ClusterSpec, lock_wait_s: float = 30) -> dict:
    """Install a single-node cluster (the node is schedulable: `taints: []` at init)."""
    with kai_run(spec, "all_in_one", lock_wait_s=lock_wait_s) as (run, plan):
        preflight(plan.step("facts"))
        os_prep(plan.step("os-prep"))
        runtime(plan.step("runtime"))
        kube_packages(plan.step("kube-packages"))
        kubeadm_init(plan.step("kubeadm-init"))
        kubeconfig(plan.step("kubeconfig"))
        cni(plan.step("cni"))
        if run.spec.storage.local_path:
            storage(plan.step("storage"))
        return verify(plan.step("verify"))
