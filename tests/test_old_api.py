"""An old client against `kai serve`: every request docs/old-api.md documents, over HTTP, and every
documented field's name and JSON type and every status code in the answers (the shapes are
written once, in tests/support/old_api.py; a completed install's status, with its nodes, is
checked in tests/test_flows_e2e.py).

Runs only ever target light test hosts (addresses in network namespaces this module creates): their
sshd, whose host key kai does not know (the run fails at once), or a listener this module owns that
never speaks (the run stays in its first step until it is cancelled). The old all-in-one body without a host installs on the
machine kai runs on: it is never sent here (that is the local-machine test's, on a booted host
acting as the local machine).
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support import old_api as C
from tests.support.e2e_server import kai_server, wait_final  # noqa: F401
from tests.support.netns import silent_listener

P = "/api/v1/installation"


# --- the table itself (no server) ------------------------------------------------------------------

def test_the_table_holds_every_field_the_contract_documents():
    documented = C.documented_field_names()
    assert {"estimated_duration", "pod_count_by_namespace", "internal_ip", "total_logs"} <= documented
    tabled = set().union(*(C.field_names(shape) for shape in C.ALL_SHAPES))
    assert documented - tabled == set(), "documented in docs/old-api.md, missing from the table"


@pytest.mark.parametrize("value, shape, problem", [
    ({"a": 1}, {"a": str}, "$.a: str expected, got int 1"),
    ({}, {"a": str}, "$.a: missing"),
    ({"t": "2026-12-01T20:00:00"}, {"t": C.FLOAT}, "$.t: a number expected, got str"),
    ({"n": True}, {"n": int}, "$.n: int expected, got bool True"),
    ({"s": None}, {"s": str}, "$.s: str expected, got null None"),
    ({"l": [{"x": 1}]}, {"l": [{"x": str}]}, "$.l[0].x: str expected"),
    ({"l": []}, {"l": C.NonEmpty(str)}, "$.l: a non-empty list expected"),
    ({"m": {"ns": "3"}}, {"m": C.MapOf(int)}, "$.m.ns: int expected"),
    ({"ok": 1}, {"ok": C.Const(True)}, "$.ok: True expected, got 1"),
])
def test_the_checker_names_every_difference(value, shape, problem):
    found = C.problems(value, shape)
    assert len(found) == 1 and found[0].startswith(problem), found
    assert C.problems({"a": "x", "n": 2, "t": 1.5, "s": None, "extra": 1},
                      {"a": str, "n": int, "t": C.FLOAT, "s": C.Nullable(str)}) == []


def test_kais_answers_fit_the_table_without_a_server():
    """The shapes legacy.py and legacy_status.py build, checked fast (the HTTP test below checks the served ones)."""
    from deployments import control, legacy, legacy_status
    from tests.test_control import RUNNING, T1

    C.assert_conforms(legacy.modes_envelope(control.modes()), C.MODES, "GET /modes")
    C.assert_conforms(legacy.start_envelope("r1", "ha"), C.STARTED, "start")
    C.assert_conforms(legacy_status.status_envelope(RUNNING), C.STATUS, "a running run's status")
    facts = {"version": "v1.36.1", "cni": "flannel", "kubeconfig_path": "/k", "pod_cidr": "p",
             "service_cidr": "s", "pod_count_by_namespace": {"kube-system": 3},
             "nodes": [{"name": "cp-1", "roles": ["control-plane"], "ready": True,
                        "kubelet_version": "v1.36.1", "address": "10.0.0.1", "created": T1}]}
    done = dict(RUNNING, state="COMPLETED", final=True, end_time=T1, percent=100.0,
                cluster_info=facts, steps=[dict(RUNNING["steps"][0], state="COMPLETED")])
    C.assert_conforms(legacy_status.status_envelope(done), C.STATUS_COMPLETED, "a completed run's status")
    failed = dict(done, state="FAILED", cluster_info=None, cluster={"cni": "calico"})
    C.assert_conforms(legacy_status.status_envelope(failed), C.STATUS_FINAL, "a failed run's status")
    # a run started as ha_secure answers as ha_secure, in the status and its cluster_info
    started = legacy.start_envelope("r1", "ha_secure")
    assert (started["mode"], started["kai_mode"], started["estimated_duration"]) == ("ha_secure", "ha", "15-25 minutes")
    old = legacy_status.status_envelope(dict(done, reported_mode="ha_secure"))
    assert (old["mode"], old["kai_mode"], old["cluster_info"]["mode"]) == ("ha_secure", "ha", "ha_secure")
    assert legacy_status.status_envelope(done)["mode"] == "ha"


# --- over HTTP --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nodes():
    """Five light test hosts: three masters and a worker (also the load balancer's address) for
    the ha run, one more for the all-in-one run (so the two runs never wait for each other's
    host locks)."""
    from tests.hosts.fixtures import require
    from tests.hosts.light import LightHosts

    require(booted=False)
    hosts = LightHosts(5).up()
    yield hosts
    hosts.down()


@pytest.fixture(scope="module")
def encrypted_key(tmp_path_factory):
    """An OpenSSH key file protected by a passphrase, as the old ssh_config names it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = tmp_path_factory.mktemp("old-client") / "id_ed25519"
    path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"old-passphrase")))
    path.chmod(0o600)
    return str(path)


