"""health: look at a running cluster — nodes, system and CNI pods, storage, certificate expiry.

Read-only, so it takes no host locks and can run while an install is in progress; schedule it.
"""

from prefect import flow

from flows.common import kai_run
from installers.spec import ClusterSpec
from tasks.kubeconfig import kubeconfig
from tasks.verify import verify


@flow(name="health")
def health(spec: ClusterSpec) -> dict:
    """Fetch a fresh admin kubeconfig from the first control plane and verify the cluster."""
    with kai_run(spec, "health") as (run, plan):  # no host locks: the mode table says so
        kubeconfig(plan.get("kubeconfig"))
        return verify(plan.get("verify"))
