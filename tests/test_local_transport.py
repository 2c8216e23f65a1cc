"""The local transport (installers/ssh/local.py): kai-exec.sh as a local process, no SSH.

Every job here is a harmless script in a temp dir: the agent's directory goes to the test's
tmp_path through the command prefix (`env TMPDIR=…`, the same seam the end-to-end test uses to
enter a booted host), and the jobs only sleep, echo and write into it. No root needed.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from installers.ssh import (
    CANCEL_EXIT, TIMEOUT_EXIT, ConnectError, ConnectionLostError, Fleet, LocalConnection,
    LocalTarget, RemoteJob,
)
from installers.ssh.connection import MAX_CHANNELS
from tests.support.wait import wait_until


def job(text: str, step: str = "s", **kw) -> RemoteJob:
    return RemoteJob(step=step, script="s.sh", script_text="set -eu\n" + text, lib_text="",
                     env=kw.pop("env", {}), **kw)


@pytest.fixture
def sandbox(tmp_path) -> Path:
    d = tmp_path / "agents"
    d.mkdir()
    return d


@pytest.fixture
def conn(sandbox):
    c = LocalConnection(LocalTarget(node="me", command_prefix=("env", f"TMPDIR={sandbox}")))
    yield c
    c.close()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def pids_in(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


# A job that leaves a child in its group, one that left the group (setsid), and itself, running.
FAMILY = ('sleep 301 & echo $! >> "$KAI_PIDS"; setsid sleep 302 & echo $! >> "$KAI_PIDS"; '
          'echo $$ >> "$KAI_PIDS"; echo started; wait')


def test_a_job_streams_its_lines_and_reports_outputs_and_exit_code(conn, sandbox, monkeypatch):
    monkeypatch.setenv("KAI_CONTROLLER_ONLY", "not for nodes")
    lines: list[str] = []
    secret = "s3cret-" + os.urandom(4).hex()
    res = conn.run_job(job('echo one; echo two >&2; echo "${KAI_CONTROLLER_ONLY-unset}"; '
                           'echo "$PPID" > "$KAI_OUT_DIR/agent"; '
                           '[ "$KAI_TOKEN" = "$KAI_EXPECT" ] && echo secret-ok; exit 3',
                           secret_env={"KAI_TOKEN": secret}, env={"KAI_EXPECT": secret}),
                       on_line=lines.append)
    assert (res.exit_code, res.ok, res.error) == (3, False, None)
    assert lines == ["one", "two", "unset", "secret-ok"] == res.tail
    agent = int(res.outputs["agent"])
    # the agent's command line is constant: nothing of the job (secrets) on it
    cmdline = Path(f"/proc/{agent}/cmdline").read_bytes()
    assert secret.encode() not in cmdline and b"kai-exec" in cmdline
    assert list(sandbox.glob("kai.*")), "the agent's directory is under the sandbox"


def test_the_agent_takes_the_next_job_and_tidies_up_when_closed(conn, sandbox):
    first = conn.run_job(job('echo "$PPID"'))
    second = conn.run_job(job('echo "$PPID"; echo "${KAI_WORK%/*}"'))
    assert first.ok and second.ok and first.tail[0] == second.tail[0], (first, second)
    agent, root = int(second.tail[0]), Path(second.tail[1])
    assert root.parent == sandbox and root.is_dir()
    conn.close()
    wait_until("the closed agent to end and remove its directory",
               lambda: not alive(agent) and not root.exists(), 10, 0.05)


def test_a_timeout_kills_the_jobs_whole_process_group(conn, tmp_path):
    pids = tmp_path / "pids"
    t0 = time.monotonic()
    res = conn.run_job(job(FAMILY, env={"KAI_PIDS": str(pids)}, timeout_s=1.0))
    assert (res.timed_out, res.exit_code, res.tail) == (True, TIMEOUT_EXIT, ["started"]), res
    assert time.monotonic() - t0 < 10
    assert len(pids_in(pids)) == 3
    wait_until("every process of the job gone", lambda: not any(map(alive, pids_in(pids))), 10, 0.05)
    assert conn.run_job(job("echo next")).tail == ["next"]  # the host is usable right after


def test_cancel_kills_the_group_and_what_escaped_it(conn, tmp_path):
    pids, cancel, box = tmp_path / "pids", threading.Event(), {}
    th = threading.Thread(target=lambda: box.update(r=conn.run_job(
        job(FAMILY, env={"KAI_PIDS": str(pids)}), cancel=cancel)))
    th.start()
    wait_until("the job started", lambda: len(pids_in(pids)) == 3, 10, 0.02)
    cancel.set()
    th.join(15)
    res = box["r"]
    assert (res.cancelled, res.exit_code) == (True, CANCEL_EXIT), res
    wait_until("every process of the job gone", lambda: not any(map(alive, pids_in(pids))), 10, 0.05)


def test_closing_the_connection_mid_job_ends_the_job(conn, tmp_path):
    """The controller going away (its fleet closed, or its process dead) closes the agent's stdin:
    kai-exec kills the job's group, as when an SSH connection drops."""
    pids, box = tmp_path / "pids", {}

    def run():
        try:
            box["r"] = conn.run_job(job(FAMILY, step="runtime", env={"KAI_PIDS": str(pids)}))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            box["e"] = exc

    th = threading.Thread(target=run)
    th.start()
    wait_until("the job started", lambda: len(pids_in(pids)) == 3, 10, 0.02)
    conn.close()
    th.join(15)
    assert not th.is_alive()
    assert isinstance(box.get("e"), ConnectionLostError), box
    assert "me (the local machine)" in str(box["e"]) and "'runtime'" in str(box["e"])
    wait_until("every process of the job gone", lambda: not any(map(alive, pids_in(pids))), 10, 0.05)