class Answers:
    """Each answer checked against its expected code and shape; every difference is kept, and
    the test fails once at the end listing them all."""

    def __init__(self, client):
        self.client, self.failures, self.count = client, [], 0

    def expect(self, method: str, path: str, code: int, shape, **kw) -> dict:
        r = self.client.request(method, path, **kw)
        self.count += 1
        label = f"{method} {path.replace(P, '')} → {r.status_code}"
        if r.status_code != code:
            self.failures.append(f"{label}: {code} expected: {r.text[:300]}")
        try:
            body = r.json()
        except ValueError:
            self.failures.append(f"{label}: not JSON: {r.text[:200]}")
            return {}
        self.failures += [f"{label}: {p}" for p in C.problems(body, shape)]
        return body

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)


def wait_logs(client, run_id: str, level: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not client.get(f"{P}/{run_id}/logs", params={"level": level}).json().get("logs"):
        assert time.monotonic() < deadline, f"no {level} log line of {run_id} in {timeout_s} s"
        time.sleep(0.5)


def old_ssh_config(port: int, key_path: str, timeout: float) -> dict:
    return {"username": "root", "auth_method": "key", "key_path": key_path,
            "key_passphrase": "old-passphrase", "port": port, "timeout": timeout}


def check_requests_without_a_run(a: Answers, client, modes: dict, nodes) -> None:
    """Every name GET /modes advertises is accepted by start (kai's body with an empty spec: 422
    for the spec, never the path's 400); invalid old bodies and paths are 400; unknown runs 404."""
    names = [n for key, entry in modes.get("modes", {}).items()
             for n in (key, entry.get("mode", key), *entry.get("aliases", []))]
    for name in dict.fromkeys(names):
        r = client.post(f"{P}/{name}/start", json={"spec": {}})
        a.check(r.status_code == 422, f"POST /{name}/start: advertised, refused: {r.text[:200]}")
    a.expect("POST", f"{P}/kind/start", 400, C.ERROR, json={"spec": {}})
    body = a.expect("POST", f"{P}/ha_secure/start", 400, C.ERROR,
                    json={"load_balancer": nodes[3].address})
    a.check(body.get("error") == "Validation failed: Missing required field: masters",
            f"the documented error text: {body.get('error')!r}")
    a.expect("POST", f"{P}/all_in_one/start", 400, C.ERROR,
             json={"host": nodes[0].address, "pod_cidr": "nope", "enable_rbac": "maybe"})
    for missing in (str(uuid.uuid4()), "not-a-run"):
        for method, path in (("GET", "status"), ("GET", "logs"), ("POST", "cancel")):
            body = a.expect(method, f"{P}/{missing}/{path}", 404, C.ERROR)
            a.check(body.get("error") == C.NOT_FOUND, f"{path} {missing}: {body.get('error')!r}")


@pytest.mark.e2e
def test_every_documented_request_gets_the_old_codes_and_shapes(kai_server, nodes,  # noqa: F811
                                                                   encrypted_key):
    t0 = time.monotonic()
    with kai_server.client() as client, silent_listener(nodes[0]) as silent:
        a = Answers(client)
        modes = a.expect("GET", f"{P}/modes", 200, C.MODES)

        # the documented ha_secure body: it waits at SSH on the silent listener until cancelled
        ha_body = {"k8s_version": "1.36", "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12",
                   "cni_provider": "flannel", "cluster_name": "old-ha", "enable_rbac": True,
                   "masters": [n.address for n in nodes[:3]], "workers": [nodes[3].address],
                   "load_balancer": nodes[3].address,
                   "ssh_config": old_ssh_config(silent.port, encrypted_key, 120)}
        ha = a.expect("POST", f"{P}/ha_secure/start", 202, C.STARTED, json=ha_body)
        a.check(ha.get("mode") == "ha_secure", f"started as ha_secure, answered as {ha.get('mode')!r}")
        # the documented all_in_one body (with a host: see the module's docstring): fails at once
        # (the light host's sshd answers with a key nobody knows: never retried)
        aio_body = {"k8s_version": "1.36", "pod_cidr": "10.244.0.0/16",
                    "service_cidr": "10.96.0.0/12", "cni_provider": "flannel",
                    "cluster_name": "old-aio", "enable_rbac": True, "enable_monitoring": False,
                    "host": nodes[4].address,
                    "ssh_config": old_ssh_config(nodes[4].ssh_port, encrypted_key, 5)}
        aio = a.expect("POST", f"{P}/all_in_one/start", 202, C.STARTED, json=aio_body)
        assert not a.failures, "\n".join(a.failures)  # nothing below works without the runs
        ha_id, aio_id = ha["installation_id"], aio["installation_id"]
        timings = {"started": time.monotonic() - t0}

        check_requests_without_a_run(a, client, modes, nodes)  # while the runner picks the runs up

        # a running run's status (no outcome yet), once it waits in its first step
        deadline = time.monotonic() + 120
        while True:
            st = client.get(f"{P}/{ha_id}/status").json()
            if st["progress"]["status"] == "running" and st["progress"]["current_step"] >= 1:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.3)
        timings["running"] = time.monotonic() - t0
        st = a.expect("GET", f"{P}/{ha_id}/status", 200, C.STATUS)
        a.check(st.get("mode") == "ha_secure", f"status of an ha_secure run: mode {st.get('mode')!r}")
        a.check("success_status" not in st and st["progress"]["end_time"] is None,
                f"a running run has no outcome: {st.get('success_status')!r}")
        wait_logs(client, ha_id, "INFO")  # log lines reach the server in batches, ~2 s apart
        logs = a.expect("GET", f"{P}/{ha_id}/logs", 200, C.LOGS, params={"level": "INFO", "limit": 5})
        a.check(0 < logs["total_logs"] == len(logs["logs"]) <= 5, f"limit 5: {logs['total_logs']}")
        a.check({e["level"] for e in logs["logs"]} <= set(C.LEVELS[1:]), f"INFO+: {logs['logs']}")
        a.expect("POST", f"{P}/{ha_id}/cancel", 200, C.CANCELLED)
        # the cancel's cleanup connects again: refused at once, not left waiting for a banner
        silent.proc.kill()
        t_cancel = time.monotonic()
        timings["cancel"] = t_cancel - t0

        # a failed run: its outcome, its error lines, a cancel is 400; invalid queries are 400
        for run_id in (aio_id, ha_id):
            wait_final(client, run_id, 180)
            timings[run_id] = time.monotonic() - t_cancel
            st = a.expect("GET", f"{P}/{run_id}/status", 200, C.STATUS_FINAL)
            a.check(st["success_status"] is False, f"{run_id}: failed or cancelled, not a success")
            body = a.expect("POST", f"{P}/{run_id}/cancel", 400, C.ERROR)
            a.check(body["error"] == C.ALREADY_COMPLETED, f"cancel finished: {body['error']!r}")
            if run_id == aio_id:
                wait_logs(client, aio_id, "ERROR")
                errors = a.expect("GET", f"{P}/{aio_id}/logs", 200, C.LOGS, params={"level": "ERROR"})
                a.check({e["level"] for e in errors["logs"]} <= {"ERROR", "CRITICAL"},
                        f"level=ERROR: {errors['logs'][:3]}")
                a.expect("GET", f"{P}/{aio_id}/logs", 400, C.ERROR, params={"level": "LOUD"})
                a.expect("GET", f"{P}/{aio_id}/logs", 400, C.ERROR, params={"limit": 0})
    print(f"\nold-client contract: {a.count} requests checked in {time.monotonic() - t0:.1f} s "
          f"(runs started after {timings['started']:.1f} s, ha running at {timings['running']:.1f} s, "
          f"cancelled at {timings['cancel']:.1f} s; after the cancel, all_in_one final "
          f"+{timings[aio_id]:.1f} s, ha +{timings[ha_id]:.1f} s)")
    assert not a.failures, "\n".join(a.failures)
