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
