"""Benchmark-only flows for benchmarks/concurrency.py: kai's `ha` mode with synthetic steps.

The flow is named `ha` and takes the mode's parameters (`spec`, `lock_wait_s`), so kai's REST API
starts it exactly as it starts an install (`POST /api/v1/installation/ha/start` → deployment
`ha/ha`). Its body is the frame of flows/common.py `kai_run` (spec validated for the mode, host
locks, Fleet, RunContext) around the synthetic plan of benchmarks/orchestration.py — S steps, each
`sleep d` on every host through kai-exec.sh — because the real plan would install containerd on
this machine (light hosts *are* the machine). S and d come from KAI_BENCH_STEPS / KAI_BENCH_SLEEP
in the environment of whoever runs the flow (workers, runner).

    python -m benchmarks.scale_flows --serve     # a runner serving ha/ha, as `kai serve` would
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from prefect import flow

from benchmarks.synthetic import BENCH_SCRIPTS_DIR, bench_plan
from flows.common import host_locks
from installers import scripts_store
from installers.spec import SpecError, load_spec, validate_for_mode
from installers.ssh import Fleet
from tasks.context import RunContext, activate
from tasks.node_step import HostOutcome, run_node_step
from tasks.step_task import step_task
from tasks.targets import ssh_targets


@step_task
def bench_step(step) -> list[HostOutcome]:
    return run_node_step(step)


@flow(name="ha")
def ha(spec: dict, lock_wait_s: float = 30) -> dict:
    """Synthetic `ha`: the mode's checks and locks, then S × `sleep d` on every node."""
    scripts_store.add_scripts_dir(BENCH_SCRIPTS_DIR)
    parsed = load_spec(spec)
    problems = validate_for_mode(parsed, "ha")
    if problems:
        raise SpecError(problems)
    steps = int(os.environ.get("KAI_BENCH_STEPS", "10"))
    duration = float(os.environ.get("KAI_BENCH_SLEEP", "1"))
    plan = bench_plan([(n.name, n.address) for n in parsed.nodes], steps, duration)
    state_dir = Path(tempfile.mkdtemp(prefix="kai-bench-state-"))
    with host_locks([n.address for n in parsed.nodes], lock_wait_s):
        fleet = Fleet(ssh_targets(parsed, list(parsed.nodes)))
        try:
            with activate(RunContext(spec=parsed, plan=plan, fleet=fleet, state_dir=state_dir)):
                done = {step.name: sum(o.ok for o in bench_step(step)) for step in plan.steps()}
        finally:
            fleet.close()
            shutil.rmtree(state_dir, ignore_errors=True)
    return {"hosts": len(parsed.nodes), "ok_per_step": done}


def serve_runner() -> None:
    from prefect import serve

    serve(ha.to_deployment(name="ha", tags=["kai"]), print_starting_message=False,
          pause_on_shutdown=False)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve_runner()
    else:
        sys.exit(__doc__)
