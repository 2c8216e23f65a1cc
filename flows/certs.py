"""certs: days left of every kubeadm certificate on each control plane — API server, kubelet
client, front-proxy, etcd server/peer/healthcheck, the kubeconfigs' client certificates, the CAs —
in the `certificates` artifact and the run's cluster_info; with `renew`, their renewal.

A check (the default) changes nothing and takes no host locks: schedule it; certificates under 30
days send the `kai.certificate.expiring` alert, an expired one fails the run. With renew, each
control plane in turn renews (`kubeadm certs renew all`) and restarts its static pods on the new
certificates; then the admin kubeconfig kai keeps is fetched again (a new client certificate), the
certificates are checked again (every renewable one expires later) and the cluster verified.
The plan: installers/certs_plan.py.
"""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.spec import ClusterSpec
from tasks.certs import certs_check, certs_renew
from tasks.kubeconfig import kubeconfig
from tasks.verify import verify


@flow(name="certs", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def certs(spec: ClusterSpec, renew: bool = False, lock_wait_s: float = 30) -> dict:
    """Report every kubeadm certificate's days left on the control planes; renew: renew them."""
    with kai_run(spec, "certs", options={"renew": renew}, lock_wait_s=lock_wait_s) as (run, plan):
        kubeconfig(plan.get("kubeconfig"))
        certs_check(plan.get("certs-check"))
        certs_renew(plan.get("certs-renew"))           # renew only: one control plane at a time
        kubeconfig(plan.get("kubeconfig-renewed"))     # the admin kubeconfig's new client certificate
        certs_check(plan.get("certs-check-renewed"))   # every renewable certificate expires later
        return verify(plan.get("verify"))
