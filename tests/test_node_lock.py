"""lib.sh's node lock on this machine (a temporary KAI_STATE_DIR): taken, refreshed, refused to
another controller while its lease lives, taken over once it ran out, released only by its
holder — and two controllers racing for it never both win (flock)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.node_lock import KAI_LOCKED_EXIT, NodeLock, controller_id, lock_job
from tests.scripts_harness import SCRIPTS_DIR, lib_call


def lock_env(state: Path, run: str, controller: str, lease_s: int = 30, **extra) -> dict[str, str]:
    lock = NodeLock(run_id=run, run_name=f"name-{run}", controller=controller, lease_s=lease_s,
                    controller_name=f"host-of-{controller}")
    return {"KAI_STATE_DIR": str(state), "KAI_STEP": "runtime", **lock.env(), **extra}


def step(tmp: Path, state: Path, run: str, controller: str, **kw) -> subprocess.CompletedProcess:
    """A step script of `run`: sourcing lib.sh takes or refreshes the lock."""
    return lib_call(tmp, "echo step-body-ran", lock_env(state, run, controller, **kw))


def lock_sh(tmp: Path, state: Path, action: str, run: str, controller: str, **kw):
    env = {"PATH": "/usr/bin:/bin", **lock_env(state, run, controller, **kw),
           "KAI_LOCK_ACTION": action}
    return subprocess.run(["bash", str(SCRIPTS_DIR / "lock.sh")], env=env, capture_output=True,
                          text=True, timeout=60)


def holder(state: Path) -> dict[str, str]:
    text = (state / "lock").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def test_lock_sh_is_shellcheck_clean() -> None:
    assert shutil.which("shellcheck"), "shellcheck is required"
    res = subprocess.run(["shellcheck", "-x", "-P", str(SCRIPTS_DIR), str(SCRIPTS_DIR / "lock.sh")],
                         capture_output=True, text=True, cwd=SCRIPTS_DIR)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr


def test_taken_refreshed_refused_to_another_controller_then_released(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = step(tmp_path, state, "run-a", "ctl-a")
    assert first.returncode == 0, first.stderr
    assert "node lock: taken by run 'name-run-a' (run-a) of controller ctl-a" in first.stdout
    assert "step-body-ran" in first.stdout
    lock = holder(state)
    assert lock["run"] == "run-a" and lock["controller"] == "ctl-a"
    assert lock["controller_name"] == "host-of-ctl-a"
    assert abs(int(lock["expires"]) - (time.time() + 30)) <= 3
    assert oct((state / "lock").stat().st_mode & 0o777) == "0o600"

    again = step(tmp_path, state, "run-a", "ctl-a")  # a later step of the same run: quiet refresh
    assert again.returncode == 0 and "node lock" not in again.stdout

    other = step(tmp_path, state, "run-b", "ctl-b")
    assert other.returncode == KAI_LOCKED_EXIT
    assert "step-body-ran" not in other.stdout, "a refused step must not run"
    assert ("is locked by kai run 'name-run-a' (run-a) of controller ctl-a (host-of-ctl-a) for "
            in other.stderr), other.stderr
    assert "refusing step runtime" in other.stderr
    assert holder(state)["run"] == "run-a"

    not_ours = lock_sh(tmp_path, state, "release", "run-b", "ctl-b")
    assert not_ours.returncode == 0 and "not by this run: left alone" in not_ours.stdout
    assert (state / "lock").exists()
    released = lock_sh(tmp_path, state, "release", "run-a", "ctl-a")
    assert released.returncode == 0 and "released by run run-a" in released.stdout
    assert not (state / "lock").exists()
    assert step(tmp_path, state, "run-b", "ctl-b").returncode == 0


def lease_ran_out(state: Path, seconds_ago: int) -> None:
    """What a dead controller leaves: its lock, last renewed more than a lease ago (set directly,
    so that the test does not depend on how fast this loaded machine runs it)."""
    lock = holder(state)
    lock["expires"] = str(int(time.time()) - seconds_ago)
    (state / "lock").write_text("".join(f"{k}={v}\n" for k, v in lock.items()))


def test_a_stale_lock_is_taken_over_and_so_is_one_of_the_same_controller(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert step(tmp_path, state, "run-a", "ctl-a").returncode == 0
    refused = step(tmp_path, state, "run-b", "ctl-b")
    assert refused.returncode == KAI_LOCKED_EXIT, refused.stdout + refused.stderr
    lease_ran_out(state, 7)  # ctl-a died: nobody renewed its lease
    took = step(tmp_path, state, "run-b", "ctl-b")
    assert took.returncode == 0, took.stderr
    said = re.search(r"node lock: taking over the stale lock of run 'name-run-a' \(run-a\) of "
                     r"controller ctl-a \(host-of-ctl-a\): its lease ran out (\d+) s ago", took.stdout)
    assert said and int(said.group(1)) >= 7, took.stdout
    assert holder(state)["run"] == "run-b"
    # the same controller's Prefect host lock says an earlier run of it is over: no wait
    same = step(tmp_path, state, "run-c", "ctl-b")
    assert same.returncode == 0 and "an earlier run of this controller" in same.stdout
    assert holder(state)["run"] == "run-c"


def test_two_controllers_racing_never_both_win(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: lock_sh(tmp_path, state, "hold", f"run-{i}", f"ctl-{i}"),
                                range(8)))
    winners = [i for i, r in enumerate(results) if r.returncode == 0]
    assert len(winners) == 1, [(r.returncode, r.stdout, r.stderr) for r in results]
    assert all(r.returncode == KAI_LOCKED_EXIT for i, r in enumerate(results) if i not in winners)
    assert holder(state)["run"] == f"run-{winners[0]}"


def test_bad_lease_is_named(tmp_path: Path) -> None:
    res = step(tmp_path, tmp_path / "state", "run-a", "ctl-a", KAI_LOCK_LEASE_S="soon")
    assert res.returncode != 0 and "KAI_LOCK_LEASE_S must be a whole number of seconds" in res.stderr


def test_lock_inputs_do_not_change_the_done_marker_hash(tmp_path: Path) -> None:
    from installers.plan import HostJob, Step, StepPolicy
    from tasks.node_step import build_remote_job

    job = HostJob(node="n1", address="127.0.0.1", script="os-prep.sh",
                  env={"KAI_NODE_NAME": "n1", "KAI_MODULES": "overlay"}, files={})
    step_ = Step(name="os-prep", kind="os_prep", title="OS", jobs=(job,),
                 policy=StepPolicy(retries=0, retry_delay_s=1, timeout_s=10))
    a = build_remote_job(step_, job, {}, NodeLock("run-a", "a", "ctl", 30).env())
    b = build_remote_job(step_, job, {}, NodeLock("run-b", "b", "ctl", 30).env())
    assert a.env["KAI_STEP_HASH"] == b.env["KAI_STEP_HASH"]
    assert a.env["KAI_LOCK_RUN"] == "run-a" and b.env["KAI_LOCK_RUN"] == "run-b"
    assert lock_job(NodeLock("run-a", "a", "ctl", 30), "release").env["KAI_LOCK_ACTION"] == "release"


def test_controller_id_is_made_once_and_kept(tmp_path: Path) -> None:
    first = controller_id(tmp_path / "state")
    assert first.startswith("kai-") and controller_id(tmp_path / "state") == first
    assert controller_id(tmp_path / "other") != first
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: controller_id(tmp_path / "race"), range(8))).__len__() == 1


@pytest.mark.parametrize("missing", ["KAI_LOCK_RUN", "KAI_LOCK_CONTROLLER"])
def test_lock_sh_names_a_missing_input(tmp_path: Path, missing: str) -> None:
    env = {"PATH": "/usr/bin:/bin", **lock_env(tmp_path, "r", "c"), "KAI_LOCK_ACTION": "hold"}
    env.pop(missing)
    res = subprocess.run(["bash", str(SCRIPTS_DIR / "lock.sh")], env=env, capture_output=True,
                         text=True)
    assert res.returncode != 0 and f"{missing} is required" in res.stderr


def test_cleanup_after_a_run_spares_a_host_another_run_holds(tmp_path: Path) -> None:
    """The reaper may clean up after a dead run long after it died: by then the host may belong
    to another run, whose steps are not leftovers. (Only this branch runs here: the killing one
    would hit every kai step on this shared machine.)"""
    from flows.hooks import kill_job

    state = tmp_path / "state"
    assert step(tmp_path, state, "run-b", "ctl-b").returncode == 0
    job = kill_job(NodeLock("run-a", "a", "ctl-a", 30))
    env = {"PATH": "/usr/bin:/bin", "KAI_STATE_DIR": str(state), "KAI_WORK": str(tmp_path),
           **job.env}
    res = subprocess.run(["bash", str(SCRIPTS_DIR / "kill-steps.sh")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "left alone: the host is held by run 'name-run-b' (run-b) of controller ctl-b" in res.stdout
    assert holder(state)["run"] == "run-b", "checking must not take the lock"
