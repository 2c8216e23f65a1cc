"""kai's REST API on the old service's paths (FastAPI), over the wrapper in deployments/control.py.

Every /api/v1 path needs `Authorization: Bearer <token>` (compared in constant time); a refused
request is logged with method, path and client — never the token. Answers keep the old service's
contract (docs/old-api.md: names, JSON types, codes; shapes in deployments/legacy*.py) and add kai's
richer fields beside. Codes: 400 for an invalid request (an old flat body, a path or query value),
404 unknown run, 400 cancelling a finished run; kai's own `{"spec": …}` body with an invalid spec is
422 with every problem; 500 is the same `{"success": false, "error": …}` envelope.
`/healthz`, `/openapi.json` and `/docs` need no token. What the routes share (the errors and their
answers, the token check, the app's state): deployments/api_support.py.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Literal, NoReturn

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from deployments import alerts, control, legacy, legacy_hosts, old_body_defaults, schedules
from deployments.api_support import (ApiError, Ctl, Served, authorized, error_response, prefect_call,
                                     prefect_errors, served)
from deployments.run_status import REPORTED_MODE_TAG
from installers import modes
from installers.spec import SpecError

log = logging.getLogger("kai.api")
PREFIX = "/api/v1/installation"
# every name the mode table accepts, aliases included: what `GET /modes` advertises is accepted
ModeName = Literal[modes.accepted_names()]  # type: ignore[valid-type]
LevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL",
                    "debug", "info", "warning", "error", "critical"]


class StartRequest(BaseModel):
    """kai's own start body: a cluster spec (see `kai schema`) and the mode's extra parameters."""
    spec: dict[str, Any] = Field(description="the cluster spec (JSON Schema: `kai schema`)")
    nodes: list[str] | None = Field(None, description="add_nodes: names of the nodes to add; "
                                    "remove_nodes: names of the nodes to remove")
    force: bool = Field(False, description="remove_nodes: the nodes are dead — delete them (and a "
                        "control plane's etcd member) without drain or reset, never contacting them")
    renew: bool = Field(False, description="certs: renew the certificates (one control plane at a "
                        "time, static pods restarted); without it the run only reports days left")
    lock_wait_s: float | None = Field(None, ge=0, le=3600,
                                      description="how long to wait for busy hosts before refusing")
    rebuild_mode: Literal[modes.install_choices()] = "auto"  # type: ignore[valid-type]
    to: str | None = Field(None, max_length=32,
                           description="upgrade: the Kubernetes version to move to (\"1.37\", \"1.37.1\")")
    max_unavailable: int | None = Field(None, ge=1, le=10000,
                                        description="upgrade: workers upgraded at once (default 1)")
    snapshot: str | None = Field(None, max_length=300,
                                 description="etcd_restore: the stored snapshot's file name "
                                             "(<cluster>-<time>-rev<N>.db, from an etcd_backup run)")
    confirm: bool = Field(False, description="etcd_restore: true to replace the cluster's etcd data "
                          "with the snapshot's (refused without it)")


# --- routes ------------------------------------------------------------------------------------

health = APIRouter(tags=["health"])
installation = APIRouter(prefix=PREFIX, tags=["installation"], dependencies=[Depends(authorized)])


@health.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@installation.get("/modes")
def get_modes(ctl: Ctl) -> dict:
    return legacy.modes_envelope(ctl.modes())


@installation.post("/{mode}/start", status_code=202, openapi_extra={
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        StartRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        {"$ref": "#/components/schemas/LegacyAllInOneRequest"},
        {"$ref": "#/components/schemas/LegacyHARequest"}]}}}}})
def start(mode: Annotated[ModeName, Path(description="mode (old names accepted)")],
          body: Annotated[dict[str, Any], Body()], ctl: Ctl) -> JSONResponse:
    canonical = ctl.canonical_mode(mode)
    reported = modes.reported_name(mode)
    request, warnings, secrets = _start_request(ctl, mode, canonical, body)
    if secrets:
        prefect_call(legacy.store_secrets, secrets)
    try:
        run_id = prefect_call(ctl.start, canonical, request.spec, nodes=request.nodes,
                              lock_wait_s=request.lock_wait_s, rebuild_mode=request.rebuild_mode,
                              to=request.to, max_unavailable=request.max_unavailable,
                              force=request.force, renew=request.renew,
                              snapshot=request.snapshot, confirm=request.confirm,
                              tags=[f"{REPORTED_MODE_TAG}{reported}"] if reported != canonical else None)
    except ApiError:
        if secrets:
            legacy.delete_secrets(list(secrets))
        raise
    return JSONResponse(status_code=202, content=legacy.start_envelope(
        run_id, reported, status_url=f"{PREFIX}/{run_id}/status", warnings=warnings,
        secret_blocks=sorted(secrets)))


def _start_request(ctl: Any, mode: str, canonical: str,
                   body: dict) -> tuple[StartRequest, list[str], dict[str, str]]:
    """(kai's start request, warnings, Secret blocks to create) from kai's body (ApiError 422 with
    every problem) or an old flat one (400, the old code, with every problem)."""
    if not legacy.is_legacy(body):
        return _kai_body(StartRequest, body), [], {}
    if canonical not in ("all_in_one", "ha"):
        _old_body_invalid([f"mode: the old flat request body is only accepted for all_in_one and "
                           f"ha_secure, not {mode}; send {{\"spec\": …}}"])
    try:
        mapped = legacy.to_spec(canonical, legacy.parse(canonical, body))
        defaults = old_body_defaults.load()
    except SpecError as exc:
        _old_body_invalid(exc.problems)
    mapped.spec = old_body_defaults.fill(mapped.spec, defaults)
    problems = list(mapped.problems)
    try:
        if mapped.spec["nodes"]:  # no node: the mapping said why; a spec without nodes adds nothing
            ctl.validate(canonical, mapped.spec)
    except SpecError as exc:
        problems += [f"{p} (set in {old_body_defaults.path()})" if p.split(".")[0].split(":")[0]
                     in defaults else p for p in legacy.rename_problems(exc.problems, mapped)]
    if problems:
        _old_body_invalid(problems)
    return StartRequest(spec=mapped.spec), mapped.warnings, mapped.secrets


def _kai_body(model: type[BaseModel], body: dict) -> Any:
    """kai's own request body as `model`, or ApiError 422 with every problem."""
    try:
        return model.model_validate(body)
    except ValueError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in getattr(exc, "errors", lambda: [])()]
        raise ApiError(422, "invalid request", problems=problems or [str(exc)]) from None


