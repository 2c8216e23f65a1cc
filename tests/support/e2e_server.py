"""Session fixture: the real `kai serve` — a Prefect server (temp SQLite) on a free loopback port,
a served deployment per mode, and the REST API — started once per test session and stopped with
SIGTERM at the end (which must leave no process behind).

Use it with `from tests.support.e2e_server import kai_server  # noqa: F401`. Importing the fixture into
several modules would normally create one instance per module; the singleton below keeps it to one
server per session whichever module asks first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deployments.supervisor import alive, descendants
from tests.support.local_machine import local_agent_command
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]  # the repository
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError:
        return "?"


def quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KAI_"))}
    env.update({"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


@dataclass
class KaiServer:
    proc: subprocess.Popen
    state_dir: Path
    log_path: Path
    api_url: str = ""
    ui_url: str = ""
    prefect_api_url: str = ""
    token: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers=self.headers(), timeout=30)

    def log_text(self) -> str:
        text = self.log_path.read_text(errors="replace")
        for extra in (self.state_dir / "logs").glob("*.log"):
            text += extra.read_text(errors="replace")
        return text

    @contextlib.contextmanager
    def prefect(self):
        """Prefect's client in this process, pointed at the served server."""
        from prefect.settings import PREFECT_API_URL, temporary_settings
        with temporary_settings(updates={PREFECT_API_URL: self.prefect_api_url}):
            yield

    def stop(self) -> list[str]:
        """SIGTERM `kai serve`; returns the processes of its tree still alive afterwards."""
        if self.proc.poll() is not None:
            return []
        tree = [self.proc.pid] + descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)
        left = [p for p in tree if alive(p)]
        described = [f"{p}: {_cmdline(p)}" for p in left if alive(p)]
        for p in left:  # ours: clean up before failing
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        return described


def start_kai_serve(state_dir: Path, *, env_extra: dict[str, str] | None = None,
                    prefect_port: int | None = None) -> KaiServer:
    api_port = free_port()
    prefect_port = prefect_port or free_port()
    log_path = state_dir / "kai-serve.out"
    env = quiet_env(KAI_STATE_DIR=str(state_dir), PREFECT_HOME=str(state_dir / "prefect"),
                    KAI_API_PORT=str(api_port), **(env_extra or {}))
    t0 = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "kai"), "serve",
                                 "--prefect-port", str(prefect_port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = KaiServer(proc, state_dir, log_path)
    served = state_dir / "serve.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not served.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"kai serve did not come up (exit {proc.returncode}):\n{server.log_text()[-3000:]}")
        time.sleep(0.3)
    info = json.loads(served.read_text())
    server.timings["ready_s"] = time.monotonic() - t0
    server.api_url, server.ui_url = info["api_url"], info["ui_url"]
    server.prefect_api_url = info["prefect_api_url"]
    token_file = state_dir / "api-token"
    server.token = env_extra.get("KAI_API_TOKEN") if env_extra and "KAI_API_TOKEN" in env_extra \
        else token_file.read_text().strip()
    return server


_SESSION: dict[str, KaiServer] = {}


@pytest.fixture(scope="session")
def kai_server(request) -> KaiServer:
    if "server" not in _SESSION:
        state_dir = Path(tempfile.mkdtemp(prefix="kai-e2e-"))
        # a node marked `connection: local` runs only inside the booted host that a test makes
        # "the local machine" (tests/support/local_machine.py), never on this machine
        server = start_kai_serve(state_dir, env_extra={
            "KAI_LOCAL_AGENT_COMMAND": local_agent_command(state_dir)})
        _SESSION["server"] = server
        print(f"\nkai serve ready in {server.timings['ready_s']:.1f} s: {server.api_url} {server.ui_url}")

        def finish() -> None:
            left = server.stop()
            _SESSION.pop("server", None)
            if not left:
                shutil.rmtree(state_dir, ignore_errors=True)
            assert not left, f"kai serve left processes behind after SIGTERM: {left}"

        request.addfinalizer(finish)
    return _SESSION["server"]


def wait_final(client: httpx.Client, run_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/installation/{run_id}/status").json()
        if body.get("completed"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} not final after {timeout_s} s: {body}")
