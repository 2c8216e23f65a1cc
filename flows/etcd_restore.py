"""etcd_restore: every control plane's etcd back to a named snapshot, then the cluster verified.

Refused before anything is contacted unless the caller confirms (`kai restore --yes`, REST
`"confirm": true`): the cluster loses everything written since the snapshot. `kai plan --mode
etcd_restore --snapshot NAME` shows the steps without it. The snapshot is one etcd_backup stored
for this cluster (installers/etcd_backups.py), named by its file name. Each step runs on every
control plane before the next begins (the order and its reasons: installers/restore_plan.py):
stage the snapshot beside the live data, stop etcd and the API servers, swap the data in (the old
kept aside, named), start them, then check the members and the cluster. Takes the host locks.
"""

from prefect import flow

from flows.common import kai_run
from flows.hooks import kill_remote_steps
from installers.spec import ClusterSpec
from tasks.etcd_restore import (etcd_restore_stage, etcd_restore_start, etcd_restore_stop,
                                etcd_restore_swap, etcd_restore_verify, refuse_unless_confirmed,
                                restore_snapshot)
from tasks.kubeconfig import kubeconfig
from tasks.verify import verify


@flow(name="etcd_restore", on_cancellation=[kill_remote_steps], on_crashed=[kill_remote_steps])
def etcd_restore(spec: ClusterSpec, snapshot: str, confirm: bool = False, lock_wait_s: float = 30) -> dict:
    """Restore the cluster's etcd from `snapshot` (a file name in its backup directory)."""
    refuse_unless_confirmed("etcd_restore", confirm)
    with kai_run(spec, "etcd_restore", options={"snapshot": snapshot},
                 lock_wait_s=lock_wait_s) as (run, plan):
        restore_snapshot(plan.get("restore-snapshot"), snapshot)
        etcd_restore_stage(plan.get("etcd-restore-stage"))
        etcd_restore_stop(plan.get("etcd-restore-stop"))
        etcd_restore_swap(plan.get("etcd-restore-swap"))
        etcd_restore_start(plan.get("etcd-restore-start"))
        etcd_restore_verify(plan.get("etcd-restore-verify"))
        kubeconfig(plan.get("kubeconfig"))
        return verify(plan.get("verify"))
