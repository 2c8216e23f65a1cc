"""`kai serve` — the embedded default: Prefect server (SQLite), a deployment per mode, UI, REST API.

Process tree (every child in its own process group, so that shutdown reaches all of it):

    kai serve (this process: supervisor + REST API in a uvicorn thread)
    ├── prefect server start      (unless PREFECT_API_URL points at a server already)
    └── python -m deployments.serve --runner   (Prefect `serve()`: one deployment per mode;
        └── flow-run subprocesses                none when a work pool's workers run the modes
                                                 — scale-out, deployments/scaleout.py)

Ctrl-C / SIGTERM stops the API, then the runner and every flow-run process below it (TERM, then
KILL after a grace period), then the server — nothing is left behind. Telemetry is off.

Faults (issue #10 §4): kai serve keeps serving when a child dies. The Prefect server and the runner
are restarted with a capped exponential backoff (a dead runner once the server answers again;
a live one whose cancel watcher died with the old server is replaced once it is idle). The
server keeps the host locks' leases on disk (Prefect's filesystem lease storage), so a restart
does not lose them; and every few seconds the reaper (deployments/reaper.py) marks crashed the
runs whose flow process is gone and frees their hosts. A stopped (SIGSTOPped) server is waited
for, not restarted: it is still there, just slow.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deployments.supervisor import STOP_GRACE_S, Supervised, descendants, log, stop_tree

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
RUNNER_POLL_S = "2"        # Prefect's default is 10 s: a started run would wait up to that long
SERVER_START_TIMEOUT_S = 120.0
REAP_EVERY_S = 5.0
# Leases of the host locks survive a server restart only on disk (Prefect keeps them in memory by
# default: after a restart every host the dead server had locked stayed locked for good).
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
TOKEN_FILE = "api-token"
# Prefect's in-memory causal ordering holds back the state events of a run the scheduler made (and,
# after a server restart, those of runs in flight) for 15 minutes before any automation sees them:
# kai's alerts came 15 minutes late. kai's ordering does not wait for leaders that never come.
CAUSAL_ORDERING = "deployments.event_ordering"


# --- API token ---------------------------------------------------------------------------------

def api_token(state_dir: Path, from_env: str | None) -> tuple[str, str]:
    """(token, where it comes from). Generated once into <state>/api-token (0600) if not set."""
    if from_env:
        return from_env, "KAI_API_TOKEN"
    path = state_dir / TOKEN_FILE
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token, str(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, str(path)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Served:
    prefect_api_url: str
    ui_url: str
    api_url: str
    token_source: str
    server: subprocess.Popen | None = None
    runner: subprocess.Popen | None = None
    api: object | None = None
    api_thread: threading.Thread | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer {url} within {timeout_s:.0f} s")


def server_env(state_dir: Path, port: int) -> dict[str, str]:
    """The embedded Prefect server's environment (a setting already in the environment wins)."""
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", str(state_dir / "prefect"))
    env.setdefault("PREFECT_SERVER_DATABASE_CONNECTION_URL",
                   f"sqlite+aiosqlite:///{state_dir / 'prefect' / 'prefect.db'}")
    # the UI's browser code calls this URL; Prefect's default is port 4200 whatever --port says
    env.setdefault("PREFECT_UI_API_URL", f"http://127.0.0.1:{port}/api")
    env.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", LEASE_STORAGE)
    env.setdefault("PREFECT_SERVER_EVENTS_CAUSAL_ORDERING", CAUSAL_ORDERING)
    return env


