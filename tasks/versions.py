"""health's node_versions step: what each node's Kubernetes binaries say (node-versions.sh:
kubeadm's version, which the API's Node objects do not carry, and the kubelet binary's on disk).
verify compares them with the spec beside the Node objects' kubelet and containerd
(installers/cluster_check.py version_drift) and reports drift as warnings.

A look, not a change: a node that cannot be reached (down, SSH refused) is a warning naming the
node and the error — the API's look in verify judges the cluster — but a host whose key does not
match, or a login kai is refused, fails the step: those need a human, not a line in a report.
"""

from __future__ import annotations

from prefect import get_run_logger

from installers.plan import HostJob, Step
from installers.preflight import parse_facts_env
from installers.ssh import JobResult
from tasks.context import current_run
from tasks.node_step import StepFailed, run_node_step
from tasks.step_task import step_task
from tasks.verify import INSTALLED_VERSIONS, VERSIONS_UNREAD


@step_task
def node_versions(step: Step) -> dict[str, dict[str, str]]:
    """`node-versions.sh` on every node at once → run.info[INSTALLED_VERSIONS], read by verify."""
    run = current_run()
    logger = get_run_logger()
    installed: dict[str, dict[str, str]] = run.info.setdefault(INSTALLED_VERSIONS, {})
    unread: dict[str, str] = run.info.setdefault(VERSIONS_UNREAD, {})

    def keep(job: HostJob, result: JobResult) -> None:
        installed[job.node] = parse_facts_env(result.outputs.get("versions.env", b"").decode())

    try:
        run_node_step(step, on_result=keep)
    except StepFailed as exc:
        if not exc.retryable:  # a changed host key, a refused login: never just a warning
            raise
        for failure in exc.failures:
            unread[failure.node] = failure.error
            logger.warning("versions: not read on %s (%s): drift not checked there", failure.node,
                           failure.error)
    return installed
