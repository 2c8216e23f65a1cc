"""The wrapper: validate and start, logs, cancel and modes — on top of Prefect's client, no state of its own.

A run's status (state, progress, steps, cluster facts) is read by run_status.py and re-exported
here, so that the REST API and the CLI, thin layers over this module, report the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from deployments.run_status import (  # noqa: F401 - status & co.: the reads, re-exported
    FINAL_STATES, UnknownRun, active_run_ids, iso, planned_steps, prefect_client, read_run, run_uuid,
    status)
from installers import modes as mode_table
from installers import versions as V
from installers.spec import SpecError, validate_for_mode
from installers.spec_problems import collect_problems

PAGE = 200  # the Prefect server's largest page (PREFECT_API_DEFAULT_LIMIT)
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class RunFinished(Exception):
    """The run already reached a final state (REST: 409)."""


class NotServed(RuntimeError):
    """No deployment serves this mode (is `kai serve` or a worker running?)."""


def mode_names() -> list[str]:
    """The modes `kai serve` deploys (the mode table, as flows.MODES — read here without
    importing the flows, which would cost the API every flow's imports)."""
    return list(mode_table.names())


canonical_mode = mode_table.canonical_mode  # 'all-in-one' → 'all_in_one'; unknown names raise SpecError
flow_parameters = mode_table.flow_parameters


# --- validation & start ------------------------------------------------------------------------

def validate(mode: str, spec: Any, nodes: list[str] | None = None,
             rebuild_mode: str = "auto", to: str | None = None,
             max_unavailable: int | None = None,
             force: bool = False, renew: bool = False, snapshot: str | None = None,
             confirm: bool = False) -> tuple[str, dict]:
    """(canonical mode, spec as JSON) or SpecError with every problem of the spec for this mode
    (etcd_restore: the snapshot's name, and the confirmation it needs to start)."""
    mode = canonical_mode(mode)
    if not isinstance(spec, dict):  # never a path or YAML text here: callers read files themselves
        raise SpecError([f"spec: must be a mapping (an object), not {type(spec).__name__}"])
    try:
        parsed, problems = collect_problems(spec)
    except SpecError as exc:
        raise SpecError([p if p.startswith("spec") else f"spec: {p}" for p in exc.problems]) from None
    if parsed is not None:  # mode rules too (rebuild: its install mode's), one answer for all
        for part in mode_table.plan_sequence(mode, parsed, rebuild_mode):
            options = {mode_table.TARGET_PARAM: to, mode_table.MAX_UNAVAILABLE_PARAM: max_unavailable,
                       mode_table.FORCE_PARAM: force, mode_table.RENEW_PARAM: renew,
                       mode_table.SNAPSHOT_PARAM: snapshot}
            problems = problems + [p for p in validate_for_mode(parsed, part, nodes, options)
                                   if p not in problems]
    problems = problems + mode_table.confirmation_problems(mode, confirm)
    if nodes is not None and not mode_table.get(mode).takes_nodes:
        problems = [p for p in problems if not p.startswith("nodes: a list of nodes")]
        problems.append(f"nodes: a list of nodes only applies to add_nodes, not {mode}")
    if problems or parsed is None:
        raise SpecError(problems or ["spec: invalid"])
    return mode, parsed.model_dump(mode="json")


def start(mode: str, spec: Any, *, nodes: list[str] | None = None, lock_wait_s: float | None = None,
          rebuild_mode: str = "auto", tags: list[str] | None = None, to: str | None = None,
          max_unavailable: int | None = None, force: bool = False, renew: bool = False,
          snapshot: str | None = None, confirm: bool = False) -> str:
    """Validate (every problem at once), then create a flow run of the mode's deployment → run id.
    `to` and `max_unavailable`: the upgrade's target (installers/modes.py takes_target);
    `force`: remove_nodes' dead nodes (takes_force); `renew`: certs renews (takes_renew);
    `snapshot` and `confirm`: etcd_restore's snapshot name and the caller's explicit yes
    (takes_snapshot)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    mode, spec_json = validate(mode, spec, nodes, rebuild_mode, to, max_unavailable, force, renew,
                               snapshot, confirm)
    params = flow_parameters(mode, spec_json, nodes, lock_wait_s, rebuild_mode, to, max_unavailable,
                             force, renew, snapshot, confirm)
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


# --- hosts check -------------------------------------------------------------------------------

def check_hosts(spec: Any, mode: str | None = None,
                secrets: dict[str, str] | None = None) -> tuple[str, list[dict]]:
    """Validate (SpecError with every problem), then check every host of the spec over SSH
    without changing anything (deployments/hosts_check.py) → (mode judged for, one dict per host).
    No mode: the one an install of the spec would run (modes.default_mode)."""
    from deployments.hosts_check import check_hosts as check
    from installers.spec import load_spec

    if mode is None:
        _, spec_json = validate("preflight", spec)
        mode = mode_table.default_mode(load_spec(spec_json))
    mode, spec_json = validate(mode, spec)
    return mode, [c.as_dict() for c in check(load_spec(spec_json), mode, secrets)]


# --- logs and cancel ---------------------------------------------------------------------------

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
        "timestamp": iso(log.timestamp),
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

    rid = run_uuid(run_id)
    min_level = _level_number(level)
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[rid]),
                           level=LogFilterLevel(ge_=min_level) if min_level is not None else None)
    with get_client(sync_client=True) as client:
        read_run(client, rid)
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
        run = read_run(client, run_uuid(run_id))
    return run.state_type.value if run.state_type else "UNKNOWN"


def cancel(run_id: str | UUID) -> str:
    """Ask the runner to cancel the run (SIGTERM to the flow process; the hooks clean the hosts).
    A run that has not started yet is cancelled outright. Returns the new state name."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

    rid = run_uuid(run_id)
    with get_client(sync_client=True) as client:
        run = read_run(client, rid)
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
        "modes": [{"name": m.name, "description": m.description, "aliases": sorted(m.aliases)}
                  for m in mode_table.MODES],
        "kubernetes_versions": [
            {"minor": k.minor, "default_patch": k.default_patch, "pause_image": k.pause_image,
             "default": k.minor == V.DEFAULT_KUBERNETES_MINOR}
            for k in V.KUBERNETES_MINORS.values()],
        "cnis": [{"name": c.name, "version": c.version, "default": c.name == V.DEFAULT_CNI,
                  "needs_mirror": c.manifest_url is None and c.name not in V.CNI_CHARTS}
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
