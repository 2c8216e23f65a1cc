"""Schedules and alerts from `kai serve` (issue #12 §4), end to end: a `kai serve` of this module
(it is restarted, so not the session's), real Prefect scheduler and automations, a loopback
webhook receiver, and a light test host in a network namespace as the cluster's only node, on a
port where nothing listens: every scheduled health run fails fast at its kubeconfig step.

One scenario, chained: refused schedules create nothing → two clusters scheduled on the health
deployment (REST and CLI) → alerts set → listed → kai serve restarted: schedules still there → the
every-minute schedule fires, its run gets the cluster's spec and fails → the alert names cluster,
run and failing step within seconds → an expiring-certificate event alerts too → removed (CLI, REST).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployments import alerts
from tests.support.e2e_server import ROOT, quiet_env, start_kai_serve
from tests.support.netns import netns_node, node_spec  # noqa: F401  (fixture)
from tests.support.ports import closed_port, free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e
S = "/api/v1/schedules"
ALERT_DEADLINE_S = 30


class Receiver:
    """A webhook on loopback: every POSTed JSON body with the time it arrived."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((time.time(), json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def matching(self, *words: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.received
                if all(w in m.get("subject", "") + m.get("body", "") for w in words)]


@pytest.fixture(scope="module")
def served():
    state_dir = Path(tempfile.mkdtemp(prefix="kai-sched-"))
    prefect_port = free_port()
    server = start_kai_serve(state_dir, prefect_port=prefect_port)
    box = {"server": server, "prefect_port": prefect_port}
    yield box
    left = box["server"].stop()
    assert not left, left


def kai(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "kai"), *args], cwd=ROOT,
                          env=quiet_env(KAI_STATE_DIR=str(state_dir)), capture_output=True,
                          text=True, timeout=120)


def runs_of(server, schedule_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with server.prefect(), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["health"])), limit=200)
    return [r for r in runs if r.created_by and str(r.created_by.id) == schedule_id]


def automation_events(server) -> list:
    import httpx
    events = httpx.post(server.prefect_api_url + "/events/filter", json={"limit": 50, "filter": {"event": {"prefix": ["prefect.automation"]}}}, timeout=30).json()
    return [(e["event"], e["occurred"], e["payload"]) for e in events.get("events", [])
            if e["event"].startswith("prefect.automation")]


