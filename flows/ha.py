"""ha: three or more control planes behind kube-vip or a load balancer, plus workers."""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.spec import ClusterSpec
from tasks.join import join, join_credentials
from tasks.kubeconfig import kubeconfig
from tasks.node_tasks import cni, kube_packages, kube_vip, kubeadm_init, os_prep, runtime, storage
from tasks.preflight import preflight
from tasks.verify import verify


@flow(name="ha", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def ha(spec: ClusterSpec, lock_wait_s: float = 30) -> dict:
    """Install a highly available cluster."""
    with kai_run(spec, "ha", lock_wait_s=lock_wait_s) as (run, plan):
        has = {step.name for step in plan.steps()}
        preflight(plan.step("facts"))
        os_prep(plan.step("os-prep"))
        runtime(plan.step("runtime"))
        kube_packages(plan.step("kube-packages"))
        if "kube-vip-pre-init" in has:  # the VIP must answer before kubeadm init uses it
            kube_vip(plan.step("kube-vip-pre-init"))
        kubeadm_init(plan.step("kubeadm-init"))
        if "kube-vip-post-init" in has:
            kube_vip(plan.step("kube-vip-post-init"))
        join_credentials(plan.step("join-credentials"))
        join(plan.step("join-control-planes"))  # one at a time: etcd grows a member per join
        if "kube-vip-join" in has:
            kube_vip(plan.step("kube-vip-join"))
        if "join-workers" in has:
            join(plan.step("join-workers"))
        kubeconfig(plan.step("kubeconfig"))
        cni(plan.step("cni"))
        if "storage" in has:
            storage(plan.step("storage"))
        return verify(plan.step("verify"))
