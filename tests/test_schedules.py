"""Schedules, alerts and health's drift without a server: validation, templates, version drift."""

from __future__ import annotations

import pytest

from installers.cluster_check import NodeInfo, version_drift
from installers.spec import SpecError
from tests.spec_factory import aio


def test_a_schedule_with_a_bad_spec_and_a_bad_cron_names_every_problem():
    from deployments import schedules

    spec = aio(networking={"cni": "weave"}, ssh={"password": "hunter2-secret"})
    with pytest.raises(SpecError) as caught:
        schedules.add("health", spec, "61 * * * *", "Mars/Olympus")
    problems = caught.value.problems
    assert any(p.startswith("networking.cni") for p in problems), problems
    assert any(p.startswith("ssh.password") for p in problems), problems
    assert any(p.startswith("cron") for p in problems), problems
    assert any(p.startswith("timezone") for p in problems), problems
    assert "hunter2-secret" not in repr(problems)


def test_an_unknown_mode_is_refused_with_the_known_ones():
    from deployments import schedules

    with pytest.raises(SpecError) as caught:
        schedules.add("backup-everything", aio(), "* * * * *")
    assert "unknown mode 'backup-everything'" in caught.value.problems[0]


def test_secret_fields_are_found_everywhere_in_the_spec():
    from deployments.schedules import _secret_fields

    spec = {"ssh": {"password_secret": "a", "private_key_secret": None},
            "nodes": [{"name": "n", "ssh": {"sudo_password_secret": "b"}}]}
    assert _secret_fields(spec) == [("ssh.password_secret", "a"), ("nodes[0].ssh.sudo_password_secret", "b")]


def test_the_alert_automations_render_valid_templates_and_watch_the_modes_by_name():
    import uuid

    from deployments.alerts import ALERTING_MODES, _automations, webhook_block

    runs, certs = _automations(uuid.uuid4(), ALERTING_MODES)  # the templates are validated here
    assert runs.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    related = runs.trigger.match_related
    related = related[0] if isinstance(related, list) else related
    assert related["prefect.resource.name"] == ["health", "etcd_backup", "certs"]
    assert certs.trigger.expect == {"kai.certificate.expiring"}
    assert webhook_block("http://127.0.0.1:9/hook").json_data["body"] == "{{body}}"
    with pytest.raises(ValueError, match="webhook"):
        webhook_block("ftp://example.invalid/")


def _node(name, kubelet, runtime):
    return NodeInfo(name, ["control-plane"], True, kubelet, "10.0.0.1", container_runtime=runtime)


def test_version_drift_names_each_node_and_component():
    nodes = [_node("a", "v1.36.4", "containerd://2.1.4"), _node("b", "v1.36.3", "containerd://2.0.0")]
    assert version_drift(nodes, "1.36.4", "2.1.4") == [
        "node b: kubelet 1.36.3, the spec says 1.36.4", "node b: containerd 2.0.0, the spec says 2.1.4"]
    assert version_drift(nodes, "1.36.3", None) == ["node a: kubelet 1.36.4, the spec says 1.36.3"]
    # a packager's suffix is not drift (Debian's containerd reports 1.6.20~ds1); another release is
    repackaged = [_node("a", "v1.36.4", "containerd://1.6.20~ds1"), _node("b", "v1.36.4", "containerd://1.6.21+dfsg")]
    assert version_drift(repackaged, "1.36.4", "1.6.20") == ["node b: containerd 1.6.21+dfsg, the spec says 1.6.20"]