def test_schedules_fire_survive_a_restart_and_alert(served, netns_node):  # noqa: F811
    server = served["server"]
    t_start = time.monotonic()
    port = closed_port()
    spec_a = node_spec("sched-a", netns_node.address, port) | {"steps": {"kubeconfig": {"retries": 0}}}
    spec_b = node_spec("sched-b", netns_node.address, port)
    password = "pw-" + uuid.uuid4().hex

    with server.client() as c:
        # refused: every problem at once, nothing created, the inline password never echoed
        bad = spec_a | {"ssh": {**spec_a["ssh"], "password": password, "password_secret": "no-such-block"}}
        r = c.post(S, json={"spec": bad, "mode": "health", "cron": "61 * * * *"})
        assert r.status_code == 422, r.text
        problems = r.json()["problems"]
        assert any(p.startswith("ssh.password") or "password:" in p for p in problems), problems
        assert any(p.startswith("cron") for p in problems), problems
        assert password not in r.text
        r = c.post(S, json={"spec": spec_a | {"ssh": {**spec_a["ssh"], "password_secret": "no-such-block"}},
                            "mode": "health", "cron": "* * * * *"})
        assert r.status_code == 422 and any("no-such-block" in p for p in r.json()["problems"]), r.text
        assert c.get(S).json()["schedules"] == []

        r = c.post(S, json={"spec": spec_a, "mode": "health", "cron": "* * * * *"})
        assert r.status_code == 201, r.text
        a = r.json()["schedule"]
        assert a["cluster"] == "sched-a" and a["mode"] == "health" and a["next_run"], a

    cli = kai(server.state_dir, "schedule", "add", str(_write(server.state_dir, spec_b)),
              "--mode", "health", "--cron", "0 3 * * *")
    assert cli.returncode == 0, cli.stderr
    assert "health of cluster sched-b at '0 3 * * *'" in cli.stdout, cli.stdout

    def listed(srv) -> dict:
        with srv.client() as c:
            return {e["cluster"]: e for e in c.get(S).json()["schedules"]}

    # alerts set before the restart: the automations and the block must survive it
    receiver = Receiver()
    with server.client() as c:
        r = c.put("/api/v1/alerts", json={"webhook": receiver.url})
        assert r.status_code == 200, r.text

    before = listed(server)
    assert set(before) == {"sched-a", "sched-b"}, before
    assert {e["deployment"] for e in before.values()} == {"health/health"}
    assert before["sched-b"]["cron"] == "0 3 * * *" and before["sched-b"]["next_run"].endswith("03:00:00+00:00")

    # a restart re-registers every deployment: the schedules must stay
    assert server.stop() == []
    t0 = time.monotonic()
    server = served["server"] = start_kai_serve(server.state_dir, prefect_port=served["prefect_port"])
    restart_s = time.monotonic() - t0
    restarted_at = datetime.now(timezone.utc)
    after = listed(server)
    assert {k: v["id"] for k, v in after.items()} == {k: v["id"] for k, v in before.items()}, after
    cli = kai(server.state_dir, "schedule", "list")
    assert cli.returncode == 0 and "sched-a" in cli.stdout and "sched-b" in cli.stdout, cli
    with server.client() as c:
        kept = c.get("/api/v1/alerts").json()["automations"]
    assert sorted(a["name"] for a in kept if a["enabled"]) == sorted(
        [alerts.RUN_AUTOMATION, alerts.CERT_AUTOMATION]), kept

    # the every-minute schedule fires; its run has the cluster's spec and fails at kubeconfig.
    # A run after the restart: the runner's re-registration made the server delete the future
    # runs and schedule them again, so this run starts within 5 minutes of being scheduled — the
    # run whose alert Prefect's own event ordering held back 15 minutes (deployments/event_ordering.py)
    def finished():
        done = [r for r in runs_of(server, a["id"]) if r.state_type and r.state_type.value == "FAILED"
                and r.end_time and r.end_time > restarted_at]
        return done and done[0]
    # deadline: the next cron minute (≤ 60 s), a scheduler pass if it was missed (≤ 60 s), then
    # the runner's poll and the flow process: measured 31-80 s after the cron time at load 12-18
    run = wait_until("a scheduled health run of sched-a FAILED after the restart", finished, 210,
                     every_s=1)
    assert run.parameters["spec"]["name"] == "sched-a"
    assert [(n["name"], n["address"]) for n in run.parameters["spec"]["nodes"]] == [("n1", netns_node.address)]
    assert run.parameters["spec"]["ssh"]["port"] == port
    assert password not in json.dumps(run.parameters)
    late_s = (run.start_time - run.expected_start_time).total_seconds()

    # the alert names the cluster, the run and what failed; it takes 1-5 s (event → trigger →
    # action → webhook): 30 s is a deadline under load, not a wait for something late
    hit = wait_until(lambda: f"the alert of the failed run {run.name}; received {receiver.received}; "
                             f"automation events {automation_events(server)}",
                     lambda: receiver.matching("sched-a", run.name), ALERT_DEADLINE_S, every_s=0.5)
    got_at, message = hit[0]
    alert_s = got_at - run.end_time.timestamp()
    assert str(run.id) in message["body"] and "Failed" in message["body"], message
    assert "kubeconfig" in message["body"] or "failing checks" in message["body"], message

    # a certificate under 30 days in a health run: the event the verify step emits alerts too.
    # Sent through a client of its own, to this server: emit_event's EventsWorker is one per
    # process whatever the API URL, so in a full run it may still be the one an earlier module
    # started for its own (long gone) server — CI 5 lost the event that way (none on the server).
    import asyncio

    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async def send(event: Event) -> None:
        async with PrefectEventsClient(api_url=server.prefect_api_url) as events:
            await events.emit(event)

    t_cert = time.time()
    asyncio.run(send(Event(
        event=alerts.CERT_EXPIRING_EVENT,
        resource={"prefect.resource.id": "kai.cluster.sched-a", "prefect.resource.name": "sched-a"},
        payload={"cluster": "sched-a", "certificate": "API server certificate", "days_left": 12,
                 "expires": "2027-01-01", "run_name": "hand-made", "run_id": "none"})))
    cert = wait_until("the certificate alert",
                      lambda: receiver.matching("sched-a", "API server certificate", "12 days"),
                      ALERT_DEADLINE_S)
    cert_alert_s = cert[0][0] - t_cert

    # removed: CLI and REST; gone from the list; a second removal is 404
    cli = kai(server.state_dir, "schedule", "remove", a["id"])
    assert cli.returncode == 0, cli.stderr
    with server.client() as c:
        b_id = after["sched-b"]["id"]
        assert c.delete(f"{S}/{b_id}").status_code == 200
        assert c.get(S).json()["schedules"] == []
        assert c.delete(f"{S}/{b_id}").status_code == 404
    print(f"\nschedules: run started {late_s:.1f} s after its cron time; alert {alert_s:.1f} s after "
          f"the run ended; certificate alert {cert_alert_s:.1f} s after the event; kai serve "
          f"restart {restart_s:.1f} s; scenario {time.monotonic() - t_start:.0f} s")


def _write(state_dir: Path, spec: dict) -> Path:
    import yaml
    path = state_dir / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
