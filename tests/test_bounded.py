"""Failures end in bounded time (issue #10 §2): one capped backoff for every retry schedule, a
deadline instead of retries for the polling steps, and a final message naming every failing check."""

from __future__ import annotations

import itertools
import re
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from installers.backoff import capped_exponential
from installers.addons import MONITORING_WORKLOADS
from installers.cluster_check import CHECKS, NOT_CHECKED, ClusterReport, check_cluster
from installers.cluster_poll import poll_until_healthy, unhealthy_message
from installers.plan import DEFAULT_POLICIES, StepPolicy, build_plan
from installers.spec import POLLING_STEP_KINDS, STEP_KINDS, SpecError, load_spec
from tests.spec_factory import aio, ha
from tests.support.ports import closed_port

HOUR = 3600.0


# --- the one backoff ----------------------------------------------------------------------------

def test_capped_exponential_doubles_then_stays_at_the_cap():
    assert capped_exponential(10, 6, 60) == [10, 20, 40, 60, 60, 60]
    assert capped_exponential(5, 0, 60) == []
    assert capped_exponential(0, 3, 60) == [0, 0, 0]
    assert capped_exponential(100, 2, 30) == [30, 30]  # a first wait above the cap is capped too


def test_the_old_verify_schedule_is_now_bounded():
    # 20 retries doubling from 10 s were ~121 days of waiting; capped they are 20 minutes at most
    assert sum(10 * 2**i for i in range(20)) > 120 * 86400
    assert sum(capped_exponential(10, 20, 60)) == 10 + 20 + 40 + 17 * 60


def test_the_largest_schedule_the_spec_allows_is_bounded_and_finite():
    delays = capped_exponential(3600, 100, 3600)  # steps: {retries: 100, retry_delay_s: 3600, …}
    assert len(delays) == 100 and max(delays) == 3600 and sum(delays) == 100 * 3600


def test_negative_backoff_values_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        capped_exponential(-1, 3, 60)


# --- every step kind has a bounded schedule --------------------------------------------------------

def test_every_step_kind_has_a_default_policy():
    assert set(DEFAULT_POLICIES) == set(STEP_KINDS)


@pytest.mark.parametrize("kind", STEP_KINDS)
def test_every_kind_has_a_capped_schedule_and_a_time_bound(kind):
    policy = DEFAULT_POLICIES[kind]
    delays = policy.retry_delays()
    assert len(delays) == policy.retries
    assert all(d <= policy.max_retry_delay_s for d in delays), delays
    assert sum(delays) <= policy.retries * policy.max_retry_delay_s
    assert policy.time_bound_s() <= HOUR, f"{kind} may take {policy.time_bound_s():.0f} s before it fails"
    if kind in POLLING_STEP_KINDS:
        assert policy.polling and policy.retries == 0 and delays == []
        assert policy.time_bound_s() == policy.deadline_s + policy.timeout_s
    else:
        assert not policy.polling
        assert policy.time_bound_s() == (policy.retries + 1) * policy.timeout_s + sum(delays)


@pytest.mark.parametrize("kind", [k for k in STEP_KINDS if k not in POLLING_STEP_KINDS])
def test_even_the_largest_overrides_keep_every_retrying_kind_bounded(kind):
    spec = load_spec(aio(steps={kind: {"retries": 100, "retry_delay_s": 3600, "max_retry_delay_s": 3600,
                                       "timeout_s": 86400}}))
    policy = _policy(spec, kind)
    assert sum(policy.retry_delays()) == 100 * 3600
    assert policy.time_bound_s() == 101 * 86400 + 100 * 3600


def _policy(spec, kind) -> StepPolicy:
    from installers.plan import policy_for
    return policy_for(spec, kind)


def test_polling_defaults_install_10_min_health_2_min():
    spec = load_spec(ha())
    install = build_plan(spec, "ha").step("verify")
    health = build_plan(spec, "health").step("verify")
    assert (install.kind, install.policy.deadline_s, install.policy.retries) == ("verify", 600, 0)
    assert (health.kind, health.policy.deadline_s, health.policy.retries) == ("health", 120, 0)


def test_verify_and_health_deadlines_are_overridden_apart():
    spec = load_spec(ha(steps={"health": {"deadline_s": 20}, "verify": {"deadline_s": 300, "timeout_s": 5}}))
    assert build_plan(spec, "health").step("verify").policy.deadline_s == 20
    install = build_plan(spec, "ha").step("verify").policy
    assert (install.deadline_s, install.timeout_s) == (300, 5)


def test_a_first_wait_above_the_default_cap_raises_the_cap_with_it():
    spec = load_spec(aio(steps={"runtime": {"retry_delay_s": 120, "retries": 2}}))
    assert _policy(spec, "runtime").retry_delays() == [120, 120]
    spec = load_spec(aio(steps={"runtime": {"retry_delay_s": 1, "max_retry_delay_s": 3, "retries": 4}}))
    assert _policy(spec, "runtime").retry_delays() == [1, 2, 3, 3]


