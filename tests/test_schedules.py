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
