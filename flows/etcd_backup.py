"""etcd_backup: snapshot the cluster's etcd from a healthy control plane to the controller.

Read-only for the cluster, so it takes no host locks (a schedule may fire during an install);
the snapshot lands under the spec's etcd_backup.directory (default: kai's state dir), 0600.
"""

from prefect import flow

from flows.common import kai_run
from installers.spec import ClusterSpec
from tasks.etcd_backup import etcd_backup as snapshot


@flow(name="etcd_backup")
def etcd_backup(spec: ClusterSpec) -> dict:
    """Take one etcd snapshot, store it checked, keep the newest etcd_backup.keep."""
    with kai_run(spec, "etcd_backup") as (run, plan):  # no host locks: the mode table says so
        return snapshot(plan.get("etcd-backup"))
