"""Preflight: gather facts on every host (read-only), then judge them all in Python at once.

Judging on the controller keeps the rules in one place (installers/preflight.py) and allows the
checks no single host can make: unique hostnames, MACs and product_uuids, clock skew. A failed
preflight lists every finding on every host and stops the run before any host is changed; it is
not retried (the hosts will not change by themselves).
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from installers.plan import HostJob, Step
from installers.preflight import Finding, evaluate, parse_facts_env
from installers.ssh import JobResult
from tasks.context import current_run
from tasks.node_step import run_node_step
from tasks.step_task import step_task


class PreflightFailed(Exception):
    retryable = False

    def __init__(self, errors: list[Finding]):
        self.findings = errors
        super().__init__(f"preflight failed — {len(errors)} problem(s), no host was changed:\n"
                         + "\n".join(f"  {f.node}: [{f.check}] {f.message}" for f in errors))


@step_task
def preflight(step: Step) -> dict[str, dict[str, str]]:
    """Step kind `facts`: `facts.sh` on each host (read-only), then every finding judged at once
    (installers/preflight.py); raises PreflightFailed listing them."""
    run = current_run()
    logger = get_run_logger()
    facts: dict[str, dict[str, str]] = {}

    def keep(job: HostJob, result: JobResult) -> None:
        facts[job.node] = parse_facts_env(result.outputs.get("facts.env", b"").decode())

    run_node_step(step, on_result=keep)
    findings = evaluate(run.spec, run.plan.mode, facts)
    if findings:
        create_table_artifact(
            [{"host": f.node, "check": f.check, "severity": f.severity, "message": f.message}
             for f in findings],
            key="preflight-findings", description="preflight: every finding on every host")
    for f in findings:
        (logger.error if f.severity == "error" else logger.warning)("[%s] preflight %s: %s",
                                                                    f.node, f.check, f.message)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise PreflightFailed(errors)
    logger.info("preflight: %d host(s) ok (%d warning(s))", len(facts), len(findings))
    return facts
