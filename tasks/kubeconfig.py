"""Fetch the admin kubeconfig from the first control plane into the state dir (mode 0600)."""

import os
from pathlib import Path

from installers import redact
from installers.plan import HostJob, Step
from installers.ssh import JobResult
from tasks.context import current_run
from tasks.node_step import run_node_step
from tasks.step_task import step_task


def save_private(path: Path, data: bytes) -> None:
    """Write a file readable only by its owner, atomically (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@step_task
def kubeconfig(step: Step) -> str:
    """`kubeconfig.sh` on the first control plane: admin.conf into the state dir (mode 0600)."""
    run = current_run()
    path = run.cluster_dir / "admin.conf"

    def keep(job: HostJob, result: JobResult) -> None:
        data = result.outputs["admin.conf"]
        for line in data.decode().splitlines():  # the client key must never reach a log
            if "client-key-data" in line:
                redact.REDACTOR.add(line.split(":", 1)[1].strip())
        save_private(path, data)

    run_node_step(step, on_result=keep)
    run.info["kubeconfig_path"] = str(path)
    return str(path)
