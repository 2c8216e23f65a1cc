"""`kai serve` itself: what it prints, the private token, typed deployments, clean SIGTERM."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from deployments.control import mode_names
from deployments.supervisor import descendants
from tests.support.e2e_server import kai_server, start_kai_serve  # noqa: F401

pytestmark = pytest.mark.e2e


def test_serve_prints_urls_and_keeps_the_token_private(kai_server):  # noqa: F811
    out = kai_server.log_path.read_text()
    assert f"Prefect UI   {kai_server.ui_url}" in out
    assert f"REST API     {kai_server.api_url}" in out
    token_file = kai_server.state_dir / "api-token"
    assert f"bearer token from {token_file}" in out
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert kai_server.token not in kai_server.log_text()
    assert httpx.get(kai_server.api_url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(kai_server.prefect_api_url + "/health").status_code == 200


def test_a_deployment_per_mode_with_a_typed_parameter_form(kai_server):  # noqa: F811
    with httpx.Client(base_url=kai_server.prefect_api_url, timeout=30) as c:
        for mode in mode_names():
            d = c.get(f"/deployments/name/{mode}/{mode}")
            assert d.status_code == 200, (mode, d.text)
            schema = d.json()["parameter_openapi_schema"]
            assert "spec" in schema["properties"] and "spec" in schema["required"], mode
            spec_model = schema["definitions"]["ClusterSpec"]
            assert {"name", "nodes", "networking", "ssh"} <= set(spec_model["properties"])
        aio = c.get("/deployments/name/all_in_one/all_in_one").json()["parameter_openapi_schema"]
        cni = aio["definitions"]["Networking"]["properties"]["cni"]
        assert set(cni["enum"]) == {"cilium", "calico", "flannel"}


def test_processes_are_telemetry_free(kai_server):  # noqa: F811
    for pid in [kai_server.proc.pid] + descendants(kai_server.proc.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        assert b"DO_NOT_TRACK=1" in environ, pid
        assert b"PREFECT_SERVER_ANALYTICS_ENABLED=false" in environ, pid


def test_serve_on_an_existing_server_stops_cleanly_on_sigterm(kai_server):  # noqa: F811
    """A second `kai serve` pointed at the session's server: runner + API only; SIGTERM ends all."""
    with tempfile.TemporaryDirectory(prefix="kai-serve2-") as tmp:
        second = start_kai_serve(Path(tmp), env_extra={
            "PREFECT_API_URL": kai_server.prefect_api_url, "KAI_API_TOKEN": "second-instance-token"})
        try:
            out = second.log_path.read_text()
            assert f"using the Prefect server at {kai_server.prefect_api_url}" in out
            assert "bearer token from KAI_API_TOKEN" in out and "second-instance-token" not in out
            assert not (Path(tmp) / "api-token").exists()
            tree = descendants(second.proc.pid)
            assert any(b"--runner" in Path(f"/proc/{p}/cmdline").read_bytes() for p in tree
                       if Path(f"/proc/{p}/cmdline").exists())
            r = httpx.get(second.api_url + "/api/v1/installation/modes", headers=second.headers())
            assert r.status_code == 200
        finally:
            t0 = time.monotonic()
            left = second.stop()
        print(f"\nsecond kai serve: ready in {second.timings['ready_s']:.1f} s, "
              f"stopped in {time.monotonic() - t0:.1f} s")
        assert left == []
        assert second.proc.returncode == 0
        assert not (Path(tmp) / "serve.json").exists()
    assert httpx.get(kai_server.prefect_api_url + "/health").status_code == 200  # untouched


def test_a_dead_runner_is_restarted(kai_server):  # noqa: F811
    """kai serve keeps serving when a child dies: the runner is started again (the server's
    restart, with a run in flight, is in tests/test_faults_e2e.py)."""
    import signal

    def runners() -> list[int]:
        return [p for p in descendants(kai_server.proc.pid) if Path(f"/proc/{p}/cmdline").exists()
                and b"--runner" in Path(f"/proc/{p}/cmdline").read_bytes()]

    (old,) = runners()
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not runners() or runners() == [old]):
        time.sleep(0.5)
    assert runners() and runners() != [old], "the runner was not restarted"
    assert kai_server.proc.poll() is None
    out = kai_server.log_path.read_text()
    assert "the runner exited with code -9; restarting it in 1 s" in out
    assert "the runner restarted (pid" in out
    assert httpx.get(kai_server.api_url + "/healthz").json() == {"status": "ok"}
