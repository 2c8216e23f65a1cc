"""ha: three or more control planes behind kube-vip or a load balancer, plus workers."""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.spec import ClusterSpec
from tasks.addons import monitoring
from tasks.join import join, join_credentials
from tasks.kubeconfig import kubeconfig
from tasks.node_tasks import cni, kube_packages, kube_vip, kubeadm_init, os_prep, runtime, storage
from tasks.preflight import preflight
from tasks.verify import verify


@flow(name="ha", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def ha(spec: ClusterSpec, lock_wait_s: float = 30) -> dict:
    """Install a highly available cluster."""
    with kai_run(spec, "ha", lock_wait_s=lock_wait_s) as (run, plan):
        # plan.get gives None for a step this spec's plan does not have (kube-vip steps without a
        # kube-vip endpoint, join-workers without workers, storage when off): its task then does nothing
        preflight(plan.get("facts"))
        os_prep(plan.get("os-prep"))
        runtime(plan.get("runtime"))
        kube_packages(plan.get("kube-packages"))
        kube_vip(plan.get("kube-vip-pre-init"))  # the VIP must answer before kubeadm init uses it
        kubeadm_init(plan.get("kubeadm-init"))
        kube_vip(plan.get("kube-vip-post-init"))
        join_credentials(plan.get("join-credentials"))
        join(plan.get("join-control-planes"))  # one at a time: etcd grows a member per join
        kube_vip(plan.get("kube-vip-join"))
        join(plan.get("join-workers"))
        kubeconfig(plan.get("kubeconfig"))
        cni(plan.get("cni"))
        storage(plan.get("storage"))
        monitoring(plan.get("monitoring"))  # None unless addons.monitoring
        return verify(plan.get("verify"))
