"""Child process: run a synthetic plan through kai's real flow machinery against a Prefect server.

    python -m benchmarks.kai_flow CONFIG.json RESULT.json      (PREFECT_API_URL must be set)

Same pieces as an install: a Prefect flow, `@step_task` tasks calling `run_node_step(step)`
(one task per step fanning out over hosts), `RunContext` + `activate`, `Fleet`/`Connection`
(paramiko, kai-exec.sh frame), `ssh_targets(spec)`, and the per-host locks of `flows.common`.
The only differences from `flows.common.kai_run`: the plan is synthetic (kai_run builds the real
one, whose scripts would install containerd on this machine) and the step script comes from
`benchmarks/scripts/` (added with `installers.scripts_store.add_scripts_dir`).

Two walls are reported, both from the flow call: `completed_wall_s` until Prefect records the
run Completed (what the UI, the REST API and `kai install` wait for: the benchmark's kai wall) and
`flow_wall_s` until the flow call returns in this process, which is up to a second later: Prefect's
flow engine then joins its heartbeat thread, which sleeps in 1 s slices.

Progress lines on stdout (the parent times the ingest backlog from them):
    KAI-BENCH flow-started <flow_run_id> <epoch>
    KAI-BENCH flow-returned <epoch> ok|failed
(`failed`: the parent does not wait for the ingest of lines that will never come; the run's
error is in RESULT.json.)
"""

from __future__ import annotations

import gc
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

T_PROCESS = time.time()

from prefect import flow  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402

from benchmarks.synthetic import BENCH_SCRIPT, BENCH_SCRIPTS_DIR, bench_plan, synthetic  # noqa: E402
from flows.common import host_locks  # noqa: E402
from installers import scripts_store  # noqa: E402
from installers.plan import Plan, Step, build_plan  # noqa: E402
from installers.spec import load_spec  # noqa: E402
from installers.ssh import Fleet  # noqa: E402
from tasks.context import RunContext, activate  # noqa: E402
from tasks.node_step import HostOutcome, run_node_step  # noqa: E402
from tasks.step_task import step_task  # noqa: E402

T_IMPORTED = time.time()


def use_bench_scripts() -> None:
    """Let the runner find bench-sleep.sh (kai's own scripts cannot be shadowed)."""
    scripts_store.add_scripts_dir(BENCH_SCRIPTS_DIR)


@step_task
def bench_step(step: Step) -> list[HostOutcome]:
    """A synthetic step: the same body as every node step task in tasks/node_tasks.py."""
    return run_node_step(step)


def say(*words) -> None:
    print("KAI-BENCH", *words, flush=True)


@flow(name="kai-bench", log_prints=False)
def kai_bench(config_path: str) -> dict:
    cfg = json.loads(Path(config_path).read_text())
    ctx = FlowRunContext.get()
    say("flow-started", ctx.flow_run.id, time.time())
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spec = load_spec(cfg["spec"])
    if cfg["plan"]["kind"] == "mode":
        plan: Plan = build_plan(spec, cfg["plan"]["mode"], nodes=cfg["plan"].get("nodes"))
        plan = synthetic(plan, cfg["duration"])
    else:
        names = {n.name: n.address for n in spec.nodes}
        plan = bench_plan(list(names.items()), cfg["plan"]["steps"], cfg["duration"])
    timings["plan_s"] = time.perf_counter() - t0
    touched = sorted(plan.nodes_touched())
    by_name = {n.name: n for n in spec.nodes}
    from tasks.targets import ssh_targets

    targets = ssh_targets(spec, [by_name[n] for n in touched])
    addresses = [by_name[n].address for n in touched]
    t1 = time.perf_counter()
    outcomes: dict[str, dict] = {}
    with host_locks(addresses, 60):
        timings["locks_s"] = time.perf_counter() - t1
        fleet = Fleet(targets)
        state_dir = Path(tempfile.mkdtemp(prefix="kai-bench-state-"))
        run = RunContext(spec=spec, plan=plan, fleet=fleet, state_dir=state_dir)
        try:
            with activate(run):
                t2 = time.perf_counter()
                for step in plan.steps():
                    if not step.jobs:  # controller-side steps (verify) have no hosts
                        continue
                    result = bench_step(step)
                    outcomes[step.name] = {"hosts": len(step.jobs),
                                           "ok": sum(1 for o in result if o.ok)}
                timings["steps_s"] = time.perf_counter() - t2
        finally:
            fleet.close()
            shutil.rmtree(state_dir, ignore_errors=True)
    return {"timings": timings, "outcomes": outcomes, "touched": touched,
            "flow_run_id": str(ctx.flow_run.id)}


def completed_at(flow_run_id: str) -> float | None:
    """When the server recorded the run's final state (epoch seconds)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    return state.timestamp.timestamp() if state is not None and state.is_final() else None


def main(argv: list[str]) -> int:
    config_path, result_path = argv
    cfg = json.loads(Path(config_path).read_text())
    use_bench_scripts()
    if cfg.get("gc_freeze"):
        gc.freeze()  # the imports' objects are never garbage: keep them out of every collection
    result: dict = {"import_s": T_IMPORTED - T_PROCESS}
    t = time.time()
    try:
        out = kai_bench(config_path)
        result.update(out)
        result["error"] = None
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the run's error
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["flow_wall_s"] = time.time() - t
    say("flow-returned", time.time(), "ok" if result["error"] is None else "failed")
    if result.get("flow_run_id"):
        done = completed_at(result["flow_run_id"])
        result["completed_wall_s"] = done - t if done is not None else None
    result["flow_returned_epoch"] = time.time()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ru = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = ru.ru_utime + ru.ru_stime
    Path(result_path).write_text(json.dumps(result, indent=2))
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