def _old_body_invalid(problems: list[str]) -> NoReturn:
    raise ApiError(400, legacy.validation_error(problems), problems=problems)


@installation.get("/{installation_id}/status", response_model=dict)
async def get_status(installation_id: str, kai: Annotated[Served, Depends(served)]) -> Response:
    """A run's status, at most about a second old (many pollers share one Prefect read)."""
    with prefect_errors():
        body = await kai.statuses.get(installation_id)
    return Response(body, media_type="application/json")


@installation.get("/{installation_id}/logs")
def get_logs(installation_id: str, ctl: Ctl, level: LevelName | None = None,
             limit: Annotated[int, Query(ge=1, le=10000)] = 200) -> dict:
    entries = prefect_call(ctl.logs, installation_id, level, limit)
    return {"success": True, "installation_id": installation_id, "logs": entries,
            "total_logs": len(entries)}


@installation.post("/{installation_id}/cancel")
def post_cancel(installation_id: str, ctl: Ctl) -> dict:
    state = prefect_call(ctl.cancel, installation_id)
    # kai's cancel is asked for, then done by the runner (state Cancelling until it is)
    done = "cancelled successfully" if state == "Cancelled" else "is being cancelled"
    return {"success": True, "installation_id": installation_id, "state": state,
            "message": f"Installation {installation_id} {done}"}


hosts = APIRouter(prefix="/api/v1/hosts", tags=["hosts"], dependencies=[Depends(authorized)])
CheckMode = Literal[modes.with_aliases(modes.hosts_check_modes())]  # type: ignore[valid-type]


class HostsCheckRequest(BaseModel):
    """kai's hosts check body: a cluster spec, and the mode to judge the hosts for."""
    spec: dict[str, Any] = Field(description="the cluster spec (JSON Schema: `kai schema`)")
    mode: CheckMode | None = Field(None, description=f"default: {modes.DEFAULT_RULE}")


