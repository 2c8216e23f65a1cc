"""etcd_restore's steps (installers/restore_plan.py): one Prefect task per step kind.

`restore_snapshot` runs on the controller: it finds the named snapshot in the cluster's backup
directory (installers/etcd_backups.py), takes its sha256 and makes the run's new etcd cluster
token. The node steps run `etcd-restore.sh`, one part each; the snapshot itself, its sha256 and
the token are added to the plan's jobs here, at run time (the plan reads no disk).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from installers import etcd_backups, modes
from installers.plan import Step
from tasks.context import RunContext, current_run
from tasks.node_step import HostOutcome, run_node_step
from tasks.step_task import step_task

ARTIFACT_KEY = "etcd-restore"
SNAPSHOT_FILE = "snapshot.db"  # its name in $KAI_FILES_DIR on the node


class RestoreRefused(Exception):
    """The restore may not start (not confirmed, no such snapshot): never retried."""

    retryable = False


def refuse_unless_confirmed(mode: str, confirm: bool) -> None:
    """Before anything is contacted: a restore replaces the cluster's data."""
    problems = modes.confirmation_problems(mode, confirm)
    if problems:
        raise RestoreRefused("refused, nothing was touched: " + "; ".join(problems))


def _restore(run: RunContext) -> dict:
    try:
        return run.info["etcd_restore"]
    except KeyError:
        raise RuntimeError("internal: the restore-snapshot step did not run before the node steps") from None


def _with_env(step: Step, **env: str) -> Step:
    return dataclasses.replace(step, jobs=tuple(dataclasses.replace(j, env={**j.env, **env})
                                                for j in step.jobs))


@step_task
def restore_snapshot(step: Step, snapshot: str) -> dict:
    """On the controller: the named snapshot of this cluster, from its backup directory (the spec's
    etcd_backup.directory, else the state dir's), its size and sha256; a new cluster token."""
    run = current_run()
    directory = etcd_backups.backup_dir(run.spec.etcd_backup.directory, run.cluster_dir)
    try:
        path = etcd_backups.snapshot_file(directory, run.spec.name, snapshot)
    except etcd_backups.BackupError as exc:
        raise RestoreRefused(f"refused, nothing was touched: {exc}") from None
    restore = {"file": str(path), "size_bytes": path.stat().st_size,
               "sha256": etcd_backups.sha256_of(path),
               # new with every run: the restored members form a cluster of their own, which no
               # member of the old cluster (nor of an earlier restore) can join by mistake
               "cluster_token": f"kai-{run.spec.name}-{secrets.token_hex(8)}"}
    run.info["etcd_restore"] = restore
    get_run_logger().info("restore-snapshot: %s, %d bytes, sha256 %s; new cluster token %s",
                          path, restore["size_bytes"], restore["sha256"], restore["cluster_token"])
    create_table_artifact([restore], key=ARTIFACT_KEY,
                          description=f"etcd snapshot restored on cluster {run.spec.name}")
    return restore


@step_task
def etcd_restore_stage(step: Step) -> list[HostOutcome]:
    """`etcd-restore.sh` part stage on every control plane: the snapshot streamed to it (its
    sha256 checked there) and restored beside the live data with etcdutl (member name, peer URL,
    initial cluster, the new token). etcd is not touched yet."""
    run = current_run()
    restore = _restore(run)
    data = Path(restore["file"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != restore["sha256"]:
        raise RestoreRefused(f"refused: {restore['file']} changed since the restore-snapshot step")
    return run_node_step(_with_env(step, KAI_SNAPSHOT_SHA256=restore["sha256"],
                                   KAI_ETCD_CLUSTER_TOKEN=restore["cluster_token"]),
                         run_files={SNAPSHOT_FILE: data})


@step_task
def etcd_restore_stop(step: Step) -> list[HostOutcome]:
    """`etcd-restore.sh` part stop on every control plane: the etcd and kube-apiserver static pod
    manifests moved aside; waits until both have stopped."""
    return run_node_step(step)


@step_task
def etcd_restore_swap(step: Step) -> list[HostOutcome]:
    """`etcd-restore.sh` part swap on every control plane: the old member data kept aside (named),
    the restored data in its place. The token in its inputs makes the done-marker this run's."""
    restore = _restore(current_run())
    return run_node_step(_with_env(step, KAI_ETCD_CLUSTER_TOKEN=restore["cluster_token"]))


@step_task
def etcd_restore_start(step: Step) -> list[HostOutcome]:
    """`etcd-restore.sh` part start on every control plane: the manifests back; waits until the
    local etcd and API server answer."""
    return run_node_step(step)


@step_task
def etcd_restore_verify(step: Step) -> list[HostOutcome]:
    """`etcd-restore.sh` part verify on the first control plane: every
    control plane's member back in one restored cluster, all healthy."""
    return run_node_step(step)
