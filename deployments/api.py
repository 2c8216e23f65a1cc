"""kai's REST API on the old service's paths (FastAPI), over the wrapper in deployments/control.py.

Every /api/v1 path needs `Authorization: Bearer <token>` (compared in constant time); a refused
request is logged with method, path and client — never the token. Invalid specs are 422 with every
problem. Responses keep the old envelope (`success`, `installation_id`, `message`, `mode`, …) and add
kai's richer fields. `/healthz`, `/openapi.json` and `/docs` need no token.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime

import asyncio
import contextlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from deployments import control, legacy
from deployments.status_cache import StatusCache
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
    lock_wait_s: float | None = Field(None, ge=0, le=3600,
                                      description="how long to wait for busy hosts before refusing")
    rebuild_mode: Literal[modes.install_choices()] = "auto"  # type: ignore[valid-type]


class ApiError(Exception):
    def __init__(self, status: int, error: str, **extra: Any):
        self.status, self.error, self.extra = status, error, extra


def _error(status: int, error: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"success": False, "error": error, **extra}, status_code=status,
                        headers=headers)


# --- what the routes share (on app.state, reached through dependencies) -------------------------

@dataclass
class Served:
    """The app's token, wrapper and status cache: made by create_app, put on `app.state.kai`."""
    token: bytes
    ctl: Any                # deployments/control.py (the tests' schemathesis run swaps in one that starts nothing)
    statuses: StatusCache = field(init=False)
    prefect: Any = None     # the Prefect client the app keeps open while it serves (lifespan)

    def __post_init__(self) -> None:
        # the answer's JSON is encoded once per read, not once per poller
        self.statuses = StatusCache(self.read_status,
                                    render=lambda st: JSONResponse(legacy.status_envelope(st)).body)

    async def read_status(self, run_id: str) -> dict:
        # in a worker thread: Prefect's client turns its answers into pydantic models, 10-20 ms
        # of CPU per read (several times that on a loaded machine) that would hold up every
        # poller if it ran on the event loop
        return await asyncio.to_thread(self.ctl.status, run_id, self.prefect)


# The dependencies are async: a sync one would cost each request a hop to the threadpool.
async def served(request: Request) -> Served:
    return request.app.state.kai


async def wrapper(request: Request) -> Any:
    """The wrapper the routes call (deployments/control.py, or a test's stand-in)."""
    return request.app.state.kai.ctl


Ctl = Annotated[Any, Depends(wrapper)]
bearer = HTTPBearer(auto_error=False, description="the token in <state dir>/api-token or KAI_API_TOKEN")


async def authorized(request: Request,
                     creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    given = creds.credentials.encode() if creds else b""
    if not creds or not hmac.compare_digest(given, request.app.state.kai.token):
        client = request.client.host if request.client else "?"
        log.warning("refused %s %s from %s: %s bearer token", request.method, request.url.path,
                    client, "wrong" if creds else "missing")
        raise ApiError(401, "unauthorized: a valid bearer token is required")


@contextlib.contextmanager
def prefect_errors():
    """The wrapper's errors turned into HTTP answers."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        yield
    except control.UnknownRun as exc:
        raise ApiError(404, str(exc)) from None
    except control.RunFinished as exc:
        raise ApiError(409, str(exc)) from None
    except control.NotServed as exc:
        raise ApiError(503, str(exc)) from None
    except SpecError as exc:
        raise ApiError(422, "invalid cluster spec", problems=exc.problems) from None
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
        log.error("Prefect server call failed: %s", type(exc).__name__)
        raise ApiError(503, f"the Prefect server did not answer: {type(exc).__name__}") from None


def prefect_call(fn, *args, **kwargs):
    with prefect_errors():
        return fn(*args, **kwargs)


# --- routes ------------------------------------------------------------------------------------

health = APIRouter(tags=["health"])
installation = APIRouter(prefix=PREFIX, tags=["installation"], dependencies=[Depends(authorized)])


@health.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@installation.get("/modes")
def get_modes(ctl: Ctl) -> dict:
    return {"success": True, **ctl.modes()}


@installation.post("/{mode}/start", status_code=202, openapi_extra={
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
        StartRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
        {"$ref": "#/components/schemas/LegacyAllInOneRequest"},
        {"$ref": "#/components/schemas/LegacyHARequest"}]}}}}})
def start(mode: Annotated[ModeName, Path(description="mode (old names accepted)")],
          body: Annotated[dict[str, Any], Body()], ctl: Ctl) -> JSONResponse:
    canonical = ctl.canonical_mode(mode)
    request, warnings, secrets = _start_request(ctl, mode, canonical, body)
    if secrets:
        prefect_call(legacy.store_secrets, secrets)
    try:
        run_id = prefect_call(ctl.start, canonical, request.spec, nodes=request.nodes,
                              lock_wait_s=request.lock_wait_s, rebuild_mode=request.rebuild_mode,
                              force=request.force)
    except ApiError:
        if secrets:
            legacy.delete_secrets(list(secrets))
        raise
    return JSONResponse(status_code=202, content={
        "success": True, "installation_id": run_id, "mode": canonical,
        "message": f"{canonical} installation started",
        "status_url": f"{PREFIX}/{run_id}/status", "warnings": warnings,
        "secret_blocks": sorted(secrets)})


def _start_request(ctl: Any, mode: str, canonical: str,
                   body: dict) -> tuple[StartRequest, list[str], dict[str, str]]:
    """(kai's start request, warnings, Secret blocks to create) from kai's body or an old flat one;
    ApiError 422 with every problem."""
    if not legacy.is_legacy(body):
        try:
            return StartRequest.model_validate(body), [], {}
        except ValueError as exc:
            problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                        for e in getattr(exc, "errors", lambda: [])()]
            raise ApiError(422, "invalid request", problems=problems or [str(exc)]) from None
    if canonical not in ("all_in_one", "ha"):
        raise ApiError(422, "invalid request", problems=[
            f"mode: the old flat request body is only accepted for all_in_one and ha_secure, "
            f"not {mode}; send {{\"spec\": …}}"])
    try:
        mapped = legacy.to_spec(canonical, legacy.parse(canonical, body))
    except SpecError as exc:
        raise ApiError(422, "invalid request", problems=exc.problems) from None
    problems = list(mapped.problems)
    try:
        ctl.validate(canonical, mapped.spec)
    except SpecError as exc:
        problems += legacy.rename_problems(exc.problems, mapped)
    if problems:
        raise ApiError(422, "invalid request", problems=problems)
    return StartRequest(spec=mapped.spec), mapped.warnings, mapped.secrets


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
    return {"success": True, "installation_id": installation_id, "state": state,
            "message": f"installation {installation_id}: {state.lower()}"}


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
    return _error(exc.status, exc.error, **exc.extra)


async def _http_error(request: Request, exc: HTTPException):
    return _error(exc.status_code, str(exc.detail))


async def _invalid(request: Request, exc: RequestValidationError):
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        problems.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return _error(422, "invalid request", problems=problems)


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
    app.include_router(health)
    app.include_router(installation)
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
        for model in (legacy.LegacyAllInOneRequest, legacy.LegacyHARequest):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        start_schema = (schema["paths"][f"{PREFIX}/{{mode}}/start"]["post"]["requestBody"]
                        ["content"]["application/json"]["schema"])
        for option in start_schema["oneOf"]:
            components.update(option.pop("$defs", {}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
