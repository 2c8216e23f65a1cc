"""`etcd-backup.sh` on a healthy control plane: the snapshot, checked (sha256) and stored 0600 on
the controller, the oldest pruned beyond `etcd_backup.keep`; an artifact names file, size,
checksum and revision (installers/etcd_backups.py does the storing)."""

from __future__ import annotations

import dataclasses

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from installers import etcd_backups
from installers.plan import HostJob, Step
from installers.ssh import JobResult
from tasks.context import current_run
from tasks.node_step import StepFailed, run_node_step
from tasks.step_task import step_task

ARTIFACT_KEY = "etcd-backup"


@step_task
def etcd_backup(step: Step) -> dict:
    """`etcd-backup.sh` on the step's control planes in order: the first whose etcd cluster is
    healthy gives the snapshot (a node with a broken etcd only costs its attempt)."""
    run = current_run()
    logger = get_run_logger()
    settings = run.spec.etcd_backup
    directory = etcd_backups.backup_dir(settings.directory, run.cluster_dir)
    stored: list[etcd_backups.Backup] = []

    def keep(job: HostJob, result: JobResult) -> None:
        stored.append(etcd_backups.store(directory, run.spec.name, job.node, result.outputs))

    failures = []
    for job in step.jobs:
        try:
            run_node_step(dataclasses.replace(step, jobs=(job,)), on_result=keep)
            break
        except StepFailed as exc:
            failures += exc.failures
            logger.warning("etcd backup on %s failed, trying the next control plane", job.node)
    if not stored:
        raise StepFailed(step, failures, len(step.jobs))
    backup = stored[0]
    removed = etcd_backups.prune(directory, run.spec.name, settings.keep)
    logger.info("etcd snapshot %s: %d bytes, sha256 %s, revision %d (from %s); pruned %d old",
                backup.path, backup.size, backup.sha256, backup.revision, backup.node, len(removed))
    create_table_artifact([backup.row()], key=ARTIFACT_KEY,
                          description=f"etcd snapshot of cluster {run.spec.name}")
    run.info["etcd_backup"] = backup.row()
    return {**backup.row(), "pruned": [str(p) for p in removed]}
