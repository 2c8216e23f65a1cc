"""What a plan is made of — Plan → Phase → Step → HostJob — and what every planner module builds
them with: a step's policy (the kind's default, the spec's `steps:` override), one host's job for
a step kind (`host_job`), a step (`plan_step`), and a job's done-marker hash. Pure, no I/O (except
reading the static scripts for hashing when asked).

The planners: installers/plan.py (build_plan, the install modes' jobs and phases),
installers/plan_upgrade.py (upgrade), installers/remove_plan.py (remove_nodes).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from installers import scripts_store, step_kinds
from installers.step_kinds import StepPolicy  # defined with the kinds' default policies

if TYPE_CHECKING:
    from installers.spec import ClusterSpec, Node


@dataclass(frozen=True)
class HostJob:
    node: str
    address: str
    script: str
    env: Mapping[str, str]
    files: Mapping[str, str]
    secret_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One step of a plan: a kind (a row of installers/step_kinds.py — which task runs it, which
    node script it runs) applied to its hosts, one job each (none: controller-side)."""

    name: str
    kind: str
    title: str
    jobs: tuple[HostJob, ...]
    policy: StepPolicy
    parallel: bool = True

    def time_bound_s(self) -> float:
        """The longest this step can take before it fails (hosts one at a time add up)."""
        return self.policy.time_bound_s(1 if self.parallel else len(self.jobs))


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Plan:
    mode: str
    cluster: str
    phases: tuple[Phase, ...]
    warnings: tuple[str, ...] = field(default=())

    def steps(self) -> list[Step]:
        return [s for ph in self.phases for s in ph.steps]

    def step(self, name: str) -> Step:
        if (found := self.get(name)) is None:
            raise KeyError(name)
        return found

    def get(self, name: str) -> Step | None:
        """The step, or None when this spec's plan has none of that name (a flow passes it to its
        task all the same: a task given None does nothing — tasks/step_task.py)."""
        for s in self.steps():
            if s.name == name:
                return s
        return None

    def nodes_touched(self) -> set[str]:
        return {j.node for s in self.steps() for j in s.jobs}


DEFAULT_POLICIES: dict[str, StepPolicy] = {k.name: k.policy for k in step_kinds.STEP_KINDS}


def policy_for(spec: ClusterSpec, kind: str) -> StepPolicy:
    base = DEFAULT_POLICIES[kind]
    override = spec.steps.get(kind)  # type: ignore[call-overload]
    if override is None:
        return base
    changes = override.model_dump(exclude_none=True)
    if "retry_delay_s" in changes and "max_retry_delay_s" not in changes:
        # an explicit first wait above the default cap is what the user asked for: the cap follows
        changes["max_retry_delay_s"] = max(base.max_retry_delay_s, changes["retry_delay_s"])
    return dataclasses.replace(base, **changes)


# --- hashing: a job's done-marker -----------------------------------------------------------------------------------

def read_script(name: str) -> str | None:
    """The node script as the runner will send it (installers.scripts_store), None if missing."""
    try:
        return scripts_store.script_text(name)
    except FileNotFoundError:
        return None


def job_hash(job: HostJob, script_text: str | None = None, lib_text: str | None = None) -> str:
    """sha256 of script + lib + non-secret env + files: the done-marker of a step on a host.
    Secrets are not part of it (they change every run and must not leave a trace)."""
    if script_text is None:
        script_text = read_script(job.script) or ""
    if lib_text is None:
        lib_text = read_script("lib.sh") or ""
    h = hashlib.sha256()

    def part(label: str, data: str) -> None:
        raw = data.encode("utf-8")
        h.update(f"{label}\0{len(raw)}\0".encode())
        h.update(raw)

    part("script", script_text)
    part("lib", lib_text)
    for key in sorted(job.env):
        part(f"env:{key}", job.env[key])
    for name in sorted(job.files):
        part(f"file:{name}", job.files[name])
    return h.hexdigest()


# --- what the planners build with ----------------------------------------------------------------

def host_job(kind: str, node: Node, env: dict[str, str] | None = None,
             files: dict[str, str] | None = None, secret_env: tuple[str, ...] = ()) -> HostJob:
    """One host's job for a step of `kind`: its script is the kind's (installers/step_kinds.py)."""
    return HostJob(node=node.name, address=node.address, script=step_kinds.script_of(kind),
                   env=dict(env or {}), files=dict(files or {}), secret_env=secret_env)


def plan_step(spec: ClusterSpec, name: str, kind: str, title: str, jobs: list[HostJob],
              parallel: bool = True) -> Step:
    return Step(name=name, kind=kind, title=title, jobs=tuple(jobs),
                policy=policy_for(spec, kind), parallel=parallel)
