"""etcd_restore without hosts: the snapshot's name, the confirmation it needs, its plan (every
control plane, each step before the next), `kai plan` / `kai restore` on the command line, the
flow's refusal before anything is contacted, and the node script's static contract. The restore
itself runs end to end in tests/test_flows_e2e.py (on the 3-member HA cluster)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deployments import control
from deployments.cli import main
from installers import etcd_backups, modes
from installers.plan import build_plan, job_hash
from installers.restore_plan import initial_cluster, peer_url
from installers.spec import SpecError, load_spec, validate_for_mode
from tests.scripts_harness import SCRIPTS_DIR
from tests.spec_factory import aio, ha

SNAP = "demo-ha-20261201T213000Z-rev4711.db"


def test_a_snapshot_name_must_be_this_clusters_file_name():
    assert etcd_backups.name_problems("demo-ha", SNAP) == []
    for bad, says in [(None, "name the snapshot"), ("", "name the snapshot"),
                      ("../demo-ha-20261201T213000Z-rev1.db", "not a path"),
                      ("/tmp/" + SNAP, "not a path"), ("demo-ha-latest.db", "not a snapshot name"),
                      ("demo-ha-20261201T213000Z-rev1.db\n", "not a snapshot name"),
                      ("prod-20261201T213000Z-rev1.db", "cluster 'prod', not of 'demo-ha'")]:
        [problem] = etcd_backups.name_problems("demo-ha", bad)
        assert problem.startswith("snapshot: ") and says in problem, (bad, problem)


def test_the_stored_snapshot_is_found_by_name_or_refused_naming_the_ones_there(tmp_path):
    stored = etcd_backups.store(tmp_path, "demo-ha", "cp-1", {
        "etcd-snapshot.db": b"snap", "etcd-snapshot.sha256": hashlib.sha256(b"snap").hexdigest().encode(),
        "etcd-snapshot.revision": b"7"}, now=1_796_000_000.0)
    assert etcd_backups.snapshot_file(tmp_path, "demo-ha", stored.path.name) == stored.path
    assert etcd_backups.sha256_of(stored.path) == hashlib.sha256(b"snap").hexdigest()
    with pytest.raises(etcd_backups.BackupError, match=rf"{SNAP} is not in .*: {stored.path.name}\)"):
        etcd_backups.snapshot_file(tmp_path, "demo-ha", SNAP)


def test_the_mode_takes_a_snapshot_and_only_it_does():
    spec = load_spec(ha())
    assert validate_for_mode(spec, "etcd_restore", options={"snapshot": SNAP}) == []
    assert any("name the snapshot" in p for p in validate_for_mode(spec, "etcd_restore", options={}))
    assert validate_for_mode(spec, "health", options={"snapshot": SNAP}) == [
        "snapshot: only etcd_restore takes a snapshot, not health"]
    assert modes.canonical_mode("restore") == modes.canonical_mode("etcd-restore") == "etcd_restore"


def test_a_start_without_confirmation_is_refused_with_every_problem():
    with pytest.raises(SpecError) as exc:
        control.validate("etcd_restore", ha(), snapshot=SNAP)
    [problem] = exc.value.problems
    assert problem.startswith("confirm: etcd_restore replaces the data") and "--yes" in problem
    with pytest.raises(SpecError) as exc:  # the name's problem and the confirmation's, at once
        control.validate("restore", ha(), snapshot="prod-20261201T213000Z-rev1.db")
    assert [p.split(":")[0] for p in exc.value.problems] == ["snapshot", "confirm"]
    mode, _ = control.validate("restore", ha(), snapshot=SNAP, confirm=True)
    assert mode == "etcd_restore"
    params = modes.flow_parameters("etcd_restore", {"name": "x"}, snapshot=SNAP, confirm=True)
    assert params == {"spec": {"name": "x"}, "snapshot": SNAP, "confirm": True}
    assert modes.plan_options("etcd_restore", params) == {"snapshot": SNAP}  # confirm never plans


def test_the_plan_restores_every_control_plane_step_by_step_then_verifies():
    spec = load_spec(ha(workers=2, cps=3))
    plan = build_plan(spec, "etcd_restore", snapshot=SNAP)
    assert [s.name for s in plan.steps()] == [
        "restore-snapshot", "etcd-restore-stage", "etcd-restore-stop", "etcd-restore-swap",
        "etcd-restore-start", "etcd-restore-verify", "kubeconfig", "verify"]
    cps = ["cp-1", "cp-2", "cp-3"]
    for name in ("etcd-restore-stage", "etcd-restore-stop", "etcd-restore-swap", "etcd-restore-start"):
        step = plan.step(name)
        assert [j.node for j in step.jobs] == cps and step.parallel  # no worker is touched
        assert {j.script for j in step.jobs} == {"etcd-restore.sh"}
        assert {j.env["KAI_RESTORE_PART"] for j in step.jobs} == {name.rsplit("-", 1)[1]}
    stage = plan.step("etcd-restore-stage").jobs[1]
    assert stage.env["KAI_ETCD_NAME"] == "cp-2" and stage.env["KAI_ETCD_PEER_URL"] == "https://192.168.10.12:2380"
    assert stage.env["KAI_ETCD_INITIAL_CLUSTER"] == ("cp-1=https://192.168.10.11:2380,"
                                                     "cp-2=https://192.168.10.12:2380,cp-3=https://192.168.10.13:2380")
    assert stage.env["KAI_SNAPSHOT_NAME"] == SNAP
    assert "KAI_ETCD_CLUSTER_TOKEN" not in stage.env  # made per run by the task
    assert [j.node for j in plan.step("etcd-restore-verify").jobs] == ["cp-1"]
    assert plan.step("etcd-restore-verify").jobs[0].env["KAI_ETCD_MEMBERS"] == "cp-1 cp-2 cp-3"
    assert plan.step("verify").kind == "health" and not plan.step("restore-snapshot").jobs
    assert any("needs confirm" in w for w in plan.warnings)
    # another snapshot is another restore: the done-markers of stage and swap change
    other = build_plan(spec, "etcd_restore", snapshot=SNAP.replace("4711", "4712"))
    for name in ("etcd-restore-stage", "etcd-restore-swap"):
        assert job_hash(other.step(name).jobs[0]) != job_hash(plan.step(name).jobs[0])


def test_ipv6_peer_urls_are_bracketed():
    spec = load_spec(aio(nodes=[{"name": "n1", "address": "fd00::11", "roles": ["control-plane"]}]))
    assert peer_url(spec.nodes[0]) == "https://[fd00::11]:2380"
    assert initial_cluster(spec) == "n1=https://[fd00::11]:2380"


def _spec_file(tmp_path: Path) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(ha()))
    return str(path)


def test_kai_plan_shows_the_restore_without_confirmation(capsys, tmp_path):
    code = main(["plan", _spec_file(tmp_path), "--mode", "etcd_restore", "--snapshot", SNAP])
    out, err = capsys.readouterr()
    assert code == 0, err
    for step in ("restore-snapshot", "etcd-restore-stage", "etcd-restore-stop", "etcd-restore-swap",
                 "etcd-restore-start", "etcd-restore-verify"):
        assert step in out
    assert "etcd-restore.sh" in out and "cp-3 (192.168.10.13)" in out
    code = main(["plan", _spec_file(tmp_path), "--mode", "restore"])
    assert code == 2 and "snapshot: name the snapshot" in capsys.readouterr().err


def test_kai_restore_without_yes_starts_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(control, "start", lambda *a, **k: pytest.fail("a run was started"))
    code = main(["restore", _spec_file(tmp_path), "--snapshot", SNAP])
    err = capsys.readouterr().err
    assert code == 2 and "confirm: etcd_restore replaces the data" in err and "add --yes" in err


def test_the_flow_refuses_before_contacting_anything(monkeypatch):
    import flows.etcd_restore as flow_module
    from tasks.etcd_restore import RestoreRefused

    monkeypatch.setattr(flow_module, "kai_run", lambda *a, **k: pytest.fail("hosts contacted"))
    with pytest.raises(RestoreRefused, match="refused, nothing was touched: confirm:"):
        flow_module.etcd_restore.fn(ha(), SNAP)
    assert RestoreRefused.retryable is False


def test_the_script_is_shellcheck_clean_and_names_a_missing_input_first(tmp_path):
    assert shutil.which("shellcheck"), "shellcheck is required (apt-get install shellcheck)"
    script = SCRIPTS_DIR / "etcd-restore.sh"
    res = subprocess.run(["shellcheck", "-x", "-P", str(SCRIPTS_DIR), str(script)],
                         capture_output=True, text=True, cwd=SCRIPTS_DIR)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr
    env = {"PATH": "/usr/bin:/bin", "KAI_STATE_DIR": str(tmp_path)}
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert res.returncode != 0 and "KAI_RESTORE_PART is required" in res.stderr
    fakes = tmp_path / "bin"
    fakes.mkdir()
    (fakes / "crictl").write_text("#!/bin/sh\necho \"crictl $*\" >&2; exit 99\n")
    (fakes / "crictl").chmod(0o755)
    env["PATH"] = f"{fakes}:/usr/bin:/bin"
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                         env={**env, "KAI_RESTORE_PART": "everything"})
    assert res.returncode != 0 and "must be stage, stop, swap, start or verify, not 'everything'" in res.stderr
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                         env={**env, "KAI_RESTORE_PART": "stage", "KAI_FILES_DIR": str(tmp_path)})
    assert res.returncode != 0 and "KAI_SNAPSHOT_NAME" in res.stderr and "crictl" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # nothing written