def start_prefect_server(state_dir: Path, port: int, log_file) -> tuple[subprocess.Popen, str]:
    env = server_env(state_dir, port)
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    proc = subprocess.Popen(
        [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
         "--analytics-off"],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/api"


def start_runner(log_file) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deployments.serve", "--runner"],
                            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def start_api(token: str, host: str, port: int):
    import uvicorn

    from deployments.api import create_app

    config = uvicorn.Config(create_app(token), host=host, port=port, log_level="info",
                            access_log=True)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kai-api", daemon=True)
    thread.start()
    return server, thread


def deployments_ready(expected: list[str], timeout_s: float, runner: subprocess.Popen) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    missing = list(expected)
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if runner.poll() is not None:
                raise RuntimeError(f"the runner exited with code {runner.returncode}")
            still = []
            for mode in missing:
                try:
                    client.read_deployment_by_name(f"{mode}/{mode}")
                except ObjectNotFound:
                    still.append(mode)
            missing = still
            if not missing:
                return
            time.sleep(0.5)
    raise RuntimeError(f"deployments not created within {timeout_s:.0f} s: {', '.join(missing)}")


def workers_pool(modes: list[str]) -> str | None:
    """With an external server: the work pool whose workers run the modes (prefect.yaml), or None
    when kai serve must run them itself. Also makes sure that runs of a dead worker machine end
    Crashed (deployments/scaleout.py)."""
    from prefect.client.orchestration import get_client

    from deployments.scaleout import AUTOMATION_NAME, ensure_crash_automation, pool_serving_modes

    with get_client(sync_client=True) as client:
        pool = pool_serving_modes(client, modes)
        if pool is not None and ensure_crash_automation(client):
            log(f"created the automation {AUTOMATION_NAME!r}")
    return pool


def serve(prefect_port: int = 4200, api_host: str | None = None, api_port: int | None = None) -> int:
    from installers.settings import SERVE_FILE, resolve_settings

    # PREFECT_API_URL from the environment or .env: serve against that server, else start one
    settings = resolve_settings(use_running_serve=False)
    state_dir = settings.state_path()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for key, value in QUIET_ENV.items():
        os.environ[key] = value
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", RUNNER_POLL_S)
    api_host = api_host or settings.api_host
    api_port = api_port or settings.api_port
    token, token_source = api_token(
        state_dir, settings.api_token.get_secret_value() if settings.api_token else None)

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log_dir = state_dir / "logs"
    log_dir.mkdir(exist_ok=True, mode=0o700)
    server_log = open(log_dir / "prefect-server.log", "ab")  # noqa: SIM115 - lives until exit
    runner_log = open(log_dir / "runner.log", "ab")  # noqa: SIM115
    served = Served("", "", f"http://{api_host}:{api_port}", token_source)
    t0 = time.monotonic()
    code = 0
    try:
        external = settings.prefect_api_url
        if external:
            served.prefect_api_url = external.rstrip("/")
            log(f"using the Prefect server at {served.prefect_api_url}")
        else:
            served.server, served.prefect_api_url = start_prefect_server(state_dir, prefect_port,
                                                                         server_log)
            log(f"starting the Prefect server (SQLite in {state_dir / 'prefect'}; "
                f"log {log_dir / 'prefect-server.log'})")
        os.environ["PREFECT_API_URL"] = served.prefect_api_url
        served.ui_url = served.prefect_api_url.removesuffix("/api")
        wait_healthy(served.prefect_api_url + "/health", served.server, SERVER_START_TIMEOUT_S,
                     "the Prefect server")
        served.timings["server_ready_s"] = time.monotonic() - t0
        if stop.is_set():
            return 130

        from deployments.control import mode_names

        MODES = mode_names()
        pool = workers_pool(MODES) if external else None
        if pool is None:
            served.runner = start_runner(runner_log)
        else:
            log(f"the modes are deployed on work pool {pool!r}: its workers run them; serving "
                "the REST API only")
        served.api, served.api_thread = start_api(token, api_host, api_port)
        if served.runner is not None:
            deployments_ready(list(MODES), 120, served.runner)
        wait_healthy(served.api_url + "/healthz", None, 30, "the REST API")
        served.timings["ready_s"] = time.monotonic() - t0
        (state_dir / SERVE_FILE).write_text(json.dumps({
            "pid": os.getpid(), "prefect_api_url": served.prefect_api_url, "ui_url": served.ui_url,
            "api_url": served.api_url, "token": token_source}, indent=2) + "\n")
        log(f"Prefect UI   {served.ui_url}")
        log(f"REST API     {served.api_url}  (docs {served.api_url}/docs; bearer token from "
            f"{token_source})")
        log(f"deployments  {', '.join(f'{m}/{m}' for m in MODES)}")
        log(f"ready in {served.timings['ready_s']:.1f} s (server {served.timings['server_ready_s']:.1f} s)"
            " — Ctrl-C stops everything")
        supervise(served, stop, state_dir,
                  restart_server=lambda: start_prefect_server(state_dir, prefect_port, server_log)[0],
                  restart_runner=lambda: start_runner(runner_log))
        if served.api_thread is not None and not served.api_thread.is_alive():
            code = 1
    except (RuntimeError, OSError) as exc:
        log(f"error: {exc}")
        code = 1
    finally:
        shutdown(served, state_dir)
        (state_dir / SERVE_FILE).unlink(missing_ok=True)
        server_log.close()
        runner_log.close()
    return code


def supervise(served: Served, stop: threading.Event, state_dir: Path, *,
              restart_server: Callable[[], subprocess.Popen],
              restart_runner: Callable[[], subprocess.Popen]) -> None:
    """Until `stop`: keep the Prefect server and the runner alive, and reap dead runs."""
    from deployments.reaper import Reaper

    health_url = served.prefect_api_url + "/health"
    server = (Supervised("Prefect server", restart_server, served.server)
              if served.server is not None else None)
    # no runner when a work pool's workers run the modes (scale-out)
    runner = (Supervised("runner", restart_runner, served.runner, kill_leftovers=False)
              if served.runner is not None else None)
    reaper = Reaper(state_dir, say=log)
    next_reap = 0.0  # at once: runs left behind by an earlier kai serve
    runner_blind = False  # its cancel watcher died with the server it watched
    while not stop.wait(1.0):
        if server is not None:
            server.died()
            if server.due():
                server.restart()
                served.server = server.proc
                runner_blind = True
        # Prefect's runner stops watching for cancels for good when the server is away ("flow
        # run cancellation will fail"): replace it once no flow run of it is in flight (killing it
        # earlier would kill those runs; meanwhile the reaper stops cancelled runs itself)
        if (runner is not None and runner_blind and runner.restart_at is None and not descendants(runner.proc.pid)
                and healthy(health_url)):
            log("replacing the runner: it stopped watching for cancels while the Prefect "
                "server was away")
            stop_tree(runner.proc, "runner")
            runner.restart()
            served.runner = runner.proc
            runner_blind = False
        # a runner that died (e.g. gave up polling during a long outage) starts again only once
        # the server answers, or it would just fail again
        if runner is not None:
            runner.died()
            if runner.due() and healthy(health_url):
                runner.restart()
                served.runner = runner.proc
                runner_blind = False  # a fresh runner watches the server it started with
        if served.api_thread is not None and not served.api_thread.is_alive():
            log("the REST API stopped (port in use?); stopping")
            return
        if time.monotonic() >= next_reap and healthy(health_url):
            next_reap = time.monotonic() + REAP_EVERY_S
            try:
                reaper.reap()
            except Exception as exc:  # noqa: BLE001 - the server may be away; try again later
                log(f"checking for dead runs failed: {type(exc).__name__}: {exc}")


def stop_registered_runs(state_dir: Path) -> None:
    """Flow processes a dead runner left behind are no longer below the runner: stop them too."""
    from flows import run_registry

    left = [e for e in run_registry.entries(state_dir) if e.process_alive()]
    for entry in left:
        log(f"stopping flow run {entry.run_id} (pid {entry.pid}), left by an earlier runner")
        try:
            os.kill(entry.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [e for e in left if e.process_alive()]
    for entry in left:
        log(f"flow run {entry.run_id}: process {entry.pid} did not stop in {STOP_GRACE_S:.0f} s; "
            "killing it")
        try:
            os.kill(entry.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def shutdown(served: Served, state_dir: Path) -> None:
    log("stopping")
    if served.api is not None:
        served.api.should_exit = True
        if served.api_thread is not None:
            served.api_thread.join(10)
    if served.runner is not None:
        stop_tree(served.runner, "runner")
    stop_registered_runs(state_dir)
    if served.server is not None:
        stop_tree(served.server, "Prefect server")
    log("stopped")


# --- the runner process ------------------------------------------------------------------------

def run_runner() -> None:
    """Serve a deployment per mode (typed parameter forms come from the flows' signatures)."""
    from prefect import serve as prefect_serve

    from flows import MODES
    from installers import modes

    deployments = [flow.to_deployment(name=mode, tags=["kai"], description=modes.get(mode).description)
                   for mode, flow in MODES.items()]
    prefect_serve(*deployments, print_starting_message=False, pause_on_shutdown=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kai serve")
    parser.add_argument("--runner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--api-host", default=None)
    parser.add_argument("--api-port", type=int, default=None)
    args = parser.parse_args(argv)
    if args.runner:
        run_runner()
        return 0
    return serve(args.prefect_port, args.api_host, args.api_port)


if __name__ == "__main__":
    sys.exit(main())
