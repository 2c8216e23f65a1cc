"""Add-on steps whose files must be accounted for: the CNI and monitoring.

The node scripts (cni.sh, monitoring.sh) verify every file they download against its pins and
published sums (installers/addons.py) and hand back `files.sha256`, one line per file:
`<sha256> <name> <verified-by> <source>`. These tasks collect the lines of the run into
`run.info["applied_files"]` and publish them as the table artifact `applied-files`; verify puts
them in the cluster-info report.
"""

from __future__ import annotations

from prefect.artifacts import create_table_artifact

from installers.plan import HostJob, Step
from installers.ssh import JobResult
from tasks.context import current_run
from tasks.node_step import HostOutcome, run_node_step
from tasks.step_task import step_task

APPLIED_FILES_ARTIFACT_KEY = "applied-files"
REPORT_FILE = "files.sha256"


def parse_applied_files(step: str, node: str, text: str) -> list[dict[str, str]]:
    """files.sha256 lines -> rows {step, node, file, sha256, verified_by, source}."""
    rows = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) != 4:
            raise ValueError(f"{step} on {node}: malformed {REPORT_FILE} line {line[:120]!r}")
        sha256, name, verified_by, source = parts
        rows.append({"step": step, "node": node, "file": name, "sha256": sha256,
                     "verified_by": verified_by, "source": source})
    return rows


def run_accounted_step(step: Step) -> list[HostOutcome]:
    """Run a node step and record the sha256 of every file it applied."""
    run = current_run()

    def collect(job: HostJob, result: JobResult) -> None:
        data = result.outputs.get(REPORT_FILE)
        if data is None:  # done earlier (done-marker): nothing was downloaded this time
            return
        rows = parse_applied_files(step.name, job.node, data.decode())
        kept = [r for r in run.info.get("applied_files", []) if r["step"] != step.name]
        run.info["applied_files"] = kept + rows

    outcomes = run_node_step(step, on_result=collect)
    if run.info.get("applied_files"):
        create_table_artifact(run.info["applied_files"], key=APPLIED_FILES_ARTIFACT_KEY,
                              description="every manifest, chart and tool the add-on steps "
                                          "applied: sha256 and what it was verified against")
    return outcomes


@step_task
def monitoring(step: Step) -> list[HostOutcome]:
    """`monitoring.sh` on the first control plane: metrics-server, then kube-prometheus (CRDs
    Established before their custom objects), every file verified and its sha256 reported."""
    return run_accounted_step(step)
