"""The wrapper: start, status, logs, cancel and modes — on top of Prefect's client, no state of its own.

Everything it reports is read back from the Prefect server: the flow run and its states, the task
runs (one per plan step), the per-step table artifacts (`step-<name>`, one row per host), the
`cluster-info` markdown artifact and the run's logs. The REST API and the CLI are thin layers over
these functions, so both report the same thing.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from installers import versions as V
from installers.spec import SpecError, validate_for_mode
from installers.spec_problems import collect_problems

# The old service's names (and dashed spellings) for kai's modes.
MODE_ALIASES = {
    "all-in-one": "all_in_one",
    "allinone": "all_in_one",
    "ha_secure": "ha",
    "ha-secure": "ha",
    "add-nodes": "add_nodes",
}
DESCRIPTIONS = {
    "all_in_one": "a single node that is control plane and worker at once",
    "ha": "three or more control planes behind kube-vip or a load balancer, plus workers",
    "add_nodes": "join the named new nodes of the spec to its running cluster",
    "reset": "kubeadm reset on every node and remove what kai installed",
    "rebuild": "reset every node, then install again (all_in_one or ha)",
    "preflight": "check every host against the spec (read-only)",
    "health": "verify a running cluster (read-only)",
}
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
# not final: started, or due to start (a run created through the API is SCHEDULED until a runner
# picks it up)
ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED")
PAGE = 200  # the Prefect server's largest page (PREFECT_API_DEFAULT_LIMIT)
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class UnknownRun(LookupError):
    """No flow run with this id (REST: 404)."""


class RunFinished(Exception):
    """The run already reached a final state (REST: 409)."""


class NotServed(RuntimeError):
    """No deployment serves this mode (is `kai serve` or a worker running?)."""


def mode_names() -> list[str]:
    """The modes `kai serve` deploys (= flows.MODES; a test keeps the two equal — importing the
    flows here would cost the API every flow's imports)."""
    return list(DESCRIPTIONS)


def canonical_mode(mode: str) -> str:
    """'all-in-one' → 'all_in_one', 'ha_secure' → 'ha'; unknown modes raise SpecError."""
    name = MODE_ALIASES.get(mode, mode)
    if name not in DESCRIPTIONS:
        raise SpecError([f"mode: unknown mode {mode!r} (known: {', '.join(DESCRIPTIONS)}; "
                         f"aliases: {', '.join(MODE_ALIASES)})"])
    return name


# --- validation & start ------------------------------------------------------------------------

def validate(mode: str, spec: Any, nodes: list[str] | None = None,
             rebuild_mode: str = "auto") -> tuple[str, dict]:
    """(canonical mode, spec as JSON) or SpecError with every problem of the spec for this mode."""
    mode = canonical_mode(mode)
    if not isinstance(spec, dict):  # never a path or YAML text here: callers read files themselves
        raise SpecError([f"spec: must be a mapping (an object), not {type(spec).__name__}"])
    try:
        parsed, problems = collect_problems(spec)
    except SpecError as exc:
        raise SpecError([p if p.startswith("spec") else f"spec: {p}" for p in exc.problems]) from None
    if parsed is not None:  # mode rules too, so that one answer lists every problem
        check_mode = mode
        if mode == "rebuild":
            check_mode = rebuild_mode if rebuild_mode != "auto" else (
                "all_in_one" if len(parsed.nodes) == 1 else "ha")
        if check_mode != "health":  # health reads a cluster of any shape
            problems = problems + [p for p in validate_for_mode(parsed, check_mode, nodes)
                                   if p not in problems]
    if nodes is not None and mode != "add_nodes":
        problems = [p for p in problems if not p.startswith("nodes: a list of nodes")]
        problems.append(f"nodes: a list of nodes only applies to add_nodes, not {mode}")
    if problems or parsed is None:
        raise SpecError(problems or ["spec: invalid"])
    return mode, parsed.model_dump(mode="json")


def flow_parameters(mode: str, spec_json: dict, nodes: list[str] | None, lock_wait_s: float | None,
                    rebuild_mode: str = "auto") -> dict:
    params: dict[str, Any] = {"spec": spec_json}
    if mode == "add_nodes":
        params["nodes"] = list(nodes or [])
    if mode == "rebuild":
        params["mode"] = rebuild_mode
    if lock_wait_s is not None and mode != "health":
        params["lock_wait_s"] = lock_wait_s
    return params


def start(mode: str, spec: Any, *, nodes: list[str] | None = None, lock_wait_s: float | None = None,
          rebuild_mode: str = "auto", tags: list[str] | None = None) -> str:
    """Validate (every problem at once), then create a flow run of the mode's deployment → run id."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    mode, spec_json = validate(mode, spec, nodes, rebuild_mode)
    params = flow_parameters(mode, spec_json, nodes, lock_wait_s, rebuild_mode)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(f"{mode}/{mode}")
        except ObjectNotFound:
            raise NotServed(f"no deployment '{mode}/{mode}' on the Prefect server "
                            f"(start `kai serve`, or `prefect deploy --all` and a worker)") from None
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters=params,
            tags=["kai", f"mode:{mode}", f"cluster:{spec_json['name']}", *(tags or [])])
    return str(run.id)


# --- reading a run -----------------------------------------------------------------------------

def _uuid(run_id: str | UUID) -> UUID:
    try:
        return run_id if isinstance(run_id, UUID) else UUID(str(run_id))
    except ValueError:
        raise UnknownRun(f"no installation {run_id!r} (not a run id)") from None


def _read_run(client, run_id: UUID):
    from prefect.exceptions import ObjectNotFound
    try:
        return client.read_flow_run(run_id)
    except ObjectNotFound:
        raise UnknownRun(f"no installation {run_id}") from None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value else None


def planned_steps(mode: str, params: dict) -> list[str]:
    """Step names the run will go through, from the same plan the flow builds."""
    return list(_planned_steps(mode, json.dumps(params, sort_keys=True, default=str)))


@functools.lru_cache(maxsize=64)
def _planned_steps(mode: str, params_json: str) -> tuple[str, ...]:
    """Building a 50-node plan costs ~50 ms of CPU; a run's parameters do not change while it is
    polled, so each is planned once (keyed by the parameters themselves, not by the run id)."""
    from installers.plan import build_plan
    from installers.spec import load_spec

    params = json.loads(params_json)
    try:
        spec = load_spec(params.get("spec") or {})
        if mode == "rebuild":
            install = params.get("mode", "auto")
            if install == "auto":
                install = "all_in_one" if len(spec.nodes) == 1 else "ha"
            return _names(build_plan(spec, "reset")) + _names(build_plan(spec, install))
        if mode == "health":
            return ("kubeconfig", "verify")
        return _names(build_plan(spec, mode, nodes=params.get("nodes")))
    except Exception:  # noqa: BLE001 - an unreadable spec only costs the step total
        return ()


def _names(plan) -> tuple[str, ...]:
    return tuple(step.name for step in plan.steps())


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


def parse_cluster_info(markdown: str) -> dict:
    """The structured parts of the `cluster-info` artifact (tasks/verify.py: render_report)."""
    info: dict[str, Any] = {"healthy": "— healthy" in markdown.splitlines()[0] if markdown else False}
    if (m := re.search(r"kubeconfig `([^`]+)`", markdown)):
        info["kubeconfig_path"] = m.group(1)
    if (m := re.search(r"API server `([^`]*)` version `([^`]*)`", markdown)):
        info["server"], info["version"] = m.group(1), m.group(2)
    nodes, pods = [], {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("node", "---"):
            nodes.append({"name": cells[0], "roles": [r for r in cells[1].split(", ") if r],
                          "ready": cells[2] == "yes", "kubelet_version": cells[3], "address": cells[4]})
        elif len(cells) == 2 and cells[0] not in ("namespace", "---") and cells[1].isdigit():
            pods[cells[0]] = int(cells[1])
    info["nodes"] = nodes
    info["pod_count_by_namespace"] = pods
    if (m := re.search(r"Storage classes: (.*)", markdown)):
        info["storage_classes"] = [] if m.group(1) == "none" else m.group(1).split(", ")
    return info


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

    rid = _uuid(run_id)
    if client is None:
        with prefect_client() as client:
            return status(rid, client)
    run = _read_run(client, rid)
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[rid])),
                                  sort=TaskRunSort.EXPECTED_START_TIME_ASC)
    artifacts = _latest_artifacts(client, rid)
    deployment_mode = next((t.split(":", 1)[1] for t in run.tags if t.startswith("mode:")), None)
    mode = deployment_mode or run.name
    state = run.state_type.value if run.state_type else "UNKNOWN"
    plan_steps = planned_steps(mode, run.parameters or {})

    steps = []
    for t in tasks:
        rows = _table_rows(artifacts[_step_key(t.name)]) if _step_key(t.name) in artifacts else []
        steps.append({
            "name": t.name,
            "state": t.state_type.value if t.state_type else "UNKNOWN",
            "attempts": t.run_count,
            "start_time": _iso(t.start_time),
            "end_time": _iso(t.end_time),
            "duration_s": round(t.total_run_time.total_seconds(), 2) if t.total_run_time else None,
            "message": (t.state.message if t.state and t.state_type and t.state_type.value != "COMPLETED"
                        else None),
            "hosts": [{"host": r.get("host"), "address": r.get("address"), "status": r.get("status"),
                       "seconds": r.get("seconds"), "attempt": r.get("attempt"),
                       "error": r.get("error") or None} for r in rows],
        })
    done = sum(1 for s in steps if s["state"] == "COMPLETED")
    total = max(len(plan_steps), len(steps))
    running = [s for s in steps if s["state"] in ("RUNNING", "PENDING", "AWAITINGRETRY", "RETRYING")]
    current = (running[-1]["name"] if running else steps[-1]["name"] if steps else None)
    percent = 100.0 if state == "COMPLETED" else (round(100.0 * done / total, 1) if total else 0.0)

    failure = None
    if state in ("FAILED", "CRASHED", "CANCELLED"):
        failed = [s for s in steps if s["state"] in ("FAILED", "CRASHED")]
        step = failed[-1] if failed else None
        failure = {
            "message": run.state.message if run.state else None,
            "step": step["name"] if step else None,
            "hosts": [h["host"] for h in step["hosts"] if h["status"] == "FAILED"] if step else [],
        }
    cluster_info = None
    if "cluster-info" in artifacts:
        cluster_info = parse_cluster_info(artifacts["cluster-info"].data or "")
    duration = run.total_run_time.total_seconds() if run.total_run_time else None
    if state == "RUNNING" and run.start_time:
        duration = (datetime.now(timezone.utc) - run.start_time).total_seconds()
    return {
        "id": str(run.id),
        "name": run.name,
        "mode": mode,
        "state": state,
        "state_name": run.state_name,
        "final": state in FINAL_STATES,
        "current_step": current,
        "steps_done": done,
        "total_steps": total,
        "planned_steps": plan_steps,
        "percent": percent,
        "duration_s": round(duration, 2) if duration is not None else None,
        "start_time": _iso(run.start_time),
        "end_time": _iso(run.end_time),
        "created": _iso(run.created),
        "steps": steps,
        "failure": failure,
        "cluster_info": cluster_info,
        "preflight_findings": (_table_rows(artifacts["preflight-findings"])
                               if "preflight-findings" in artifacts else []),
    }


def _step_key(task_name: str) -> str:
    return f"step-{task_name}".lower().replace("_", "-")


def _level_number(level: str | int | None) -> int | None:
    if level is None or level == "":
        return None
    if isinstance(level, int):
        return level
    name = str(level).upper()
    if name not in LEVELS:
        raise ValueError(f"level: unknown log level {level!r} (known: {', '.join(LEVELS)})")
    return LEVELS[name]


def _log_entry(log) -> dict:
    return {
        "timestamp": _iso(log.timestamp),
        "level": _level_name(log.level),
        "message": log.message,
        "source": log.name,
        "task_run_id": str(log.task_run_id) if log.task_run_id else None,
    }


def _level_name(number: int) -> str:
    for name, value in sorted(LEVELS.items(), key=lambda kv: -kv[1]):
        if number >= value:
            return name
    return "DEBUG"


def logs(run_id: str | UUID, level: str | int | None = None, limit: int = 200,
         offset: int | None = None) -> list[dict]:
    """The run's log lines at or above `level`: the last `limit` of them, oldest first
    (or, with `offset`, `limit` lines from that position on — for tailing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel
    from prefect.client.schemas.sorting import LogSort

    rid = _uuid(run_id)
    min_level = _level_number(level)
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[rid]),
                           level=LogFilterLevel(ge_=min_level) if min_level is not None else None)
    with get_client(sync_client=True) as client:
        _read_run(client, rid)
        entries = []
        sort = LogSort.TIMESTAMP_DESC if offset is None else LogSort.TIMESTAMP_ASC
        position = offset or 0
        while len(entries) < limit:  # the server answers at most PAGE lines per call
            want = min(PAGE, limit - len(entries))
            page = client.read_logs(log_filter, limit=want, offset=position, sort=sort)
            entries += page
            position += len(page)
            if len(page) < want:
                break
        if offset is None:
            entries.reverse()
    return [_log_entry(e) for e in entries]


