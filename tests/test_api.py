"""The REST API over real HTTP against `kai serve` (real Prefect server, served deployments).

Runs only ever target a node inside a network namespace this module creates (a light test host:
nodes on loopback are refused by the spec), on a port where nothing listens or where a listener
the test owns never speaks.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from installers import versions as V
from tests.support.e2e_server import kai_server, wait_final  # noqa: F401
from tests.support.netns import netns_node, node_spec, silent_listener  # noqa: F401  (fixture)
from tests.support.ports import closed_port

pytestmark = pytest.mark.e2e
P = "/api/v1/installation"


@pytest.fixture(scope="module")
def failed_run(kai_server, netns_node):  # noqa: F811
    """A preflight run that fails fast: SSH to a port where nothing listens (22 is sshd's)."""
    with kai_server.client() as c:
        t0 = time.monotonic()
        spec = node_spec("fails-fast", netns_node.address, closed_port())
        r = c.post(f"{P}/preflight/start", json={"spec": spec})
        assert r.status_code == 202, r.text
        run_id = r.json()["installation_id"]
        running_at = None
        latencies = []
        while True:
            t1 = time.monotonic()
            body = c.get(f"{P}/{run_id}/status").json()
            latencies.append(time.monotonic() - t1)
            if running_at is None and body["state"] not in ("SCHEDULED", "PENDING"):
                running_at = time.monotonic() - t0
            if body["completed"]:
                break
            assert time.monotonic() - t0 < 120, body
            time.sleep(0.25)
    print(f"\ncreate→Running {running_at:.1f} s; final after {time.monotonic() - t0:.1f} s; "
          f"status latency median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")
    return run_id, body


def test_every_endpoint_needs_the_token(kai_server):  # noqa: F811
    run_id = str(uuid.uuid4())
    calls = [("GET", f"{P}/modes"), ("POST", f"{P}/all_in_one/start"), ("GET", f"{P}/{run_id}/status"),
             ("GET", f"{P}/{run_id}/logs"), ("POST", f"{P}/{run_id}/cancel")]
    wrong = "wrong-" + kai_server.token[::-1]
    with httpx.Client(base_url=kai_server.api_url, timeout=30) as c:
        for method, path in calls:
            for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": kai_server.token}):
                r = c.request(method, path, headers=headers, json={} if method == "POST" else None)
                assert r.status_code == 401, (method, path, headers.keys(), r.text)
                assert r.json()["success"] is False
        assert c.get("/healthz").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/docs").status_code == 200
    time.sleep(0.5)
    logs = kai_server.log_text()
    assert "refused GET /api/v1/installation/modes" in logs
    assert kai_server.token not in logs and wrong not in logs


def test_invalid_spec_is_422_with_every_problem(kai_server):  # noqa: F811
    spec = {"name": "Bad_Name",
            "networking": {"pod_cidr": "10.244.0.1/16", "cni": "weave"},
            "nodes": [{"name": "n1", "address": "10.0.0.300", "roles": ["control-plane"]},
                      {"name": "n1", "address": "127.0.0.1", "roles": ["worker"], "colour": "red"}]}
    with kai_server.client() as c:
        r = c.post(f"{P}/all_in_one/start", json={"spec": spec})
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    for expected in ("name:", "networking.pod_cidr:", "networking.cni:", "nodes[0].address:",
                     "nodes[1].name:", "nodes[1].colour:"):
        assert any(p.startswith(expected) for p in problems), (expected, problems)


def test_old_body_problems_use_old_field_names(kai_server):  # noqa: F811
    body = {"cluster_name": "old", "masters": ["127.0.0.1", "bad-ip"], "pod_cidr": "nope",
            "load_balancer": "127.0.0.1:6443", "ssh_config": {"auth_method": "password"}}
    with kai_server.client() as c:
        r = c.post(f"{P}/ha_secure/start", json=body)
    assert r.status_code == 400, r.text  # the old contract's code for an invalid old body
    assert r.json()["error"].startswith("Validation failed: ")
    problems = r.json()["problems"]
    assert any(p.startswith("ssh_config.password:") for p in problems), problems
    assert any(p.startswith("masters[1] (nodes[1].address):") for p in problems), problems
    assert any(p.startswith("pod_cidr (networking.pod_cidr):") for p in problems), problems
    assert any("3 control-plane" in p for p in problems), problems


def test_modes_come_from_the_versions_tables(kai_server):  # noqa: F811
    with kai_server.client() as c:
        body = c.get(f"{P}/modes").json()
    assert body["success"] is True
    names = {m["name"] for m in body["mode_list"]}  # kai's list (`modes` is the old object)
    assert {"all_in_one", "ha", "add_nodes", "reset", "rebuild", "preflight", "health", "upgrade", "etcd_backup",
            "remove_nodes", "certs", "etcd_restore"} == names
    assert [k["minor"] for k in body["kubernetes_versions"]] == list(V.KUBERNETES_MINORS)
    assert {c["name"]: c["version"] for c in body["cnis"]} == {n: c.version for n, c in V.CNIS.items()}
    assert body["defaults"]["kubernetes_version"] == V.DEFAULT_KUBERNETES_MINOR


def test_status_of_a_failed_run_names_step_host_and_error(failed_run):
    run_id, body = failed_run
    assert body["success"] is True and body["installation_id"] == run_id
    assert body["completed"] is True and body["success_status"] is False
    assert body["state"] == "FAILED" and body["mode"] == "preflight"
    progress = body["progress"]
    assert progress["status"] == "failed"
    assert progress["total_steps"] == 1 and progress["current_step_name"] == "facts"
    assert progress["current_step"] == 1
    assert progress["start_time"] and progress["end_time"] and progress["duration"] > 0
    assert "n1" in progress["error_message"] and "facts" in progress["error_message"]
    [result] = progress["step_results"]
    assert result["step_name"] == "facts" and result["host"] == "n1" and result["success"] is False
    assert "refused" in result["error_message"].lower() or "connect" in result["error_message"].lower()
    assert body["failure"]["step"] == "facts" and body["failure"]["hosts"] == ["n1"]


def test_logs_filter_by_level_and_limit(kai_server, failed_run):  # noqa: F811
    run_id, _ = failed_run
    with kai_server.client() as c:
        everything = c.get(f"{P}/{run_id}/logs", params={"limit": 1000}).json()
        errors = c.get(f"{P}/{run_id}/logs", params={"level": "ERROR"}).json()
        one = c.get(f"{P}/{run_id}/logs", params={"limit": 1}).json()
        bad = c.get(f"{P}/{run_id}/logs", params={"level": "LOUD"})
    levels = {e["level"] for e in everything["logs"]}
    assert "INFO" in levels and "ERROR" in levels, levels
    assert errors["logs"] and {e["level"] for e in errors["logs"]} <= {"ERROR", "CRITICAL"}
    assert errors["total_logs"] == len(errors["logs"]) < everything["total_logs"]
    assert one["total_logs"] == 1 and one["logs"][0] == everything["logs"][-1]  # the latest line
    assert set(everything["logs"][0]) >= {"timestamp", "level", "message", "source"}
    assert bad.status_code == 400


def test_cancel_finished_is_400_unknown_is_404(kai_server, failed_run):  # noqa: F811
    run_id, _ = failed_run
    with kai_server.client() as c:
        assert c.post(f"{P}/{run_id}/cancel").status_code == 400  # the old contract's code
        assert c.post(f"{P}/{uuid.uuid4()}/cancel").status_code == 404
        assert c.post(f"{P}/not-a-run/cancel").status_code == 404
        assert c.get(f"{P}/{uuid.uuid4()}/status").status_code == 404
        assert c.get(f"{P}/{uuid.uuid4()}/logs").status_code == 404


@pytest.fixture()
def silent_ssh_port(netns_node):
    with silent_listener(netns_node) as listener:
        yield listener.port


def active_runs(kai_server) -> list[str]:  # noqa: F811
    """What the API's status tracker keeps warm: the server's non-final runs."""
    from deployments import control

    with kai_server.prefect(), control.prefect_client() as client:
        return control.active_run_ids(client)


def test_cancel_a_running_run(kai_server, netns_node, silent_ssh_port):  # noqa: F811
    spec = node_spec("hangs", netns_node.address, silent_ssh_port, timeout=120)
    with kai_server.client() as c:
        run_id = c.post(f"{P}/preflight/start", json={"spec": spec}).json()["installation_id"]
        deadline = time.monotonic() + 60
        while c.get(f"{P}/{run_id}/status").json()["state"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert run_id in active_runs(kai_server)
        time.sleep(1)
        t0 = time.monotonic()
        r = c.post(f"{P}/{run_id}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "Cancelling", r.text
        body = wait_final(c, run_id, 120)
    print(f"\ncancel → {body['state']} in {time.monotonic() - t0:.1f} s")
    assert body["state"] == "CANCELLED" and body["progress"]["status"] == "cancelled"
    assert run_id not in active_runs(kai_server)


def test_old_body_password_goes_to_a_secret_block_not_the_parameters(kai_server, netns_node):  # noqa: F811
    password = "pw-" + uuid.uuid4().hex
    body = {"cluster_name": "legacy-aio", "host": netns_node.address, "k8s_version": "1.36",
            "cni_provider": "flannel", "enable_monitoring": True,
            "ssh_config": {"username": "root", "auth_method": "password", "password": password,
                           "port": closed_port(), "timeout": 2}}
    with kai_server.client() as c:
        r = c.post(f"{P}/all-in-one/start", json=body)
        assert r.status_code == 202, r.text
        answer = r.json()
        assert answer["mode"] == "all_in_one"
        [block] = answer["secret_blocks"]
        run_id = answer["installation_id"]
        wait_final(c, run_id)
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    with kai_server.prefect():
        with get_client(sync_client=True) as client:
            params = client.read_flow_run(uuid.UUID(run_id)).parameters
        assert password not in repr(params)
        assert params["spec"]["ssh"]["password_secret"] == block
        assert params["spec"]["networking"]["cni"] == "flannel"
        assert params["spec"]["addons"]["monitoring"] is True  # enable_monitoring does it
        assert Secret.load(block).get() == password
    assert password not in kai_server.log_text()
