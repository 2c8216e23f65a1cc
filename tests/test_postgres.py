"""The scale-out path end to end (issue #15): many clusters at once, run by Prefect workers.

Two machines in miniature on this one: a throwaway PostgreSQL cluster (Debian's packages) on a
loopback port, a Prefect server on it (services on, host-lock leases on disk — prefect.yaml says
why), `prefect --no-prompt deploy --all` from prefect.yaml, two `prefect worker start`
processes with working and state directories of their own, and `kai serve` pointed at the server
with PREFECT_API_URL (it finds the modes on the pool and serves only its REST API). Installs go
through kai's REST API onto booted test hosts:

- an all-in-one (h0) and an HA install (h1–h3) at the same time, one on each worker (the other
  one paused while a run is placed, so that which worker runs what is certain);
- the all-in-one cancelled mid-step: Cancelled, no kai process left on h0, its host locks free;
- a second run aimed at the HA's busy host, picked up by the other worker, refused naming the run
  that holds it;
- the HA's worker killed with its flow run (its machine dying): a rerun on the other worker waits
  for the dead run's locks to lapse, resumes (finished steps skipped) and completes; the dead run
  ends Crashed once its heartbeats stopped (the automation kai serve created).

The workers run with a short node-lock lease (KAI_NODE_LOCK_LEASE_S): each worker is its own
controller (state dir), so the rerun takes the dead worker's node locks over only once it ran
out. Prefect's own host-lock lease is 60 s at least; the server's repossessor looks for expired
leases every 2 s here (15 s by default).
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
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
from deployments.supervisor import descendants
from tests.hosts.mirror import serve_mirror_to
from tests.support.e2e_server import ROOT, quiet_env, start_kai_serve
from tests.support.locks import host_lock_slots, node_lock
from tests.support.ports import free_port
from tests.support.processes import stop_group
from tests.support.wait import wait_until
from tests.test_flows_e2e import (assert_completed, clear_fault, kai_processes, logs, make_spec,
                                  set_fault, wait, wait_step_running)

pytestmark = pytest.mark.e2e
PREFECT = str(Path(sys.executable).parent / "prefect")
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
NODE_LEASE_S = 8
HOSTS_NEEDED = 4


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL is not installed (apt-get install postgresql; `make deps` does it)")
    return found[-1]


def as_postgres(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True,
                          timeout=120, check=True)


# --- fixtures: PostgreSQL, the Prefect server, the deployments, two workers, kai serve -------------

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
    env = quiet_env(PREFECT_HOME=str(home), PREFECT_SERVER_DATABASE_CONNECTION_URL=postgres_url,
                    PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=LEASE_STORAGE,
                    PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="2")
    log = open(home / "server.log", "wb")  # noqa: SIM115
    t0 = time.monotonic()
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                             "--no-ui", "--analytics-off"],
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
        client_env = {k: v for k, v in env.items() if not k.startswith("PREFECT_SERVER_")}
        yield api, dict(client_env, PREFECT_API_URL=api)
    finally:
        stop_group(proc)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def deployed(prefect_on_postgres):
    """The work pool and `prefect deploy --all` from prefect.yaml; seconds the deploy took."""
    api, env = prefect_on_postgres
    subprocess.run([PREFECT, "--no-prompt", "work-pool", "create", "kai-pool", "--type", "process"],
                   env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    t0 = time.monotonic()
    deploy = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"],
                            env=dict(env, KAI_CODE_DIR=str(ROOT)), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    return time.monotonic() - t0


class Worker:
    """`prefect worker start` on its own "machine": working dir, state dir, log of its own."""

    def __init__(self, name: str, env: dict[str, str]):
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"kai-worker-{name}-"))
        self.log_path = self.home / "worker.log"
        env = dict(env, KAI_STATE_DIR=str(self.home / "state"), PREFECT_HOME=str(self.home / "prefect"),
                   KAI_NODE_LOCK_LEASE_S=str(NODE_LEASE_S), PREFECT_WORKER_QUERY_SECONDS="2")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", "kai-pool", "--name", name],
                cwd=self.home, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def took(self, run_id: str) -> bool:
        """Did this worker start the run? (The worker says so in the run's own logs.)"""
        from deployments import control
        needle = f"Worker '{self.name}' submitting flow run '{run_id}'"
        return any(needle in entry["message"] for entry in control.logs(run_id, limit=50, offset=0))

    @contextlib.contextmanager
    def paused(self):
        """The worker takes no new run meanwhile (SIGSTOP; its flow runs go on): which worker
        runs what is then certain. (`--limit 1` is not: a worker took a second run while its
        first was still running, 2 times in 4.)"""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def kill_machine(self) -> None:
        """The worker's machine dies: the worker and every process below it, at once."""
        for pid in [self.proc.pid] + descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_group(self.proc)


@pytest.fixture(scope="module")
def workers(deployed, prefect_on_postgres):
    _, env = prefect_on_postgres
    made = [Worker("w1", env), Worker("w2", env)]
    yield made
    for w in made:
        w.stop()
    for w in made:
        shutil.rmtree(w.home, ignore_errors=True)


@pytest.fixture(scope="module")
def kai_api(deployed, prefect_on_postgres):
    """`kai serve` pointed at the server: its REST API, no runner of its own."""
    api, _ = prefect_on_postgres
    state = Path(tempfile.mkdtemp(prefix="kai-scaleout-serve-"))
    server = start_kai_serve(state, env_extra={"PREFECT_API_URL": api})
    yield server
    left = server.stop()
    shutil.rmtree(state, ignore_errors=True)
    assert not left, f"kai serve left processes behind: {left}"


@pytest.fixture(scope="module")
def hosts(clean_hosts):
    return serve_mirror_to(clean_hosts, HOSTS_NEEDED)


@pytest.fixture
def on_server(prefect_on_postgres):
    """kai's wrapper (deployments/control.py) in this process, pointed at the server."""
    from prefect.settings import (PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE,
                                  temporary_settings)
    api, _ = prefect_on_postgres
    with temporary_settings(updates={PREFECT_API_URL: api,
                                     PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}):
        yield api


# --- tests ----------------------------------------------------------------------------------------

def test_prefect_deploy_all_on_postgres(prefect_on_postgres, deployed):
    api, _ = prefect_on_postgres
    print(f"prefect deploy --all: {deployed:.1f} s")
    with httpx.Client(base_url=api, timeout=30) as c:
        for mode in mode_names():
            r = c.get(f"/deployments/name/{mode}/{mode}")
            assert r.status_code == 200, (mode, r.text)
            d = r.json()
            assert d["work_pool_name"] == "kai-pool", mode
            assert "spec" in d["parameter_openapi_schema"]["properties"], mode
            assert d["pull_steps"][0]["prefect.deployments.steps.set_working_directory"][
                "directory"] == str(ROOT)
            assert d["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30", mode
            schedules = d["schedules"]
            if mode in ("rebuild", "health", "etcd_backup", "certs"):  # prefect.yaml's paused cron schedules
                assert len(schedules) == 1 and schedules[0]["active"] is False, (mode, schedules)
                assert schedules[0]["schedule"]["cron"], mode
            else:
                assert schedules == [], (mode, schedules)
        pool = c.get("/work_pools/kai-pool").json()
        assert pool["type"] == "process"


def test_kai_serve_on_the_server_serves_only_its_api(kai_api, on_server):
    from prefect.client.orchestration import get_client

    from deployments.scaleout import AUTOMATION_NAME

    text = kai_api.log_text()
    assert "deployed on work pool 'kai-pool'" in text and "serving the REST API only" in text, text
    assert not [p for p in descendants(kai_api.proc.pid)], "kai serve started a runner anyway"
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(AUTOMATION_NAME)
        deployment = client.read_deployment_by_name("ha/ha")
    assert automation.enabled and deployment.work_pool_name == "kai-pool", \
        "kai serve must not re-register the modes as its own runner's deployments"


def ha_spec(hosts, members) -> dict:
    subnet = ipaddress.ip_network(f"{hosts.bridge.gateway}/{hosts.bridge.prefixlen}", strict=False)
    return make_spec(hosts, members, name="scaleout-ha",
                     roles={h.name: ["control-plane"] for h in members},
                     endpoint={"type": "kube_vip", "address": str(subnet[249]), "interface": "eth0"})


@pytest.mark.hosts
@pytest.mark.timeout(600)
def test_two_installs_on_two_workers_cancel_refuse_and_a_dead_worker(hosts, workers, kai_api,
                                                                      on_server):
    from deployments import control

    h0, ha_hosts = hosts[0], list(hosts)[1:4]
    aio = make_spec(hosts, [h0], name="scaleout-aio")
    ha = ha_spec(hosts, ha_hosts)
    for h in (h0, ha_hosts[0]):  # both installs hang in kubeadm init until cancelled or killed
        set_fault(h, {"kubeadm init": {"sleep": 300}})

    api = kai_api.client()

    def start(mode: str, spec: dict, **extra) -> str:
        resp = api.post(f"/api/v1/installation/{mode}/start", json={"spec": spec, **extra})
        assert resp.status_code == 202, resp.text
        return resp.json()["installation_id"]

    def worker_of(run_id: str) -> Worker:
        return wait_until(f"a worker taking {run_id}",
                          lambda: next((w for w in workers if w.took(run_id)), None), 60)

    # 1. two installs at once, one on each worker (each placed by pausing the other)
    t0 = time.monotonic()
    w_aio, w_ha = workers
    with w_ha.paused():
        run_aio = start("all_in_one", aio)
        assert worker_of(run_aio) is w_aio
    with w_aio.paused():
        run_ha = start("ha", ha)
        assert worker_of(run_ha) is w_ha
    for run_id in (run_aio, run_ha):
        st = wait_step_running(run_id, "kubeadm-init")
        assert not st["final"], f"{st['mode']} ended {st['state']} early: {st['failure']}"
    both_s = time.monotonic() - t0

    # 2. cancel the all-in-one through the REST API: Cancelled, nothing left on h0, h0 free
    t1 = time.monotonic()
    assert api.post(f"/api/v1/installation/{run_aio}/cancel").status_code == 200
    st = wait(run_aio, timeout=60)
    cancel_s = time.monotonic() - t1
    assert st["state"] == "CANCELLED", st["state"]
    wait_until(f"no kai step left on {h0.name}", lambda: not kai_processes(h0), 15)
    wait_until("h0's Prefect host lock free", lambda: host_lock_slots(h0.address) == 0, 15)
    wait_until("h0's node lock released or lapsed", lambda: not node_lock(h0)
               or int(node_lock(h0)["expires"]) <= time.time(), NODE_LEASE_S + 5)
    free_s = time.monotonic() - t1

    # 3. a run aimed at the HA's busy host: the free worker takes it, the server's lock refuses it
    with w_ha.paused():
        refused_id = start("preflight", ha, lock_wait_s=2)
        assert worker_of(refused_id) is w_aio
    refused = wait(refused_id, timeout=120)
    assert refused["state"] == "FAILED", refused["state"]
    name_ha = control.status(run_ha)["name"]
    message = refused["failure"]["message"]
    assert ha_hosts[0].address in message and name_ha in message and "refused" in message, message

    # 4. the HA's worker dies with its run; a rerun on the other worker resumes once the dead
    #    run's locks lapse, and the dead run ends Crashed when its heartbeats stop
    w_ha.kill_machine()
    t2 = time.monotonic()
    wait_until("the dead worker's kubeadm killed on the node",
               lambda: "kubeadm" not in kai_processes(ha_hosts[0]), 30)
    clear_fault(ha_hosts[0])
    rerun_id = start("ha", ha, lock_wait_s=180)
    rerun = wait(rerun_id, timeout=420)
    rerun_s = time.monotonic() - t2
    assert worker_of(rerun_id) is w_aio
    assert_completed(rerun)
    text = "\n".join(logs(rerun_id))
    for h in ha_hosts:
        for step in ("os-prep", "runtime", "kube-packages"):
            assert f"[{h.name}] {step}: already done" in text, f"{h.name} {step}: not skipped"
    assert "node lock: taking over the stale lock of run" in text, "the dead run's node locks"
    dead = wait_until("the dead worker's run Crashed",
                      lambda: (s := control.status(run_ha))["final"] and s, 150, every_s=2)
    crashed_s = time.monotonic() - t2
    assert dead["state"] == "CRASHED", dead["state"]
    assert "no heartbeat" in (dead["failure"] or {}).get("message", ""), dead["failure"]
    clear_fault(h0)
    api.close()
    print(f"\nall-in-one + HA on two workers at kubeadm-init after {both_s:.0f} s; cancel → "
          f"Cancelled in {cancel_s:.1f} s, h0 free after {free_s:.1f} s; busy host refused on "
          f"the other worker; HA worker killed: rerun completed {rerun_s:.0f} s later on the "
          f"other worker, dead run Crashed after {crashed_s:.0f} s")
