"""The scale-out path once for real: a throwaway PostgreSQL cluster (Debian's packages) on a loopback
port, a Prefect server on it, `prefect --no-prompt deploy --all` from prefect.yaml, and a check that
every deployment landed on the `kai-pool` process pool with the rebuild/health schedules paused."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from deployments.control import mode_names
from tests.support.e2e_server import ROOT, quiet_env
from tests.support.ports import free_port

pytestmark = pytest.mark.e2e
PREFECT = str(Path(sys.executable).parent / "prefect")


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql; `make deps` does it)")
    return found[-1]


def as_postgres(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True,
                          timeout=120, check=True)


@pytest.fixture(scope="module")
def postgres_url():
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("no postgres user (apt-get install postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="kai-pg-"))
    os.chown(tmp, pw.pw_uid, pw.pw_gid)
    data, port = tmp / "data", free_port()
    as_postgres(pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    as_postgres(pg_bin("pg_ctl"), "-D", str(data), "-l", str(tmp / "pg.log"), "-w", "start", "-o",
                f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        as_postgres(pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "prefect")
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", pg_bin("pg_ctl"), "-D", str(data),
                        "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def prefect_on_postgres(postgres_url):
    home = Path(tempfile.mkdtemp(prefix="kai-pg-prefect-"))
    port = free_port()
    env = quiet_env(PREFECT_HOME=str(home), PREFECT_SERVER_DATABASE_CONNECTION_URL=postgres_url)
    log = open(home / "server.log", "wb")  # noqa: SIM115
    t0 = time.monotonic()
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                             "--no-ui", "--no-services", "--analytics-off"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(api + "/health", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, \
                (home / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        print(f"\nPrefect server on PostgreSQL healthy in {time.monotonic() - t0:.1f} s")
        yield api, dict(env, PREFECT_API_URL=api)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def test_prefect_deploy_all_on_postgres(prefect_on_postgres):
    api, env = prefect_on_postgres
    subprocess.run([PREFECT, "--no-prompt", "work-pool", "create", "kai-pool", "--type", "process"],
                   env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    t0 = time.monotonic()
    deploy = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], env=dict(env, KAI_CODE_DIR=str(ROOT)),
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    print(f"prefect deploy --all: {time.monotonic() - t0:.1f} s")
    with httpx.Client(base_url=api, timeout=30) as c:
        for mode in mode_names():
            r = c.get(f"/deployments/name/{mode}/{mode}")
            assert r.status_code == 200, (mode, r.text)
            d = r.json()
            assert d["work_pool_name"] == "kai-pool", mode
            assert "spec" in d["parameter_openapi_schema"]["properties"], mode
            assert d["pull_steps"][0]["prefect.deployments.steps.set_working_directory"][
                "directory"] == str(ROOT)
            schedules = d["schedules"]
            if mode in ("rebuild", "health"):
                assert len(schedules) == 1 and schedules[0]["active"] is False, (mode, schedules)
                assert schedules[0]["schedule"]["cron"], mode
            else:
                assert schedules == [], (mode, schedules)
        pool = c.get("/work_pools/kai-pool").json()
        assert pool["type"] == "process"