def test_version_drift_of_the_installed_binaries():
    """health's node_versions step: kubeadm (not in the Node object) against the spec, and a kubelet
    binary that differs from the one running (a package changed, the kubelet not restarted)."""
    nodes = [_node("a", "v1.36.4", "containerd://2.1.4"), _node("b", "v1.36.4", "containerd://2.1.4")]
    installed = {"a": {"kubeadm_version": "v1.36.4", "kubelet_version": "v1.36.4"},
                 "b": {"kubeadm_version": "v1.36.3", "kubelet_version": "v1.36.5"},
                 "c": {"kubeadm_version": "unknown", "kubelet_version": "unknown"}}
    assert version_drift(nodes, "1.36.4", "2.1.4", installed) == [
        "node b: kubeadm 1.36.3, the spec says 1.36.4",
        "node b: the kubelet binary is 1.36.5 but 1.36.4 runs, the spec says 1.36.4",
        "node c: kubeadm answers no version (not installed?), the spec says 1.36.4"]
    assert version_drift(nodes, "1.36.4", "2.1.4", {"a": installed["a"]}) == []


def test_list_and_remove_walk_every_served_deployments_schedules(monkeypatch):
    """list_schedules and remove read each mode's deployment `<mode>/<mode>` (one not served is
    skipped) and its schedules; remove deletes the one asked for, and names an unknown id."""
    import contextlib
    import uuid
    from types import SimpleNamespace

    import prefect.client.orchestration as orchestration
    from prefect.exceptions import ObjectNotFound

    from deployments import schedules

    def schedule(cluster: str, active: bool = False):  # paused: no next run to compute
        return SimpleNamespace(id=uuid.uuid4(), parameters={"spec": {"name": cluster}}, active=active,
                               slug=f"kai-{cluster}", schedule=SimpleNamespace(cron="0 * * * *",
                                                                               timezone="UTC"))

    health, backup = [schedule("a"), schedule("b")], [schedule("c")]
    served = {"health/health": ("d-health", health), "etcd_backup/etcd_backup": ("d-backup", backup)}
    deleted = []

    class Client:
        def read_deployment_by_name(self, name):
            if name not in served:
                raise ObjectNotFound(None)
            return SimpleNamespace(id=served[name][0])

        def read_deployment_schedules(self, deployment_id):
            return next(list(s) for d, s in served.values() if d == deployment_id)

        def delete_deployment_schedule(self, deployment_id, schedule_id):
            deleted.append((deployment_id, schedule_id))

    monkeypatch.setattr(orchestration, "get_client", lambda sync_client: contextlib.nullcontext(Client()))
    listed = schedules.list_schedules()
    assert sorted((e["mode"], e["cluster"], e["deployment"]) for e in listed) == [
        ("etcd_backup", "c", "etcd_backup/etcd_backup"), ("health", "a", "health/health"),
        ("health", "b", "health/health")]
    entry = schedules.remove(str(health[1].id))
    assert (entry["cluster"], entry["mode"], entry["next_run"]) == ("b", "health", None)
    assert deleted == [("d-health", health[1].id)]
    with pytest.raises(schedules.UnknownSchedule, match="no schedule"):
        schedules.remove(str(uuid.uuid4()))
    with pytest.raises(ValueError, match="id: 'x' is not a schedule id"):
        schedules.remove("x")


# --- kai serve's causal ordering (deployments/event_ordering.py): alerts not parked 15 minutes ---

def _state_event(name: str, initial: str, initial_type: str, follows, received=None):
    import datetime as dt
    import uuid

    from prefect.server.events.schemas.events import ReceivedEvent

    now = received or dt.datetime.now(dt.timezone.utc)
    return ReceivedEvent(
        occurred=now, received=now, event=f"prefect.flow-run.{name}", id=uuid.uuid4(),
        follows=follows, resource={"prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}"},
        payload={"initial_state": {"type": initial_type, "name": initial},
                 "validated_state": {"type": name.upper(), "name": name}})


async def _waits_async(ordering, event) -> bool:
    from prefect.server.events.ordering import EventArrivedEarly

    try:
        await ordering.wait_for_leader(event)
    except EventArrivedEarly:
        return True
    return False


def _waits(ordering, event) -> bool:
    import asyncio

    return asyncio.run(_waits_async(ordering, event))


@pytest.fixture
def no_event_table(monkeypatch):
    """kai's ordering looks a leader up in the events table: here it is in none."""
    from deployments import event_ordering

    async def not_persisted(event_id):
        return False

    monkeypatch.setattr(event_ordering, "received_before_this_process", not_persisted)