def follow_logs(run_id: str | UUID, level: str | int | None = None,
                poll_s: float = 1.0) -> Iterator[dict]:
    """Every log line of the run as it arrives; ends after the run is final and drained."""
    offset = 0
    final_seen = 0
    while True:
        batch = logs(run_id, level, limit=200, offset=offset)
        offset += len(batch)
        yield from batch
        if len(batch) == 200:
            continue
        if status_state(run_id) in FINAL_STATES:
            final_seen += 1
            if final_seen > 2:  # logs arrive up to ~2 s after the state (2 s batches)
                return
        time.sleep(poll_s)


def status_state(run_id: str | UUID) -> str:
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        run = _read_run(client, _uuid(run_id))
    return run.state_type.value if run.state_type else "UNKNOWN"


def cancel(run_id: str | UUID) -> str:
    """Ask the runner to cancel the run (SIGTERM to the flow process; the hooks clean the hosts).
    A run that has not started yet is cancelled outright. Returns the new state name."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

    rid = _uuid(run_id)
    with get_client(sync_client=True) as client:
        run = _read_run(client, rid)
        state = run.state_type.value if run.state_type else "UNKNOWN"
        if state in FINAL_STATES:
            raise RunFinished(f"installation {rid} already finished ({run.state_name})")
        if state == "CANCELLING":
            return "Cancelling"
        new = Cancelled(message="cancelled before it started") if state == "SCHEDULED" else Cancelling(
            message="cancel requested through kai")
        client.set_flow_run_state(rid, new, force=True)
    return new.name


# --- modes -------------------------------------------------------------------------------------

def modes() -> dict:
    """Modes kai serves, with the supported versions, CNIs and defaults (from versions.py)."""
    return {
        "modes": [{"name": m, "description": DESCRIPTIONS.get(m, ""),
                   "aliases": sorted(a for a, t in MODE_ALIASES.items() if t == m)}
                  for m in mode_names()],
        "kubernetes_versions": [
            {"minor": k.minor, "default_patch": k.default_patch, "pause_image": k.pause_image,
             "default": k.minor == V.DEFAULT_KUBERNETES_MINOR}
            for k in V.KUBERNETES_MINORS.values()],
        "cnis": [{"name": c.name, "version": c.version, "default": c.name == V.DEFAULT_CNI,
                  "needs_mirror": c.manifest_url is None}
                 for c in V.CNIS.values()],
        "defaults": {
            "kubernetes_version": V.DEFAULT_KUBERNETES_MINOR,
            "cni": V.DEFAULT_CNI,
            "containerd": V.CONTAINERD_DEFAULT,
            "runc": V.RUNC_DEFAULT,
            "cni_plugins": V.CNI_PLUGINS_DEFAULT,
            "local_path_provisioner": V.LOCAL_PATH_VERSION,
        },
    }
