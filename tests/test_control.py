"""The wrapper, the old-service mapping and the API's error handling — without a Prefect server."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from deployments import control, legacy, legacy_status
from deployments.api import create_app
from deployments.serve import api_token
from installers.spec import SpecError

AIO = {"name": "c1", "nodes": [{"name": "n1", "address": "192.0.2.11", "roles": ["control-plane"]}]}


def test_mode_names_match_the_flows():
    from flows import MODES
    assert control.mode_names() == list(MODES)


@pytest.mark.parametrize("alias,mode", [("all-in-one", "all_in_one"), ("all_in_one", "all_in_one"),
                                        ("ha_secure", "ha"), ("ha", "ha"), ("add-nodes", "add_nodes")])
def test_mode_aliases(alias, mode):
    assert control.canonical_mode(alias) == mode


def test_unknown_mode_names_the_known_ones():
    with pytest.raises(SpecError) as err:
        control.canonical_mode("kind")
    assert "all_in_one" in err.value.problems[0] and "ha_secure" in err.value.problems[0]


def test_validate_reports_spec_and_mode_problems_together():
    spec = {"name": "x", "networking": {"service_cidr": "10.96.0.1/12"},
            "nodes": [{"name": "a", "address": "192.0.2.11", "roles": ["control-plane"]},
                      {"name": "b", "address": "127.0.0.300", "roles": ["worker"]}]}
    with pytest.raises(SpecError) as err:
        control.validate("all_in_one", spec)
    problems = err.value.problems
    assert any(p.startswith("networking.service_cidr:") for p in problems)
    assert any(p.startswith("nodes[1].address:") for p in problems)


def test_validate_mode_rules_and_nodes_only_for_add_nodes():
    mode, spec = control.validate("all-in-one", AIO)
    assert mode == "all_in_one" and spec["name"] == "c1"
    with pytest.raises(SpecError) as err:
        control.validate("ha", AIO)
    assert any("3 control-plane" in p for p in err.value.problems)
    with pytest.raises(SpecError) as err:
        control.validate("reset", AIO, nodes=["n1"])
    assert any(p.startswith("nodes:") for p in err.value.problems)


def test_validate_refuses_a_path_instead_of_a_mapping(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: c1\n")
    with pytest.raises(SpecError) as err:
        control.validate("all_in_one", str(path))
    assert err.value.problems == ["spec: must be a mapping (an object), not str"]


def test_rebuild_and_health_parameters():
    _, spec = control.validate("rebuild", AIO)
    assert control.flow_parameters("rebuild", spec, None, 5, "auto") == {
        "spec": spec, "mode": "auto", "lock_wait_s": 5}
    assert control.flow_parameters("health", spec, None, 5) == {"spec": spec}
    assert control.planned_steps("rebuild", {"spec": spec, "mode": "auto"})[-1] == "verify"


def test_modes_report_the_versions_tables():
    from installers import versions as V
    m = control.modes()
    assert [k["minor"] for k in m["kubernetes_versions"]] == list(V.KUBERNETES_MINORS)
    assert sum(k["default"] for k in m["kubernetes_versions"]) == 1
    assert {c["name"] for c in m["cnis"]} == set(V.CNIS)
    assert m["defaults"]["containerd"] == V.CONTAINERD_DEFAULT


def test_cluster_info_is_the_verify_steps_data_read_back():
    """verify publishes its facts as a one-row table artifact; status() returns that row (under
    the same key: run_status keeps its own copy of it)."""
    from types import SimpleNamespace
    from uuid import uuid4
    import pathlib

    from prefect.artifacts import TableArtifact

    from installers.cluster_check import ClusterReport, NodeInfo
    from installers.spec import load_spec
    from tasks.verify import FACTS_ARTIFACT_KEY, cluster_facts

    report = ClusterReport(server="https://127.0.0.1:6443", version="v1.36.4",
                           nodes=[NodeInfo("n1", ["control-plane"], True, "v1.36.4", "192.0.2.11",
                                           "2026-12-01T18:00:00Z")],
                           pods_by_namespace={"kube-system": 9, "kube-flannel": 1},
                           storage_classes=["local-path"])
    facts = cluster_facts(load_spec(AIO), report, pathlib.Path("/state/clusters/c1/admin.conf"))
    rid, state = uuid4(), SimpleNamespace(message=None)
    run = SimpleNamespace(id=rid, name="calm-fox", tags=["mode:all_in_one"], parameters={},
                          state_type=SimpleNamespace(value="COMPLETED"), state=state,
                          state_name="Completed", total_run_time=None, start_time=None,
                          end_time=None, created=None)
    published = TableArtifact(key=FACTS_ARTIFACT_KEY, table=[facts]).format(_sync=True)
    artifact = SimpleNamespace(key=FACTS_ARTIFACT_KEY, created=None, data=published)
    prefect = SimpleNamespace(read_flow_run=lambda run_id: run, read_task_runs=lambda **q: [],
                              read_artifacts=lambda **q: [artifact])

    info = control.status(str(rid), prefect)["cluster_info"]
    assert info["kubeconfig_path"] == "/state/clusters/c1/admin.conf" and info["healthy"] is True
    assert info["pod_count_by_namespace"] == {"kube-system": 9, "kube-flannel": 1}
    assert info["version"] == "v1.36.4" and info["storage_classes"] == ["local-path"]
    assert (info["cni"], info["pod_cidr"], info["service_cidr"]) == ("calico", "10.244.0.0/16",
                                                                     "10.96.0.0/12")
    assert info["nodes"] == [{"name": "n1", "roles": ["control-plane"], "ready": True,
                              "kubelet_version": "v1.36.4", "address": "192.0.2.11",
                              "created": "2026-12-01T18:00:00Z", "container_runtime": ""}]


# --- the old service's bodies ------------------------------------------------------------------

def test_old_ha_body_maps_onto_a_spec():
    req = legacy.parse("ha", {"cluster_name": "prod", "masters": ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                              "workers": ["10.0.0.4"], "load_balancer": "10.0.0.10:8443",
                              "cni_provider": "flannel", "k8s_version": "1.35",
                              "ssh_config": {"username": "admin", "key_path": "/k", "port": 2222}})
    mapped = legacy.to_spec("ha", req)
    assert not mapped.problems and not mapped.secrets
    _, spec = control.validate("ha", mapped.spec)  # nothing is contacted
    assert [n["name"] for n in spec["nodes"]] == ["master-1", "master-2", "master-3", "worker-1"]
    assert spec["control_plane_endpoint"] == {"type": "load_balancer", "address": "10.0.0.10", "port": 8443}
    assert spec["ssh"]["user"] == "admin" and spec["ssh"]["port"] == 2222
    assert spec["ssh"]["private_key_file"] == "/k" and spec["networking"]["cni"] == "flannel"


def test_old_body_password_is_only_a_block_name():
    req = legacy.parse("all_in_one", {"master": "10.0.0.1",
                                      "ssh_config": {"auth_method": "password", "password": "s3cret"}})
    mapped = legacy.to_spec("all_in_one", req)
    [(name, value)] = mapped.secrets.items()
    assert value == "s3cret" and mapped.spec["ssh"]["password_secret"] == name
    assert "s3cret" not in repr(mapped.spec) and "s3cret" not in repr(req)
    control.validate("all_in_one", mapped.spec)


def test_encrypted_key_is_opened_with_the_passphrase(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "id_ed25519"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.BestAvailableEncryption(b"phrase")))
    body = {"host": "10.0.0.1", "ssh_config": {"key_path": str(path), "key_passphrase": "phrase"}}
    mapped = legacy.to_spec("all_in_one", legacy.parse("all_in_one", body))
    [(name, text)] = mapped.secrets.items()
    assert mapped.spec["ssh"]["private_key_secret"] == name and "private_key_file" not in mapped.spec["ssh"]
    assert serialization.load_ssh_private_key(text.encode(), None).public_key().public_bytes_raw() == \
        key.public_key().public_bytes_raw()
    body["ssh_config"]["key_passphrase"] = "wrong"
    mapped = legacy.to_spec("all_in_one", legacy.parse("all_in_one", body))
    assert mapped.problems == ["ssh_config.key_passphrase: cannot open the key with this passphrase"]
    body["ssh_config"]["key_path"] = "/dev/zero"  # never read a device (or a huge file) whole
    mapped = legacy.to_spec("all_in_one", legacy.parse("all_in_one", body))
    assert mapped.problems == ["ssh_config.key_path: '/dev/zero' is not a private key file"]


def test_old_body_rbac_off_and_unknown_fields_are_refused():
    mapped = legacy.to_spec("all_in_one", legacy.parse("all_in_one", {"host": "10.0.0.1",
                                                                      "enable_rbac": False}))
    assert mapped.problems[0].startswith("enable_rbac:")
    with pytest.raises(SpecError) as err:
        legacy.parse("ha", {"masters": [], "load_balancer": "x", "colour": 1})
    assert any(p.startswith("colour:") for p in err.value.problems)
    assert any(p.startswith("masters:") for p in err.value.problems)


# --- the API with a stand-in wrapper (error mapping, auth) -------------------------------------

class FakeControl:
    canonical_mode = staticmethod(control.canonical_mode)
    validate = staticmethod(control.validate)
    modes = staticmethod(control.modes)

    def __init__(self):
        self.started = []

    def start(self, mode, spec, **kw):
        self.started.append((mode, spec, kw))
        return "00000000-0000-0000-0000-000000000001"

    @contextlib.contextmanager
    def prefect_client(self):
        yield "prefect-client"

    def status(self, run_id, client=None):
        raise control.UnknownRun(f"no installation {run_id}")

    def active_run_ids(self, client):
        return []

    def logs(self, run_id, level, limit):
        raise control.UnknownRun(f"no installation {run_id}")

    def cancel(self, run_id):
        raise control.RunFinished(f"installation {run_id} already finished (Completed)")


def test_api_maps_wrapper_errors_and_refuses_bad_tokens(caplog):
    fake = FakeControl()
    client = TestClient(create_app("t0ken", ctl=fake))
    h = {"Authorization": "Bearer t0ken"}
    with caplog.at_level(logging.WARNING, logger="kai.api"):
        assert client.get("/api/v1/installation/modes").status_code == 401
        assert client.get("/api/v1/installation/modes",
                          headers={"Authorization": "Bearer t0kem"}).status_code == 401
    assert "refused" in caplog.text and "t0kem" not in caplog.text
    r = client.post("/api/v1/installation/all-in-one/start", headers=h, json={"spec": AIO})
    assert r.status_code == 202 and r.json()["installation_id"].endswith("1")
    assert fake.started[0][0] == "all_in_one"
    assert client.get("/api/v1/installation/x/status", headers=h).status_code == 404
    r = client.post("/api/v1/installation/x/cancel", headers=h)  # the old contract: 400, not 409
    assert (r.status_code, r.json()["error"]) == (400, "Installation already completed"), r.text
    assert "already finished (Completed)" in r.json()["detail"]
    r = client.post("/api/v1/installation/reset/start", headers=h, json={"host": "10.0.0.1"})
    assert r.status_code == 400 and "only accepted for all_in_one and ha_secure" in r.json()["problems"][0]
    assert r.json()["error"].startswith("Validation failed: mode: the old flat request body")


T0, T1 = "2026-12-01T20:00:00+00:00", "2026-12-01T20:00:40.500000+00:00"
RUNNING = {"id": "r1", "name": "bench", "mode": "ha", "state": "RUNNING", "state_name": "Running",
           "final": False, "current_step": "runtime", "steps_done": 2, "total_steps": 12,
           "planned_steps": [], "percent": 16.7, "duration_s": 40.0, "start_time": T0,
           "end_time": None, "created": T0, "cluster_info": None, "preflight_findings": [],
           "failure": None,
           "steps": [{"name": "runtime", "state": "RUNNING", "attempts": 1, "start_time": T0,
                      "end_time": None, "duration_s": None, "message": None,
                      "hosts": [{"host": "cp-1", "address": "10.0.0.1", "status": "ok",
                                 "seconds": 20.0, "attempt": 1, "error": None}]}]}


class StatusControl(FakeControl):
    """A wrapper whose Prefect server knows one running run; `answer` is what a read returns
    (or raises), after `delay` seconds of blocking work (Prefect's client parsing answers)."""

    def __init__(self, active=("r1",)):
        super().__init__()
        self.active, self.reads, self.answered, self.clients = list(active), [], [], []
        self.answer: object = RUNNING
        self.delay = 0.0

    @contextlib.contextmanager
    def prefect_client(self):
        client = object()
        self.clients.append(client)
        yield client

    def status(self, run_id, client=None):
        self.reads.append((run_id, client))
        answer = self.answer
        time.sleep(self.delay)
        if isinstance(answer, Exception):
            raise answer
        self.answered.append(run_id)
        return dict(answer, id=run_id)

    def active_run_ids(self, client):
        return self.active


def no_threadpool(monkeypatch):
    """Fail any request that hops to the threadpool (sync endpoint or dependency)."""
    import fastapi.dependencies.utils
    import fastapi.routing

    async def refused(*args, **kwargs):
        raise AssertionError("the status path went through the threadpool")

    monkeypatch.setattr(fastapi.routing, "run_in_threadpool", refused)
    monkeypatch.setattr(fastapi.dependencies.utils, "run_in_threadpool", refused)


def test_a_running_run_is_read_before_its_first_poll_and_served_off_the_threadpool(monkeypatch):
    fake = StatusControl()
    h = {"Authorization": "Bearer t0ken"}
    with TestClient(create_app("t0ken", ctl=fake)) as client:  # with: the lifespan runs
        deadline = time.monotonic() + 5
        while not fake.answered:  # the tracker lists the active runs and reads them
            assert time.monotonic() < deadline, "the active run was never read"
            time.sleep(0.02)
        assert fake.answered == ["r1"]
        time.sleep(0.1)  # the answer reaches the cache (on the app's event loop)
        fake.answer = httpx.ConnectError("the Prefect server is gone")  # a read now would fail
        reads = len(fake.reads)
        no_threadpool(monkeypatch)
        r = client.get("/api/v1/installation/r1/status", headers=h)
        assert r.status_code == 200, r.text  # so this first poll was answered from the cache
        assert r.headers["content-type"] == "application/json"
        assert r.json() == legacy_status.status_envelope(dict(RUNNING, id="r1"))
        assert len(fake.reads) == reads  # no read for this poll
        # all reads went through the one client the app keeps open while it serves
        assert len(fake.clients) == 1 and {c for _, c in fake.reads} == set(fake.clients)


def test_a_slow_read_does_not_hold_up_cached_answers():
    fake = StatusControl()
    h = {"Authorization": "Bearer t0ken"}
    with TestClient(create_app("t0ken", ctl=fake)) as client:
        assert client.get("/api/v1/installation/r1/status", headers=h).status_code == 200
        fake.delay = 1.0  # from now on a read blocks its thread for a second
        slow = threading.Thread(
            target=lambda: client.get("/api/v1/installation/r2/status", headers=h))
        slow.start()
        deadline = time.monotonic() + 5
        while not any(run_id == "r2" for run_id, _ in fake.reads):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.monotonic()
        r = client.get("/api/v1/installation/r1/status", headers=h)
        took = time.monotonic() - t0
        slow.join()
    assert r.status_code == 200 and took < 0.5, took  # not after the slow read


def test_status_errors_are_answered_and_not_cached():
    fake = StatusControl(active=[])
    h = {"Authorization": "Bearer t0ken"}
    client = TestClient(create_app("t0ken", ctl=fake))  # no lifespan: a Prefect client per read
    fake.answer = control.UnknownRun("no installation r2")
    assert client.get("/api/v1/installation/r2/status", headers=h).status_code == 404
    fake.answer = httpx.ConnectError("refused")
    r = client.get("/api/v1/installation/r2/status", headers=h)
    assert r.status_code == 503 and "did not answer" in r.json()["error"]
    fake.answer = dict(RUNNING, state="COMPLETED", final=True)
    r = client.get("/api/v1/installation/r2/status", headers=h)
    assert r.status_code == 200 and r.json()["completed"] is True
    assert r.json()["success_status"] is True
    assert [run_id for run_id, _ in fake.reads] == ["r2"] * 3  # each error was read again
    assert client.get("/api/v1/installation/r2/status", headers=h).json()["completed"] is True
    assert len(fake.reads) == 3  # the final answer is kept


def test_status_reads_through_the_given_client():
    from types import SimpleNamespace
    from uuid import uuid4

    from prefect.exceptions import ObjectNotFound

    rid = uuid4()
    state = SimpleNamespace(message=None)
    run = SimpleNamespace(id=rid, name="calm-fox", tags=["kai", "mode:preflight"],
                          state_type=SimpleNamespace(value="RUNNING"), state=state,
                          state_name="Running", parameters={}, total_run_time=None,
                          start_time=None, end_time=None, created=None)
    task = SimpleNamespace(name="facts", state_type=SimpleNamespace(value="RUNNING"), state=state,
                           run_count=1, start_time=None, end_time=None, total_run_time=None)
    art = SimpleNamespace(key="step-facts", created=None,
                          data='[{"host": "n1", "address": "10.0.0.1", "status": "ok"}]')

    class Prefect:
        def read_flow_run(self, run_id):
            if run_id != rid:
                raise ObjectNotFound(None)
            return run

        def read_task_runs(self, **query):
            return [task]

        def read_artifacts(self, **query):
            return [art]

    st = control.status(str(rid), Prefect())
    assert st["id"] == str(rid) and st["mode"] == "preflight" and st["state"] == "RUNNING"
    assert st["current_step"] == "facts" and st["steps"][0]["hosts"][0]["host"] == "n1"
    with pytest.raises(control.UnknownRun):
        control.status(str(uuid4()), Prefect())
    with pytest.raises(control.UnknownRun):
        control.status("not-a-run", Prefect())


def test_a_run_is_planned_once_while_it_is_polled(monkeypatch):
    import installers.plan

    calls = []
    real = installers.plan.build_plan

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(installers.plan, "build_plan", counting)
    from deployments import run_status
    run_status._planned_steps.cache_clear()
    _, spec = control.validate("all_in_one", AIO)
    first = control.planned_steps("all_in_one", {"spec": spec})
    assert control.planned_steps("all_in_one", {"spec": spec}) == first and first
    assert calls == ["all_in_one"]
    other = dict(spec, name="c2")
    control.planned_steps("all_in_one", {"spec": other})
    assert calls == ["all_in_one", "all_in_one"]  # other parameters: planned again


def test_generated_token_file_is_private(tmp_path):
    token, where = api_token(tmp_path, None)
    mode = stat.S_IMODE(os.stat(where).st_mode)
    assert mode == 0o600 and len(token) >= 32
    assert api_token(tmp_path, None) == (token, where)  # kept across restarts
    assert api_token(tmp_path, "from-env") == ("from-env", "KAI_API_TOKEN")


def test_status_envelope_keeps_the_old_fields():
    st = {"id": "r1", "mode": "ha", "state": "FAILED", "final": True, "current_step": "runtime",
          "steps_done": 2, "total_steps": 12, "percent": 16.7, "duration_s": 40.0,
          "start_time": T0, "end_time": T1, "created": T0, "cluster_info": None,
          "preflight_findings": [], "cluster": {"kubernetes_version": "1.36", "cni": "calico"},
          "failure": {"message": "boom", "step": "runtime", "hosts": ["cp-2"]},
          "steps": [{"name": "runtime", "state": "FAILED", "duration_s": 30.0, "message": "boom",
                     "hosts": [{"host": "cp-1", "status": "ok", "seconds": 20.0, "error": None},
                               {"host": "cp-2", "status": "FAILED", "seconds": 30.0, "error": "exit code 1"}]},
                    {"name": "verify", "state": "PENDING", "duration_s": None, "message": None, "hosts": []}]}
    env = legacy_status.status_envelope(st)
    assert env["completed"] is True and env["success_status"] is False
    p = env["progress"]
    assert p["status"] == "failed" and p["error_message"].startswith("step runtime failed on cp-2")
    assert p["total_steps"] == 12 and p["progress_percentage"] == 16.7
    assert [(r["host"], r["success"]) for r in p["step_results"]] == [
        ("cp-1", True), ("cp-2", False), (None, False)]
    # the old types: a step number, epoch seconds, the run id again, every result's output
    assert p["current_step"] == 1 and p["current_step_name"] == "runtime"
    assert p["installation_id"] == "r1" and p["start_time"] == env["started_at"] == 1796155200.0
    assert p["end_time"] == 1796155240.5 and p["start_time_iso"] == T0
    assert all("output" in r and isinstance(r["duration"], float) for r in p["step_results"])
    # ended before verify: the spec's values, no nodes
    info = env["cluster_info"]
    assert (info["kubernetes_version"], info["cni_provider"], info["nodes"]) == ("1.36", "calico", [])
    assert info["mode"] == "ha" and info["installation_id"] == "r1"


def test_a_run_not_final_has_no_outcome_yet_and_counts_its_running_step():
    env = legacy_status.status_envelope(RUNNING)
    assert "success_status" not in env and "cluster_info" not in env
    assert env["progress"]["current_step"] == 1 and env["progress"]["end_time"] is None
    queued = dict(RUNNING, state="SCHEDULED", start_time=None, steps=[], duration_s=None)
    p = legacy_status.status_envelope(queued)["progress"]
    assert (p["current_step"], p["start_time"], p["duration"]) == (0, 1796155200.0, 0.0)


def test_cluster_info_carries_the_old_keys_from_verifys_facts():
    facts = {"healthy": True, "server": "https://10.0.0.1:6443", "version": "v1.36.1",
             "nodes": [{"name": "cp-1", "roles": ["control-plane"], "ready": True,
                        "kubelet_version": "v1.36.1", "address": "10.0.0.1", "created": T0},
                       {"name": "w-1", "roles": [], "ready": False, "kubelet_version": "v1.36.1",
                        "address": "10.0.0.2", "created": ""}],
             "pod_count_by_namespace": {"kube-system": 9}, "kubeconfig_path": "/s/admin.conf",
             "cluster": "c", "cni": "flannel", "pod_cidr": "10.244.0.0/16",
             "service_cidr": "10.96.0.0/12"}
    st = {"id": "r1", "mode": "all_in_one", "cluster_info": facts, "cluster": {}}
    info = legacy_status.cluster_info(st, now=1796155200.0 + 330)
    assert (info["kubernetes_version"], info["cni_provider"], info["kubeconfig_path"]) == (
        "v1.36.1", "flannel", "/s/admin.conf")
    cp, w = info["nodes"]
    assert (cp["status"], cp["roles"], cp["age"], cp["version"], cp["internal_ip"]) == (
        "Ready", "control-plane", "5m30s", "v1.36.1", "10.0.0.1")
    assert cp["role_list"] == ["control-plane"] and cp["ready"] is True  # kai's, beside
    assert (w["status"], w["roles"], w["age"]) == ("NotReady", "<none>", "<unknown>")
    assert info["pod_count_by_namespace"] == {"kube-system": 9} and info["healthy"] is True


@pytest.mark.parametrize("seconds, shown", [
    (-5, "<invalid>"), (-0.5, "0s"), (45, "45s"), (119, "119s"), (120, "2m"), (330, "5m30s"),
    (600, "10m"), (179 * 60, "179m"), (3 * 3600 + 20 * 60, "3h20m"), (8 * 3600, "8h"),
    (47 * 3600, "47h"), (2 * 86400 + 4 * 3600, "2d4h"), (3 * 86400, "3d"), (400 * 86400, "400d"),
    (3 * 365 * 86400 + 20 * 86400, "3y20d"), (9 * 365 * 86400, "9y")])
def test_ages_read_like_kubectl(seconds, shown):
    assert legacy_status.human_age(seconds) == shown


# --- hosts check (the old SSH manager's job): the API's side, no host contacted -----------------

class HostsCheckRecorder(FakeControl):
    def __init__(self):
        super().__init__()
        self.checked = []

    def check_hosts(self, spec, mode=None, secrets=None):
        mode, spec_json = control.validate(mode or "preflight", spec)
        self.checked.append((mode, spec_json, secrets))
        return mode, [{"node": n["name"], "ok": True} for n in spec_json["nodes"]]


def test_hosts_check_takes_a_spec_or_the_old_host_list():
    fake = HostsCheckRecorder()
    client = TestClient(create_app("t0ken", ctl=fake))
    h = {"Authorization": "Bearer t0ken"}
    r = client.post("/api/v1/hosts/check", headers=h, json={"spec": AIO, "mode": "all-in-one"})
    assert r.status_code == 200 and r.json()["mode"] == "all_in_one" and r.json()["ok"] is True, r.text
    r = client.post("/api/v1/hosts/check", headers=h, json={
        "hosts": ["10.0.0.1", "10.0.0.2"],
        "ssh_config": {"username": "admin", "auth_method": "password", "password": "s3cret"}})
    assert r.status_code == 200, r.text
    mode, spec, secrets = fake.checked[-1]
    assert mode == "preflight" and [n["address"] for n in spec["nodes"]] == ["10.0.0.1", "10.0.0.2"]
    # the password reaches the check in memory only: the spec names a block nobody stores
    assert list(secrets.values()) == ["s3cret"] and spec["ssh"]["password_secret"] in secrets
    assert "s3cret" not in repr(spec)
    r = client.post("/api/v1/hosts/check", headers=h, json={"hosts": ["10.0.0.1", "10.0.0.300"]})
    assert r.status_code == 400 and any(p.startswith("hosts[1] (nodes[1].address):")
                                        for p in r.json()["problems"]), r.text
    r = client.post("/api/v1/hosts/check", headers=h, json={"spec": {"name": "x"}})
    assert r.status_code == 422, r.text
    r = client.post("/api/v1/hosts/check", headers=h, json={"spec": AIO, "mode": "reset"})
    assert r.status_code == 422 and r.json()["problems"][0].startswith("mode:"), r.text  # kai's body: 422


def test_a_failed_connect_says_whether_the_host_answered_and_was_trusted():
    from deployments.hosts_check import _failed_connect
    from installers.ssh import ConnectError, HostKeyError

    assert _failed_connect(HostKeyError("host key for n1 has CHANGED")) == (True, False)
    assert _failed_connect(ConnectError("cannot connect to n1 after 3 attempt(s)")) == (False, False)
    assert _failed_connect(ConnectError("authentication failed for root@n1", retryable=False)) == (True, True)
    assert _failed_connect(RuntimeError("facts.sh exit code 2")) == (True, True)


def test_an_unexpected_error_is_a_500_in_the_old_envelope():
    class Broken(FakeControl):
        def logs(self, run_id, level, limit):
            raise RuntimeError("a bug")

    client = TestClient(create_app("t0ken", ctl=Broken()), raise_server_exceptions=False)
    r = client.get("/api/v1/installation/r1/logs", headers={"Authorization": "Bearer t0ken"})
    assert r.status_code == 500 and r.json() == {"success": False, "error": "internal error: RuntimeError"}
