"""The upgrade mode's tasks (flows/upgrade.py; the plan: installers/plan_upgrade.py).

The node steps run their scripts like every other step (tasks/node_step.py). Around them this
module keeps the run's report artifact `upgrade-report` current — each node's kubelet before and
now, and which nodes are cordoned and by whom — so that whenever a run stops (failed, cancelled,
crashed) its last report says which node it left cordoned: it is published before each drain
(naming the nodes about to be cordoned), after each uncordon, and at the end (upgrade_report, a
controller step).
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from installers import upgrade_checks
from installers.plan import HostJob, Step
from installers.preflight import parse_facts_env
from installers.ssh import JobResult
from installers.upgrade_rules import Target, resolve_target
from tasks.context import RunContext, current_run
from tasks.node_step import run_node_step
from tasks.preflight import PreflightFailed
from tasks.step_task import step_task

REPORT_KEY = "upgrade-report"
NODES_KEY = "upgrade-nodes"   # the same rows as data (a table artifact)


def _target(version: str) -> Target:
    target, problems = resolve_target(version)
    if target is None:
        raise ValueError("; ".join(problems))
    return target


def _kubeconfig(run: RunContext) -> Path:
    return Path(run.info.get("kubeconfig_path") or run.cluster_dir / "admin.conf")


def publish_report(run: RunContext, target: Target, note: str) -> list[dict]:
    """Look at the nodes now and publish the report (never fails the step: a report that cannot
    reach the API says so)."""
    logger = get_run_logger()
    try:
        view = upgrade_checks.observe(_kubeconfig(run), run.spec, timeout=5)
    except Exception as exc:  # noqa: BLE001 - the report must still be written
        logger.warning("upgrade report: cannot read the cluster: %s", exc)
        view = upgrade_checks.ClusterView(endpoint_problem=str(exc))
    rows = upgrade_checks.report_rows(run.spec, target, run.info.get("upgrade_before", {}), view,
                                      set(run.info.get("upgrade_cordoned", ())))
    create_table_artifact(rows, key=NODES_KEY, description=f"upgrade to v{target.version}: nodes (data)")
    create_markdown_artifact(upgrade_checks.render_report(run.spec.name, target, rows, note),
                             key=REPORT_KEY, description=f"upgrade of {run.spec.name} to v{target.version}")
    return rows


@step_task
def upgrade_preflight(step: Step, target_version: str) -> dict:
    """Step kind `upgrade_facts`: `upgrade-facts.sh` on every node (read-only), then the API's
    view (installers/upgrade_checks.py), judged at once; raises PreflightFailed listing every
    problem before anything changes."""
    run = current_run()
    logger = get_run_logger()
    target = _target(target_version)
    facts: dict[str, dict[str, str]] = {}

    def keep(job: HostJob, result: JobResult) -> None:
        facts[job.node] = parse_facts_env(result.outputs.get("facts.env", b"").decode())

    run_node_step(step, on_result=keep)
    view = upgrade_checks.observe(_kubeconfig(run), run.spec)
    findings = upgrade_checks.judge(run.spec, target, facts, view)
    for f in findings:
        (logger.error if f.severity == "error" else logger.warning)("[%s] upgrade preflight %s: %s",
                                                                    f.node, f.check, f.message)
    if findings:
        create_table_artifact([{"host": f.node, "check": f.check, "severity": f.severity,
                                "message": f.message} for f in findings],
                              key="preflight-findings", description="upgrade preflight: every finding")
    run.info["upgrade_before"] = upgrade_checks.before_versions(view)
    # nodes an earlier run cordoned (its report asked for this rerun) are this run's to uncordon
    run.info["upgrade_cordoned"] = {n for f in facts.values()
                                    for n in (f.get("kai_cordoned") or "").split(",") if n}
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise PreflightFailed(errors)
    logger.info("upgrade preflight: API servers %s; kubelets %s; target v%s",
                view.apiservers, run.info["upgrade_before"], target.version)
    publish_report(run, target, "before the upgrade")
    return facts


@step_task
def upgrade_node(step: Step) -> list:
    """`upgrade-node.sh` on each host of the step: its part (apply, node, kubelet, worker) of the
    upgrade — packages from the target minor's repository (unheld, then held again), kubeadm
    upgrade apply|node, kubelet restarted."""
    return run_node_step(step)


def _nodes_of(step: Step, env_key: str) -> list[str]:
    return [n for job in step.jobs for n in job.env[env_key].split()]


@step_task
def drain(step: Step, target_version: str) -> list:
    """`upgrade-drain.sh` on the first control plane: cordon and drain the step's nodes
    (PodDisruptionBudgets honoured; a drain that cannot finish names the pod that blocked it).
    The report names them before the drain starts (about to be cordoned) and after it."""
    run = current_run()
    target = _target(target_version)
    nodes = _nodes_of(step, "KAI_DRAIN_NODES")
    run.info.setdefault("upgrade_cordoned", set()).update(nodes)
    publish_report(run, target, f"draining {', '.join(nodes)} (step {step.name})")
    try:
        return run_node_step(step)
    finally:
        publish_report(run, target, f"after {step.name}")


@step_task
def uncordon(step: Step, target_version: str) -> list:
    """`upgrade-uncordon.sh` on the first control plane: wait until the step's nodes are Ready at
    the target, then uncordon those kai cordoned; the report is published after it."""
    run = current_run()
    target = _target(target_version)
    nodes = _nodes_of(step, "KAI_UNCORDON_NODES")
    left: set[str] = set()

    def keep(job: HostJob, result: JobResult) -> None:
        left.update(result.outputs.get("left_cordoned", b"").decode().split())

    try:
        outcomes = run_node_step(step, on_result=keep)
        run.info.setdefault("upgrade_cordoned", set()).difference_update(nodes)
        if left:
            get_run_logger().warning("left cordoned (cordoned before the upgrade): %s",
                                     ", ".join(sorted(left)))
    finally:
        publish_report(run, target, f"after {step.name}")
    return outcomes


@step_task
def upgrade_report(step: Step, target_version: str) -> list[dict]:
    """On the controller: the run's final report (each node's kubelet before/after, the API
    servers' versions, nodes left cordoned); fails when a node is not at the target."""
    run = current_run()
    target = _target(target_version)
    rows = publish_report(run, target, "after the upgrade")
    behind = [r["node"] for r in rows if r["at target"] != "yes"]
    if behind:
        raise RuntimeError(f"after the upgrade, node(s) {', '.join(behind)} are not at v{target.version}")
    get_run_logger().info("upgrade: every node at v%s", target.version)
    return rows
