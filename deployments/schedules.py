"""Cron schedules of a cluster's runs: `kai schedule add/list/remove` and `/api/v1/schedules`.

A schedule is a Prefect deployment schedule on a served deployment `<mode>/<mode>` (any mode of
the table, installers/modes.py) with its own parameters: the cluster's spec, validated first (every
problem at once; nothing is created on error). Several clusters can have schedules on one
deployment; each shows in the Prefect UI under its deployment, by its slug `kai-<cluster>-<id>`.

Why the slug: `kai serve`'s runner re-registers every deployment when it starts (Prefect's
`serve()` PATCHes the deployment with `schedules: []`). The server then keeps the existing
schedules only if every one of them has a slug; one slug-less schedule and it deletes them all
(prefect/server/api/deployments.py, update_deployment). Schedules made here always have one.

Secrets never go into a schedule's parameters: the spec has no field for one (an inline password
is an unknown field, refused), only the names of Prefect Secret blocks — and a schedule naming a
block the server does not have is refused now rather than failing at 3 a.m.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from deployments import control
from installers import modes as mode_table
from installers.spec import SpecError

SLUG_PREFIX = "kai-"
FIRST_RUNS = 3  # runs materialised at once, so `list` shows the next run without waiting for the
                # server's scheduler loop (60 s)


class UnknownSchedule(LookupError):
    """No schedule with that id on any served deployment (REST: 404)."""


def _secret_block_problems(spec_json: dict, client) -> list[str]:
    from prefect.exceptions import ObjectNotFound

    problems = []
    for path, name in _secret_fields(spec_json):
        try:
            client.read_block_document_by_name(name, block_type_slug="secret")
        except ObjectNotFound:
            problems.append(f"spec.{path}: Secret block {name!r} does not exist on the Prefect server")
    return problems


def _secret_fields(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, block name) of every `*_secret` field of the spec, nodes and bastions included."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            if key.endswith("_secret") and isinstance(item, str) and item:
                found.append((here, item))
            else:
                found += _secret_fields(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _secret_fields(item, f"{path}[{i}]")
    return found


def _cron(cron: Any, timezone: Any) -> tuple[Any, list[str]]:
    from prefect.client.schemas.schedules import CronSchedule

    problems = []
    if not isinstance(cron, str) or not cron.strip():
        problems.append("cron: required, a cron expression such as '*/30 * * * *'")
    if not isinstance(timezone, str) or not timezone:
        problems.append("timezone: required, an IANA name such as 'UTC'")
    if problems:
        return None, problems
    try:
        return CronSchedule(cron=cron, timezone=timezone), []
    except ValueError as exc:
        errors = getattr(exc, "errors", lambda: [])()
        return None, [f"{e['loc'][0] if e.get('loc') else 'cron'}: {e['msg']}" for e in errors] or [
            f"cron: {exc}"]


def _deployment(client, mode: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(f"{mode}/{mode}")
    except ObjectNotFound:
        raise control.NotServed(f"no deployment '{mode}/{mode}' on the Prefect server "
                                "(start `kai serve`, or `prefect deploy --all` and a worker)") from None


def add(mode: str, spec: Any, cron: str, timezone: str = "UTC") -> dict:
    """Validate everything (SpecError with every problem), then attach the schedule → its entry."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    problems: list[str] = []
    try:
        mode, spec_json = control.validate(mode, spec)
    except SpecError as exc:
        problems += exc.problems
        spec_json = None
    schedule, cron_problems = _cron(cron, timezone)
    problems += cron_problems
    if problems and not (spec_json and _secret_fields(spec_json)):
        raise SpecError(problems)  # nothing to ask the server
    with get_client(sync_client=True) as client:
        if spec_json is not None:
            problems += _secret_block_problems(spec_json, client)
        if problems:
            raise SpecError(problems)
        deployment = _deployment(client, mode)
        slug = f"{SLUG_PREFIX}{spec_json['name']}-{uuid.uuid4().hex[:8]}"
        params = mode_table.flow_parameters(mode, spec_json)
        [created] = client.create_deployment_schedules(deployment.id, [DeploymentScheduleCreate(
            schedule=schedule, active=True, parameters=params, slug=slug)])
        # the server's scheduler looks every 60 s; materialise the first runs now
        client._client.post(f"/deployments/{deployment.id}/schedule",
                            json={"min_runs": FIRST_RUNS, "max_runs": FIRST_RUNS})
        return _entry(client, mode, deployment.id, created)


def list_schedules() -> list[dict]:
    """Every schedule of every served mode's deployment (prefect.yaml's paused ones too)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [_entry(client, mode, deployment_id, schedule)
                for mode, deployment_id, schedule in _every_schedule(client)]


def remove(schedule_id: str) -> dict:
    """Delete the schedule (and the runs it had scheduled) → the entry it was."""
    from prefect.client.orchestration import get_client

    try:
        wanted = uuid.UUID(str(schedule_id))
    except ValueError:
        raise ValueError(f"id: {schedule_id!r} is not a schedule id (a UUID; see kai schedule list)") from None
    with get_client(sync_client=True) as client:
        for mode, deployment_id, schedule in _every_schedule(client):
            if schedule.id == wanted:
                entry = _entry(client, mode, deployment_id, schedule)
                client.delete_deployment_schedule(deployment_id, schedule.id)
                entry["next_run"] = None
                return entry
    raise UnknownSchedule(f"no schedule {wanted} on any served deployment (see kai schedule list)")


def _every_schedule(client):
    """(mode, deployment id, schedule) of every served mode's deployment, mode by mode."""
    from prefect.exceptions import ObjectNotFound

    for mode in mode_table.names():
        try:
            deployment = client.read_deployment_by_name(f"{mode}/{mode}")
        except ObjectNotFound:
            continue
        for schedule in client.read_deployment_schedules(deployment.id):
            yield mode, deployment.id, schedule


def _entry(client, mode: str, deployment_id, schedule) -> dict:
    params = schedule.parameters or {}
    spec = params.get("spec") if isinstance(params.get("spec"), dict) else {}
    return {
        "id": str(schedule.id),
        "cluster": spec.get("name"),
        "mode": mode,
        "deployment": f"{mode}/{mode}",
        "cron": getattr(schedule.schedule, "cron", None) or str(schedule.schedule),
        "timezone": getattr(schedule.schedule, "timezone", None),
        "active": schedule.active,
        "slug": schedule.slug,
        "next_run": _next_run(client, deployment_id, schedule) if schedule.active else None,
    }


def _next_run(client, deployment_id, schedule) -> str | None:
    """The earliest scheduled run this schedule created, else the cron's next time."""
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200)
    for run in runs:
        if run.created_by is not None and run.created_by.id == schedule.id and run.expected_start_time:
            return run.expected_start_time.astimezone(dt.timezone.utc).isoformat()
    cron = getattr(schedule.schedule, "cron", None)
    if not cron:
        return None
    from zoneinfo import ZoneInfo

    from cronsim import CronSim

    zone = ZoneInfo(getattr(schedule.schedule, "timezone", None) or "UTC")
    return next(CronSim(cron, dt.datetime.now(zone))).astimezone(dt.timezone.utc).isoformat()
