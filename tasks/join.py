"""Joining nodes: fresh short-lived credentials from the first control plane, then the joins.

The token, CA hash and certificate key come back as out-files of join-credentials.sh (never printed,
so never logged), are registered with the log redactor, live only in this flow run's memory and
reach the joining nodes on the SSH runner's stdin.
"""

from installers import redact
from installers.plan import HostJob, Step
from installers.ssh import JobResult
from tasks.context import current_run
from tasks.node_step import HostOutcome, run_node_step
from tasks.step_task import step_task

_OUTPUTS = {"token": "KAI_JOIN_TOKEN", "ca_hash": "KAI_CA_CERT_HASH",
            "certificate_key": "KAI_CERTIFICATE_KEY"}


@step_task
def join_credentials(step: Step) -> list[HostOutcome]:
    """`join-credentials.sh` on the first control plane: a join token (short TTL) and, for
    control planes, the certs uploaded with a fresh key; kept in memory for `join`."""
    run = current_run()

    def keep(job: HostJob, result: JobResult) -> None:
        for out_name, env_name in _OUTPUTS.items():
            if out_name in result.outputs:
                value = result.outputs[out_name].decode().strip()
                redact.REDACTOR.add(value)
                run.secrets[env_name] = value

    return run_node_step(step, on_result=keep)


@step_task
def join(step: Step) -> list[HostOutcome]:
    """`kubeadm-join.sh` on each host: kubeadm join for workers (in parallel) or control planes
    (one after another)."""
    return run_node_step(step, secret_env=current_run().secrets)
