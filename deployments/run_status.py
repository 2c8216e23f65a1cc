"""What a run is doing, read back from the Prefect server: state, progress, steps, hosts, cluster.

A run's status is built from the flow run and its states, its task runs (one per plan step), the
per-step table artifacts (`step-<name>`, one row per host), the `cluster-facts` table artifact
(tasks/verify.py: the verified cluster as one row of data) and the `preflight-findings` table.
Nothing is kept here between reads but the planned step names of a run's parameters. The
wrapper (control.py) re-exports these reads; the REST API and the CLI go through it.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from installers.cluster_check import FACTS_ARTIFACT_KEY

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
# not final: started, or due to start (a run created through the API is SCHEDULED until a runner
# picks it up)
ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED")
# A run started under one of its mode's old names (ha_secure) carries that name in this tag: the
# status answers old clients with the name they used (installers/modes.reported_name).
REPORTED_MODE_TAG = "reported-mode:"


class UnknownRun(LookupError):
    """No flow run with this id (REST: 404)."""


def run_uuid(run_id: str | UUID) -> UUID:
    try:
        return run_id if isinstance(run_id, UUID) else UUID(str(run_id))
    except ValueError:
        raise UnknownRun(f"no installation {run_id!r} (not a run id)") from None


def read_run(client, run_id: UUID):
    from prefect.exceptions import ObjectNotFound
    try:
        return client.read_flow_run(run_id)
    except ObjectNotFound:
        raise UnknownRun(f"no installation {run_id}") from None


def iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value else None


def planned_steps(mode: str, params: dict) -> list[str]:
    """Step names the run will go through, from the same plan the flow builds."""
    return list(_planned_steps(mode, json.dumps(params, sort_keys=True, default=str)))


@functools.lru_cache(maxsize=64)
def _planned_steps(mode: str, params_json: str) -> tuple[str, ...]:
    """Building a 50-node plan costs ~50 ms of CPU; a run's parameters do not change while it is
    polled, so each is planned once (keyed by the parameters themselves, not by the run id)."""
    from installers.plan import run_plans
    from installers.spec import load_spec

    params = json.loads(params_json)
    try:
        spec = load_spec(params.get("spec") or {})
        return tuple(step.name for plan in run_plans(spec, mode, params) for step in plan.steps())
    except Exception:  # noqa: BLE001 - an unreadable spec only costs the step total
        return ()


def _latest_artifacts(client, run_id: UUID) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    arts = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    latest: dict[str, Any] = {}
    for art in sorted(arts, key=lambda a: a.created or datetime.min.replace(tzinfo=timezone.utc)):
        if art.key:
            latest[art.key] = art
    return latest


def _table_rows(artifact) -> list[dict]:
    data = artifact.data
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return []
    return [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []


def prefect_client():
    """A sync Prefect client (a context manager) to pass to status() and active_run_ids() for
    many reads: the REST API keeps one open while it serves. A new client costs 30-50 ms of CPU
    and a CSRF-token round trip before its first read."""
    from prefect.client.orchestration import get_client
    return get_client(sync_client=True)


def active_run_ids(client, limit: int = 32) -> list[str]:
    """Ids of the newest `limit` flow runs that are not final and due (runs scheduled for later
    are left out): one query."""
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterExpectedStartTime,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType(s) for s in ACTIVE_STATES])),
            expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(timezone.utc))),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
    return [str(run.id) for run in runs]


def status(run_id: str | UUID, client=None) -> dict:
    """Everything known about a run: state, progress, per-step and per-host results, error, info.
    `client`: an open prefect_client() to read through (else one is opened for this read)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    rid = run_uuid(run_id)
    if client is None:
        with prefect_client() as client:
            return status(rid, client)
    run = read_run(client, rid)
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[rid])),
                                  sort=TaskRunSort.EXPECTED_START_TIME_ASC)
    artifacts = _latest_artifacts(client, rid)
    deployment_mode = next((t.split(":", 1)[1] for t in run.tags if t.startswith("mode:")), None)
    mode = deployment_mode or run.name
    reported = next((t.removeprefix(REPORTED_MODE_TAG) for t in run.tags if t.startswith(REPORTED_MODE_TAG)), mode)
    state = run.state_type.value if run.state_type else "UNKNOWN"
    plan_steps = planned_steps(mode, run.parameters or {})

    steps = [_step(t, artifacts) for t in tasks]
    done = sum(1 for s in steps if s["state"] == "COMPLETED")
    total = max(len(plan_steps), len(steps))
    running = [s for s in steps if s["state"] in ("RUNNING", "PENDING", "AWAITINGRETRY", "RETRYING")]
    current = (running[-1]["name"] if running else steps[-1]["name"] if steps else None)
    percent = 100.0 if state == "COMPLETED" else (round(100.0 * done / total, 1) if total else 0.0)

    failure = _failure(run, steps) if state in ("FAILED", "CRASHED", "CANCELLED") else None
    facts = _table_rows(artifacts[FACTS_ARTIFACT_KEY]) if FACTS_ARTIFACT_KEY in artifacts else []
    cluster_info = facts[0] if facts else None
    duration = run.total_run_time.total_seconds() if run.total_run_time else None
    if state == "RUNNING" and run.start_time:
        duration = (datetime.now(timezone.utc) - run.start_time).total_seconds()
    return {
        "id": str(run.id),
        "name": run.name,
        "mode": mode,
        "reported_mode": reported,
        "state": state,
        "state_name": run.state_name,
        "final": state in FINAL_STATES,
        "current_step": current,
        "steps_done": done,
        "total_steps": total,
        "planned_steps": plan_steps,
        "percent": percent,
        "duration_s": round(duration, 2) if duration is not None else None,
        "start_time": iso(run.start_time),
        "end_time": iso(run.end_time),
        "created": iso(run.created),
        "steps": steps,
        "failure": failure,
        "cluster_info": cluster_info,
        "cluster": _cluster_of(run.parameters or {}),
        "preflight_findings": (_table_rows(artifacts["preflight-findings"])
                               if "preflight-findings" in artifacts else []),
    }