def test_prefect_gets_the_capped_schedule():
    from tasks.step_task import backoff
    spec = load_spec(aio(steps={"runtime": {"retries": 60, "retry_delay_s": 10}}))
    step = build_plan(spec, "all_in_one").step("runtime")
    delays = backoff(step)
    # Prefect takes at most 50 delays and repeats the last: the cap, as the full schedule would
    assert len(delays) == 50 and delays[-1] == step.policy.retry_delays()[-1] == 60
    assert delays[:4] == [10, 20, 40, 60]


# --- the steps: section's validation ----------------------------------------------------------------

def test_bad_step_policies_are_all_reported_naming_the_field():
    with pytest.raises(SpecError) as exc:
        load_spec(aio(steps={
            "verify": {"retries": 5, "retry_delay_s": 10},
            "runtime": {"deadline_s": 30, "retry_delay_s": 20, "max_retry_delay_s": 5},
            "health": {"deadline_s": 0},
            "join": {"max_retry_delay_s": 7200},
        }))
    problems = exc.value.problems
    expected = [
        "steps.verify.retries: verify polls the cluster until deadline_s instead of retrying",
        "steps.verify.retry_delay_s: verify polls the cluster until deadline_s instead of retrying",
        "steps.runtime.deadline_s: only the polling steps (verify, health, verify_removal) take a deadline",
        "steps.runtime.max_retry_delay_s: 5 s is below retry_delay_s 20 s",
        "steps.health.deadline_s: Input should be greater than 0",
        "steps.join.max_retry_delay_s: Input should be less than or equal to 3600",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)
    assert len(problems) == len(expected), problems


def test_unknown_step_kind_suggests_health():
    with pytest.raises(SpecError) as exc:
        load_spec(aio(steps={"helth": {"deadline_s": 20}}))
    assert any(p.startswith("steps.helth (key)") for p in exc.value.problems), exc.value.problems


# --- kai plan shows every step's schedule or deadline ----------------------------------------------

def test_kai_plan_prints_each_steps_waits_deadline_and_bound(capsys, tmp_path):
    import yaml

    from deployments.cli import main
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(ha(steps={"runtime": {"retries": 6}, "health": {"deadline_s": 20}})))
    assert main(["plan", str(path), "--mode", "ha"]) == 0
    out = capsys.readouterr().out
    assert ("policy: retries=6 retry_delay=10s max_retry_delay=60s timeout=600s (parallel); "
            "waits 10s, 20s, 40s, 60s ×3; fails within 4450s") in out
    assert "policy: polls every 3s until deadline=600s, timeout=10s per look, no retries; fails within 610s" in out
    assert main(["plan", str(path), "--mode", "health"]) == 0
    out = capsys.readouterr().out
    assert "verify [health]" in out and "until deadline=20s" in out and "fails within 30s" in out


# --- polling: until healthy or the deadline, naming every failing check -----------------------------

def _report(failed: dict[str, list[str]] | None = None, unchecked=()) -> ClusterReport:
    report = ClusterReport(server="https://127.0.0.1:6443")
    for check, problems in (failed or {}).items():
        for problem in problems:
            report.fail(check, problem)
    report.unchecked = list(unchecked)
    return report


def test_poll_stops_at_the_deadline_naming_every_failing_check_with_its_last_error():
    looks: list[float] = []

    def look(deadline: float) -> ClusterReport:
        n = len(looks)
        looks.append(deadline)
        failed = {"api": [f"API server unreachable (look {n})"], "nodes": [f"node a is not Ready (look {n})"],
                  "pods": ["no pods in kube-system"]}
        if n == 0:
            failed["storage"] = ["storage class local-path missing"]  # fixed after the first look
        return _report(failed, unchecked=["certificates"] if n else [])

    deadline_s = 1.0
    t0 = time.monotonic()
    outcome = poll_until_healthy(look, deadline_s, poll_s=0.05)
    elapsed = time.monotonic() - t0
    assert deadline_s - 0.05 <= elapsed <= deadline_s + 2.0, elapsed  # margin: a loaded machine
    assert len(looks) >= 3 and len(set(looks)) == 1  # every look is told the same deadline
    assert not outcome.healthy and outcome.looks == len(looks)
    last = len(looks) - 1
    assert outcome.failing == {
        "api": [f"API server unreachable (look {last})"],
        "nodes": [f"node a is not Ready (look {last})"],
        "pods": ["no pods in kube-system"],
        "certificates": [NOT_CHECKED],  # cut off in every look after the first, never really checked
    }
    message = unhealthy_message("c1", outcome, deadline_s)
    assert message.splitlines()[0].startswith("cluster c1 is not healthy after 1 s (deadline 1 s, ")
    assert "failing checks: api, nodes, pods, certificates" in message
    for check, errors in outcome.failing.items():
        assert f"  {check}: {errors[0]}" in message
    assert "storage" not in message.split("failing checks:")[1]


