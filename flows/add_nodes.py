"""add_nodes: join new workers or control planes to a running cluster.

Only the new nodes are prepared; the first control plane is asked for fresh short-lived join
credentials (and re-uploads the control-plane certificates with a new key when a control plane
joins). No existing node is restarted or changed.
"""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.spec import ClusterSpec
from tasks.join import join, join_credentials
from tasks.kubeconfig import kubeconfig
from tasks.node_tasks import kube_packages, kube_vip, os_prep, runtime
from tasks.preflight import preflight
from tasks.verify import verify


@flow(name="add_nodes", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def add_nodes(spec: ClusterSpec, nodes: list[str], lock_wait_s: float = 30) -> dict:
    """Add the named nodes of the spec to its running cluster."""
    with kai_run(spec, "add_nodes", nodes=nodes, lock_wait_s=lock_wait_s) as (run, plan):
        # plan.get: None (the task does nothing) for a step the plan has not, e.g. join-workers
        # when only control planes are added
        preflight(plan.get("facts"))
        os_prep(plan.get("os-prep"))
        runtime(plan.get("runtime"))
        kube_packages(plan.get("kube-packages"))
        join_credentials(plan.get("join-credentials"))
        join(plan.get("join-control-planes"))
        kube_vip(plan.get("kube-vip-join"))
        join(plan.get("join-workers"))
        kubeconfig(plan.get("kubeconfig"))
        return verify(plan.get("verify"))