@hosts.post("/check", openapi_extra={
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        HostsCheckRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        {"$ref": "#/components/schemas/LegacyHostList"}]}}}}})
def post_hosts_check(body: Annotated[dict[str, Any], Body()], ctl: Ctl) -> dict:
    """SSH to every host (keys verified; a host with an unknown or changed key is reported and
    left alone) and report what it is and what preflight thinks of it. Changes nothing. Takes a
    spec, or the old SSH manager's host list (`hosts`, `ssh_config`): 200 whatever the hosts'
    state; 400 for an invalid old body, 422 for an invalid spec."""
    if "spec" in body:
        request = _kai_body(HostsCheckRequest, body)
        mode, checked = prefect_call(ctl.check_hosts, request.spec,
                                     ctl.canonical_mode(request.mode) if request.mode else None)
    else:
        try:
            mapped = legacy_hosts.host_list_spec(body)
        except SpecError as exc:
            _old_body_invalid(exc.problems)
        with prefect_errors():
            try:
                mode, checked = ctl.check_hosts(mapped.spec, "preflight", secrets=mapped.secrets)
            except SpecError as exc:
                _old_body_invalid(legacy.rename_problems(exc.problems, mapped))
    return {"success": True, "mode": mode, "ok": all(c["ok"] for c in checked), "hosts": checked}


# --- schedules and alerts ---------------------------------------------------------------------

scheduling = APIRouter(prefix="/api/v1", tags=["schedules"], dependencies=[Depends(authorized)])


class ScheduleRequest(BaseModel):
    """A cron schedule of a mode's runs for one cluster (the spec is the runs' parameter)."""
    spec: dict[str, Any] = Field(description="the cluster spec (JSON Schema: `kai schema`)")
    mode: ModeName = Field(description="the served deployment: any mode (aliases accepted)")
    cron: str = Field(description="cron expression, e.g. '*/30 * * * *'")
    timezone: str = Field("UTC", description="IANA time zone of the cron")


class AlertsRequest(BaseModel):
    webhook: str | None = Field(None, description="URL the alerts are POSTed to as JSON {subject, body}")
    block: str | None = Field(None, description="or: a notification block made in the Prefect UI")


@scheduling.post("/schedules", status_code=201)
def post_schedule(body: ScheduleRequest) -> dict:
    entry = prefect_call(schedules.add, body.mode, body.spec, body.cron, body.timezone)
    return {"success": True, "schedule": entry}


@scheduling.get("/schedules")
def get_schedules() -> dict:
    return {"success": True, "schedules": prefect_call(schedules.list_schedules)}


@scheduling.delete("/schedules/{schedule_id}")
def delete_schedule(schedule_id: str) -> dict:
    return {"success": True, "schedule": prefect_call(schedules.remove, schedule_id)}


@scheduling.put("/alerts")
def put_alerts(body: AlertsRequest) -> dict:
    return {"success": True, **prefect_call(alerts.set_alerts, webhook=body.webhook, block=body.block)}


@scheduling.get("/alerts")
def get_alerts() -> dict:
    return {"success": True, **prefect_call(alerts.show_alerts)}


# --- the app -----------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    """One Prefect client for all status reads, and the active runs' statuses kept warm."""
    kai: Served = app.state.kai
    with kai.ctl.prefect_client() as kai.prefect:
        warm = asyncio.create_task(kai.statuses.keep_warm(
            lambda: asyncio.to_thread(kai.ctl.active_run_ids, kai.prefect)))
        try:
            yield
        finally:
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm
            kai.prefect = None


async def _api_error(request: Request, exc: ApiError):
    return error_response(exc.status, exc.error, **exc.extra)


async def _http_error(request: Request, exc: HTTPException):
    return error_response(exc.status_code, str(exc.detail))


async def _invalid(request: Request, exc: RequestValidationError):
    """A path, query or body that does not parse: 400, the old service's code for it."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        problems.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return error_response(400, legacy.validation_error(problems), problems=problems)


async def _unexpected(request: Request, exc: Exception):
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}")


def create_app(token: str, ctl=control) -> FastAPI:
    """The API app; `ctl` is the wrapper (the tests' schemathesis run swaps in one that starts nothing)."""
    if not token:
        raise ValueError("the REST API needs a token")
    app = FastAPI(title="kai", version="1.0", lifespan=lifespan,
                  description="Start, follow and cancel kubeadm installations run as Prefect flows.")
    app.state.kai = Served(token.encode(), ctl)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(health)
    app.include_router(installation)
    app.include_router(hosts)
    app.include_router(scheduling)
    _add_legacy_schemas(app)
    return app


def _add_legacy_schemas(app: FastAPI) -> None:
    """Put the old request models into the OpenAPI components (the start body refers to them)."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (legacy.LegacyAllInOneRequest, legacy.LegacyHARequest,
                      legacy_hosts.LegacyHostList):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        for path in (f"{PREFIX}/{{mode}}/start", "/api/v1/hosts/check"):
            body_schema = (schema["paths"][path]["post"]["requestBody"]
                           ["content"]["application/json"]["schema"])
            for option in body_schema["oneOf"]:
                components.update(option.pop("$defs", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
