"""The certs mode's tasks (flows/certs.py; the plan: installers/certs_plan.py; the judging:
installers/certs.py).

certs_check hands each control plane's `kubeadm certs check-expiration -o json` to the judging
and publishes a row per certificate per node — the table artifact `certificates` — and the days
left by node in the run's cluster_info (tasks/verify.py reads them from run.info). A certificate
under CERT_WARN_DAYS sends health's `kai.certificate.expiring` event (deployments/alerts.py). The
second check of a renewing run compares with the first: every renewable certificate must expire
later, and the table shows the days left before beside the days left now.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from installers import certs
from installers.cluster_check import CERT_WARN_DAYS
from installers.plan import HostJob, Step
from installers.ssh import JobResult
from tasks.context import current_run
from tasks.node_step import run_node_step
from tasks.step_task import step_task
from tasks.verify import CERTIFICATES_BY_NODE, emit_certificate_expiring

ARTIFACT_KEY = "certificates"
ROWS = "certificate_rows"   # run.info: the rows of the run's first check (a renewal compares)
FIRST_CHECK = "certs-check"
RENEW_STEP = "certs-renew"


class CertificatesProblem(Exception):
    retryable = False  # a judgement of what the nodes said: asking again changes nothing


@step_task
def certs_check(step: Step) -> list[dict]:
    """`certs-check.sh` on every control plane: `kubeadm certs check-expiration -o json`, judged
    on the controller; fails when a certificate has expired (unless this run renews next) or,
    after a renewal, when a renewable one does not expire later than before."""
    run = current_run()
    logger = get_run_logger()
    # kept in the run: a retry runs only the hosts that failed, the others' answers stay
    outputs: dict[str, str] = run.info.setdefault(f"certs-json:{step.name}", {})

    def keep(job: HostJob, result: JobResult) -> None:
        outputs[job.node] = result.outputs.get("expiration.json", b"").decode()

    run_node_step(step, on_result=keep)
    rows = [row for job in step.jobs for row in certs.parse_expiration(job.node, outputs.get(job.node, ""))]
    first = step.name == FIRST_CHECK
    before: list[certs.CertRow] | None = None if first else run.info.get(ROWS)
    renewing_next = first and run.plan.get(RENEW_STEP) is not None
    errors, warnings = certs.judge(rows)
    if first:
        run.info[ROWS] = rows
    elif before is not None:
        errors += certs.not_renewed(before, rows)
    create_table_artifact(certs.report_rows(rows, before), key=ARTIFACT_KEY,
                          description=f"cluster {run.spec.name}: days left of every kubeadm certificate "
                                      f"per control plane" + (" (after the renewal)" if before else ""))
    run.info[CERTIFICATES_BY_NODE] = certs.by_node(rows)
    for w in warnings:
        logger.warning("certs: %s", w)
    if not renewing_next:  # a renewal is about to fix them: alert on what the run leaves behind
        for r in rows:
            if not r.missing and r.days_left is not None and r.days_left < CERT_WARN_DAYS:
                emit_certificate_expiring(run.spec.name, f"{r.node}: {r.certificate}", r.days_left, r.expires)
    least = min((r for r in rows if r.days_left is not None and not r.authority),
                key=lambda r: r.days_left, default=None)
    if least is not None:
        logger.info("certs: %d certificate(s) on %d control plane(s); the soonest to expire: %s on %s, "
                    "%d days left", len(rows), len(step.jobs), least.certificate, least.node, least.days_left)
    if errors and renewing_next:
        for e in errors:
            logger.error("certs: %s (renewing next)", e)
    elif errors:
        raise CertificatesProblem("; ".join(errors))
    return [r.row() for r in rows]


@step_task
def certs_renew(step: Step) -> list:
    """`certs-renew.sh` on each control plane, one after another: etcd healthy everywhere, then
    `kubeadm certs renew all` and the node's static pods restarted on the new certificates
    (manifests moved out and back; etcd and the API server waited for)."""
    return run_node_step(step)