def _cluster_of(params: dict) -> dict:
    """What the run's spec says of the cluster (for a run that ends before verify's facts)."""
    spec = params.get("spec") if isinstance(params.get("spec"), dict) else {}
    net = spec.get("networking") if isinstance(spec.get("networking"), dict) else {}
    kube = spec.get("kubernetes") if isinstance(spec.get("kubernetes"), dict) else {}
    return {"name": spec.get("name"), "kubernetes_version": kube.get("version"),
            "cni": net.get("cni"), "pod_cidr": net.get("pod_cidr"),
            "service_cidr": net.get("service_cidr")}


def _step(t, artifacts: dict[str, Any]) -> dict:
    """One step (task run) with its per-host rows (the step's table artifact)."""
    rows = _table_rows(artifacts[_step_key(t.name)]) if _step_key(t.name) in artifacts else []
    return {
        "name": t.name,
        "state": t.state_type.value if t.state_type else "UNKNOWN",
        "attempts": t.run_count,
        "start_time": iso(t.start_time),
        "end_time": iso(t.end_time),
        "duration_s": round(t.total_run_time.total_seconds(), 2) if t.total_run_time else None,
        "message": (t.state.message if t.state and t.state_type and t.state_type.value != "COMPLETED"
                    else None),
        "hosts": [{"host": r.get("host"), "address": r.get("address"), "status": r.get("status"),
                   "seconds": r.get("seconds"), "attempt": r.get("attempt"),
                   "error": r.get("error") or None,
                   "output": r.get("last output") or None} for r in rows],
    }


def _failure(run, steps: list[dict]) -> dict:
    """What failed: the run's message, its last failed step and that step's failed hosts."""
    failed = [s for s in steps if s["state"] in ("FAILED", "CRASHED")]
    step = failed[-1] if failed else None
    return {
        "message": run.state.message if run.state else None,
        "step": step["name"] if step else None,
        "hosts": [h["host"] for h in step["hosts"] if h["status"] == "FAILED"] if step else [],
    }


def _step_key(task_name: str) -> str:
    return f"step-{task_name}".lower().replace("_", "-")