def test_a_check_cut_off_by_the_deadline_keeps_its_last_real_error():
    reports = itertools.chain([_report({"certificates": ["cannot read the API server certificate: refused"]})],
                              itertools.repeat(_report(unchecked=["certificates"])))
    outcome = poll_until_healthy(lambda deadline: next(reports), 0.5, poll_s=0.1)
    assert outcome.looks >= 2 and outcome.report.unchecked == ["certificates"]
    assert outcome.failing == {"certificates": ["cannot read the API server certificate: refused"]}


def test_poll_returns_as_soon_as_the_cluster_is_healthy():
    reports = iter([_report({"nodes": ["node a is not Ready"]}), _report()])
    waited: list[list[str]] = []
    outcome = poll_until_healthy(lambda deadline: next(reports), 60, poll_s=0.01,
                                 on_wait=lambda r: waited.append(r.problems))
    assert outcome.healthy and outcome.looks == 2 and outcome.failing == {}
    assert waited == [["node a is not Ready"]] and outcome.elapsed_s < 30


def test_a_cancel_cuts_the_pause_short():
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    outcome = poll_until_healthy(lambda deadline: _report({"api": ["down"]}), 60, poll_s=30, stop=stop)
    assert time.monotonic() - t0 < 20 and not outcome.healthy and outcome.failing == {"api": ["down"]}


# --- one look at a cluster whose API server is down (a closed loopback port) ------------------------

sys.path.insert(0, str(Path(__file__).parent / "hosts" / "standins"))
import standin_pki as pki  # noqa: E402


def _kubeconfig_for(tmp_path: Path, server: str) -> Path:
    ca_key, ca = pki.new_ca()
    key, cert = pki.issue(ca_key, ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
    path = tmp_path / "admin.conf"
    path.write_text(pki.kubeconfig(server, pki.cert_pem(ca), "kubernetes-admin", pki.cert_pem(cert),
                                   pki.key_pem(key)))
    return path


def test_api_server_down_fails_every_check_with_its_own_error(tmp_path):
    server = f"https://127.0.0.1:{closed_port()}"
    report = check_cluster(_kubeconfig_for(tmp_path, server), ["node-1"], expect_storage_class="local-path",
                           expect_workloads=MONITORING_WORKLOADS, timeout=5)
    assert not report.healthy and report.unchecked == []
    assert list(report.failed_checks) == list(CHECKS)
    assert report.failed_checks["api"][0].startswith(f"API server {server} unreachable: GET /readyz: ConnectError")
    assert report.failed_checks["etcd"][0].startswith("GET /readyz/etcd: ConnectError")
    assert report.failed_checks["nodes"][0].startswith("GET /api/v1/nodes: ConnectError")
    assert report.failed_checks["pods"][0].startswith("GET /api/v1/pods: ConnectError")
    assert report.failed_checks["storage"][0].startswith("GET /apis/storage.k8s.io/v1/storageclasses: ConnectError")
    assert report.failed_checks["workloads"][0].startswith(
        "GET /apis/apps/v1/namespaces/kube-system/deployments/metrics-server: ConnectError")
    assert report.failed_checks["certificates"][0].startswith("cannot read the API server certificate: ")
    assert all("Connection refused" in errors[0] for errors in report.failed_checks.values()), report.failed_checks


def test_a_look_past_its_deadline_checks_nothing_and_says_so(tmp_path):
    server = f"https://127.0.0.1:{closed_port()}"
    report = check_cluster(_kubeconfig_for(tmp_path, server), ["node-1"], deadline=time.monotonic() - 1)
    assert report.unchecked == list(CHECKS) and not report.healthy and report.problems == []


def test_a_silent_api_server_cannot_hold_a_look_past_its_deadline(tmp_path):
    # a loopback listener that never answers: the TCP connection opens, the TLS handshake hangs
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        server = f"https://127.0.0.1:{silent.getsockname()[1]}"
        kubeconfig = _kubeconfig_for(tmp_path, server)
        t0 = time.monotonic()
        outcome = poll_until_healthy(
            lambda deadline: check_cluster(kubeconfig, ["node-1"], timeout=10, deadline=deadline),
            2.0, poll_s=0.5)
        elapsed = time.monotonic() - t0
    # each request is cut to the time left (at least 1 s): the first request alone would otherwise
    # wait its 10 s timeout (the margin is for a loaded machine)
    assert elapsed < 8, elapsed
    assert re.match(rf"API server {server} unreachable: GET /readyz: (Connect|Read)Timeout",
                    outcome.failing["api"][0]), outcome.failing["api"]
    assert set(outcome.failing) == set(CHECKS)
    assert all(outcome.failing[c] == [NOT_CHECKED] for c in CHECKS if c not in ("api", "etcd", "nodes")), \
        outcome.failing
