"""Package steps are cancel-safe (issue #10 §4): a cancel never kills dpkg/rpm mid-transaction, and
every package step waits for the package lock and repairs an interrupted database first.

- Here, on this machine: the real kai-exec.sh agent runs a step whose "transaction" is a stand-in
  command (it touches no package database); a KAI-CANCEL makes the agent TERM the step's group,
  KILL it 5 s later and KILL every process carrying KAI_WORK. The transaction must survive all of
  it and run to its end, with none of the step's environment.
- On booted test hosts (real apt and dpkg, the local mirror's kube packages, Debian's containerd
  through the hosts' apt proxy): cancel the real kube-packages and runtime (containerd, distro)
  steps through the SSH runner while dpkg is running, at several delays; dpkg's database is clean
  once the transaction finished, and the rerun completes with no hand repair. A database broken
  by the test itself (dpkg SIGKILLed mid-install: "dpkg was interrupted") is repaired by the next
  run of the step.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest

from installers.ssh import RemoteJob, build_frame
from tests.scripts_harness import SCRIPTS_DIR

AGENT = SCRIPTS_DIR / "kai-exec.sh"


# --- the agent's kill cannot reach a package transaction (this machine, no package touched) -------

DEMO_STEP = """#!/usr/bin/env bash
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
echo step-started
kai_pkg_transaction "demo transaction" bash -c \
  'env >"$1/env"; echo started >"$1/started"; sleep "$2"; echo finished >"$1/finished"' _ "$DEMO_DIR" "$DEMO_SLEEP"
echo step-after-transaction
"""


def run_agent_and_cancel(tmp_path: Path, sleep_s: float) -> tuple[float, str, int]:
    """Start DEMO_STEP under the real agent, cancel it once the transaction runs; return
    (seconds from KAI-CANCEL to the job's kai-exit, the job's output, its exit code)."""
    demo = tmp_path / "demo"
    demo.mkdir()
    job = RemoteJob(step="demo", script="demo.sh", script_text=DEMO_STEP,
                    lib_text=(SCRIPTS_DIR / "lib.sh").read_text(),
                    env={"KAI_STEP_HASH": "h", "DEMO_DIR": str(demo), "DEMO_SLEEP": str(sleep_s)})
    agent = subprocess.Popen(["bash", "-c", AGENT.read_text()], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        agent.stdin.write(build_frame(job))
        agent.stdin.flush()
        deadline = time.monotonic() + 60
        while not (demo / "started").exists():
            assert time.monotonic() < deadline and agent.poll() is None, "the transaction never started"
            time.sleep(0.05)
        t0 = time.monotonic()
        agent.stdin.write(b"KAI-CANCEL\n")
        agent.stdin.flush()
        lines, exit_code = [], None
        for raw in agent.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("\x1ekai-exit "):
                exit_code = int(line.split()[1])
                break
            lines.append(line)
        took = time.monotonic() - t0
        agent.stdin.close()  # EOF between jobs: the agent ends
        agent.wait(timeout=30)
        return took, "\n".join(lines), exit_code
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def wait_for_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent's straggler kill reads every /proc/*/environ")
def test_cancel_lets_a_long_transaction_finish_after_the_step_is_killed(tmp_path: Path) -> None:
    # 12 s: longer than the agent's 5 s grace, so the step itself is KILLed while it waits
    took, output, code = run_agent_and_cancel(tmp_path, sleep_s=12)
    demo = tmp_path / "demo"
    assert code != 0 and "step-after-transaction" not in output, output
    assert "stop requested during demo transaction: letting the package manager finish" in output, output
    assert 4.5 <= took < 30, f"the agent ended the job {took:.1f} s after the cancel"
    assert not (demo / "finished").exists(), "the transaction was expected to outlive the step"
    assert wait_for_file(demo / "finished", timeout=60), "the transaction was killed with the step"
    env = (demo / "env").read_text()
    assert "KAI_" not in env, f"the transaction carries the step's environment:\n{env}"


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent's straggler kill reads every /proc/*/environ")
def test_cancel_waits_for_a_short_transaction_then_stops_the_step(tmp_path: Path) -> None:
    took, output, code = run_agent_and_cancel(tmp_path, sleep_s=2)
    assert (tmp_path / "demo" / "finished").exists(), "the step ended before its transaction"
    assert code != 0 and "step-after-transaction" not in output, output
    assert "demo transaction finished; the step stops now" in output, output
    assert took < 4.9, f"the step waited {took:.1f} s: it should stop as soon as the transaction ended"
