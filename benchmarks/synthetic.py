"""The synthetic work every method runs: S steps, each `sleep d` on every host.

For kai it is a real `installers.plan.Plan` (Steps of HostJobs) whose jobs run the benchmark-only
script `benchmarks/scripts/bench-sleep.sh` through the normal runner path (kai-exec.sh frame,
lib.sh, env). `synthetic(plan, d)` turns any real plan (e.g. `build_plan(spec, "add_nodes")`) into
the same shape with the same host set, so a real plan's orchestration can be timed without
installing anything on the machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from installers.plan import HostJob, Phase, Plan, Step, StepPolicy

BENCH_SCRIPT = "bench-sleep.sh"
BENCH_SCRIPTS_DIR = Path(__file__).parent / "scripts"
MARKER = "bench-step"  # every host-step logs exactly one line containing this


def policy(duration: float) -> StepPolicy:
    return StepPolicy(retries=0, retry_delay_s=0, timeout_s=max(60.0, duration * 10))


def bench_job(node: str, address: str, duration: float) -> HostJob:
    return HostJob(node=node, address=address, script=BENCH_SCRIPT,
                   env={"KAI_BENCH_SLEEP": f"{duration:g}"}, files={})


def bench_plan(hosts: list[tuple[str, str]], steps: int, duration: float) -> Plan:
    """`steps` steps named step-01…, each a job per (node, address) in `hosts`."""
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    if not hosts:
        raise ValueError("hosts: at least one host is needed")
    step_list = tuple(
        Step(name=f"step-{i:02d}", kind="bench", title=f"synthetic step {i}: sleep {duration:g}",
             jobs=tuple(bench_job(n, a, duration) for n, a in hosts), policy=policy(duration))
        for i in range(1, steps + 1))
    return Plan(mode="bench", cluster="bench", phases=(Phase("bench", "synthetic", step_list),))


def synthetic(plan: Plan, duration: float) -> Plan:
    """Same phases, steps and host set as `plan`; every job runs `sleep duration` instead."""
    phases = []
    for phase in plan.phases:
        steps = tuple(dataclasses.replace(
            step, jobs=tuple(bench_job(j.node, j.address, duration) for j in step.jobs),
            policy=policy(duration)) for step in phase.steps)
        phases.append(dataclasses.replace(phase, steps=steps))
    return dataclasses.replace(plan, phases=tuple(phases))


def light_spec(name: str, nodes: list[tuple[str, str, str]], key_file: str,
               known_hosts: str) -> dict:
    """A cluster spec (as a dict for `load_spec`) over light hosts; nodes are (name, address, role)."""
    return {
        "name": name,
        "kubernetes": {"version": "1.36"},
        "control_plane_endpoint": {"type": "node"},
        "ssh": {"user": "root", "port": 22, "private_key_file": key_file,
                "known_hosts_file": known_hosts, "accept_new_host_keys": False, "sudo": "none"},
        "nodes": [{"name": n, "address": a, "roles": [r]} for n, a, r in nodes],
    }


def node_names(count: int) -> list[str]:
    return [f"n{i:03d}" for i in range(1, count + 1)]