def test_a_scheduled_runs_first_state_event_is_not_parked_for_a_scheduled_state_never_announced(
        no_event_table):
    """Prefect's scheduler inserts a run's Scheduled state with no event; its Pending (or Late)
    event follows that state: Prefect's ordering parks it 15 minutes, kai's passes it on."""
    import uuid

    from prefect.server.events.ordering import memory

    from deployments import event_ordering

    pending = _state_event("Pending", "Scheduled", "SCHEDULED", follows=uuid.uuid4())
    assert _waits(memory.CausalOrdering(scope=f"test-prefect-{uuid.uuid4()}"), pending)
    assert not _waits(event_ordering.CausalOrdering(scope=f"test-kai-{uuid.uuid4()}"), pending)


def test_kais_ordering_still_waits_for_a_leader_this_server_may_yet_receive(no_event_table):
    import uuid

    from deployments import event_ordering

    kai = event_ordering.CausalOrdering(scope=f"test-kai-{uuid.uuid4()}")
    # AwaitingRetry is a Scheduled-type state that does get an event: wait for it
    assert _waits(kai, _state_event("Pending", "AwaitingRetry", "SCHEDULED", follows=uuid.uuid4()))
    assert _waits(kai, _state_event("Failed", "Running", "RUNNING", follows=uuid.uuid4()))


def test_a_leader_the_previous_server_process_received_counts_as_seen(tmp_path):
    """After a server restart a run's Failed event follows its Running event, which only the
    previous process saw (Prefect keeps what it has seen in memory): kai finds it in the events
    table, received before this process started, and does not wait; a leader received since
    (or never) is waited for."""
    import asyncio
    import datetime as dt
    import uuid

    from prefect.server.database import provide_database_interface
    from prefect.server.database.configurations import AioSqliteConfiguration
    from prefect.server.database.dependencies import temporary_database_config
    from prefect.server.events.storage.database import write_events

    from deployments import event_ordering

    before = event_ordering.STARTED_AT - dt.timedelta(seconds=30)
    old_running = _state_event("Running", "Pending", "PENDING", follows=None, received=before)
    new_running = _state_event("Running", "Pending", "PENDING", follows=None,
                               received=event_ordering.STARTED_AT + dt.timedelta(seconds=1))
    kai = event_ordering.CausalOrdering(scope=f"test-kai-{uuid.uuid4()}")

    async def scenario() -> list[bool]:
        db = provide_database_interface()
        async with (await db.engine()).begin() as connection:  # the two tables, not all (10 s)
            for table in (db.Event.__table__, db.EventResource.__table__):
                await connection.run_sync(table.create)
        async with db.session_context(begin_transaction=True) as session:
            await write_events(session, [old_running, new_running])
        return [await _waits_async(kai, _state_event("Failed", "Running", "RUNNING", follows=leader))
                for leader in (old_running.id, new_running.id, uuid.uuid4())]

    url = f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    with temporary_database_config(AioSqliteConfiguration(connection_url=url)):
        assert asyncio.run(scenario()) == [False, True, True]


def test_kai_serve_runs_its_prefect_server_with_kais_causal_ordering(tmp_path, monkeypatch):
    from prefect.context import SettingsContext
    from prefect.server.events.ordering import get_triggers_causal_ordering
    from prefect.settings import Settings

    from deployments import event_ordering
    from deployments.serve import server_env

    monkeypatch.delenv(event_ordering.SETTING, raising=False)
    env = server_env(tmp_path, 4999)
    assert env[event_ordering.SETTING] == event_ordering.MODULE
    # the server process reads it from its environment: Prefect resolves it to kai's ordering
    monkeypatch.setenv(event_ordering.SETTING, env[event_ordering.SETTING])
    with SettingsContext(profile=SettingsContext.get().profile, settings=Settings()):
        assert isinstance(get_triggers_causal_ordering(), event_ordering.CausalOrdering)
