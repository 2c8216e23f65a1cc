"""A throwaway Prefect server for the benchmark: loopback port, temp SQLite DB, telemetry off."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.measure import tree_cpu
from tests.support.ports import free_port
from tests.support.processes import stop_group


def quiet_env() -> dict[str, str]:
    return {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


class PrefectServer:
    def __init__(self, log_dir: Path):
        self.home = Path(tempfile.mkdtemp(prefix="kai-bench-prefect-"))
        self.port = free_port()
        self.log_path = log_dir / "prefect-server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def client_env(self) -> dict[str, str]:
        return {**quiet_env(), "PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def start(self, timeout: float = 120) -> "PrefectServer":
        env = {**os.environ, **self.client_env(),
               "PREFECT_API_DATABASE_CONNECTION_URL":
                   f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"}
        env.pop("PREFECT_API_URL")  # the server itself must not point at itself as a client
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
             "127.0.0.1", "--port", str(self.port), "--no-ui", "--analytics-off"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout}s:\n{self.log_tail()}")

    def cpu_s(self) -> float:
        return tree_cpu(self.proc.pid) if self.proc else 0.0

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def log_errors(self, since: int = 0) -> tuple[int, int, int]:
        """(byte offset now, 'database is locked' count, ERROR/Traceback line count) after `since`."""
        data = self.log_path.read_bytes()
        text = data[since:].decode(errors="replace")
        locked = text.count("database is locked")
        errors = sum(1 for line in text.splitlines() if " ERROR " in line or "| ERROR" in line
                     or line.startswith("Traceback"))
        return len(data), locked, errors

    def stop(self) -> None:
        if self.proc:
            stop_group(self.proc, 20)
        shutil.rmtree(self.home, ignore_errors=True)


class RunWatcher:
    """Reads a flow run back from the REST API the way a status wrapper would."""

    def __init__(self, api_url: str):
        self.http = httpx.Client(base_url=api_url, timeout=30)
        self.log_offset = 0
        self.marker_lines = 0

    def flow_run(self, flow_run_id: str) -> dict:
        r = self.http.get(f"/flow_runs/{flow_run_id}")
        r.raise_for_status()
        return r.json()

    def task_runs(self, flow_run_id: str) -> list[dict]:
        out, offset = [], 0
        while True:
            r = self.http.post("/task_runs/filter", json={
                "flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200, "offset": offset})
            r.raise_for_status()
            page = r.json()
            out += page
            if len(page) < 200:
                return out
            offset += 200

    def tail_logs(self, flow_run_id: str, marker: str) -> int:
        """Reads new log records (offset tailing); returns how many lines so far contain `marker`."""
        while True:
            r = self.http.post("/logs/filter", json={
                "logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC",
                "limit": 200, "offset": self.log_offset})
            r.raise_for_status()
            page = r.json()
            self.log_offset += len(page)
            # kai sends host output in batches: one record may hold many lines
            self.marker_lines += sum(1 for log in page for line in log["message"].split("\n")
                                     if marker in line)
            if len(page) < 200:
                return self.marker_lines

    def wait_ingested(self, flow_run_id: str, *, task_runs: int, marker: str, marker_lines: int,
                      timeout: float = 300) -> dict:
        """Poll until the server holds the final flow state, every task run finished, and every
        host-step log line. Returns seconds waited (from the call) and what was seen."""
        t0 = time.time()
        seen = {}
        while True:
            fr = self.flow_run(flow_run_id)
            trs = self.task_runs(flow_run_id)
            finished = sum(1 for t in trs if t.get("state_type") in ("COMPLETED", "FAILED", "CRASHED"))
            lines = self.tail_logs(flow_run_id, marker)
            seen = {"flow_state": fr.get("state_type"), "task_runs_finished": finished,
                    "marker_lines": lines}
            if (fr.get("state_type") in ("COMPLETED", "FAILED", "CRASHED")
                    and finished >= task_runs and lines >= marker_lines):
                return {"waited_s": time.time() - t0, **seen, "complete": True}
            if fr.get("state_type") in ("FAILED", "CRASHED", "CANCELLED"):
                # a run that did not complete never logs every line: waiting would only time out
                return {"waited_s": time.time() - t0, **seen, "complete": False}
            if time.time() - t0 > timeout:
                return {"waited_s": time.time() - t0, **seen, "complete": False}
            time.sleep(0.05)
