"""What the REST API's routes share (deployments/api.py): the errors and their HTTP answers, the
app's state (token, wrapper, status cache) and the dependencies that reach it, the bearer-token
check. FastAPI reads the dependencies' annotations at runtime: no `from __future__ import annotations`.
"""

import asyncio
import contextlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from deployments import control, legacy, legacy_status, schedules
from deployments.status_cache import StatusCache
from installers.spec import SpecError

log = logging.getLogger("kai.api")


class ApiError(Exception):
    def __init__(self, status: int, error: str, **extra: Any):
        self.status, self.error, self.extra = status, error, extra


def error_response(status: int, error: str, **extra: Any) -> JSONResponse:
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
                                    render=lambda st: JSONResponse(legacy_status.status_envelope(st)).body)

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
        raise ApiError(404, legacy.NOT_FOUND, detail=str(exc)) from None
    except schedules.UnknownSchedule as exc:
        raise ApiError(404, str(exc)) from None
    except control.RunFinished as exc:
        raise ApiError(400, legacy.ALREADY_COMPLETED, detail=str(exc)) from None
    except control.NotServed as exc:
        raise ApiError(503, str(exc)) from None
    except SpecError as exc:
        raise ApiError(422, "invalid cluster spec", problems=exc.problems) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
        log.error("Prefect server call failed: %s", type(exc).__name__)
        raise ApiError(503, f"the Prefect server did not answer: {type(exc).__name__}") from None


def prefect_call(fn, *args, **kwargs):
    with prefect_errors():
        return fn(*args, **kwargs)