def test_many_jobs_at_once_share_the_agent_pool(conn):
    box: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: box.update({i: conn.run_job(
        job(f"sleep 0.2; echo job-{i}"))})) for i in range(14)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sorted(r.tail[0] for r in box.values()) == sorted(f"job-{i}" for i in range(14))


def test_an_agent_that_cannot_start_names_the_node_and_why(sandbox):
    with LocalConnection(LocalTarget(node="me", command_prefix=("sh", "-c", "echo no entry >&2; exit 7", "sh"))) as c:
        res = c.run_job(job("echo never"))
    assert not res.ok and res.exit_code == 7, res
    assert "did not start on me (the local machine) as " in res.error, res
    assert res.tail == ["no entry"]
    with LocalConnection(LocalTarget(node="me", command_prefix=(str(sandbox / "no-such-command"),))) as c:
        with pytest.raises(ConnectError, match="cannot start kai-exec.sh on me .*'s'.*no-such-command") as err:
            c.run_job(job("echo never"))
        assert c._channels._value == MAX_CHANNELS  # the agent's slot is free again
    assert err.value.retryable is False


def test_root_runs_the_agent_itself_anyone_else_through_sudo_n(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    root = LocalTarget.for_this_process("n", ("x",))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    user = LocalTarget.for_this_process("n", ())
    assert root.agent_argv()[:3] == ["x", "bash", "-c"]
    assert user.agent_argv()[:5] == ["sudo", "-n", "--", "bash", "-c"]
    with pytest.raises(ValueError, match=r"LocalTarget\('n'\)\.sudo"):
        LocalTarget(node="n", sudo="password")


def test_the_fleet_gives_the_local_node_a_local_connection():
    with Fleet({"me": LocalTarget(node="me")}) as fleet:
        assert isinstance(fleet.get("me"), LocalConnection)


def test_an_idle_agent_that_died_is_replaced_transparently(conn):
    import signal
    first = int(conn.run_job(job('echo "$PPID"')).tail[0])
    os.kill(first, signal.SIGKILL)
    wait_until("the idle agent dead", lambda: not alive(first), 10, 0.02)
    res = conn.run_job(job('echo "$PPID"'))
    assert res.ok and int(res.tail[0]) != first, res
