"""The kai-exec.sh agent over a real OpenSSH server on loopback: jobs, reuse, readiness, cancel."""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from installers.ssh import (
    MAX_CHANNELS, MAX_IDLE_AGENTS, ConnectionLostError, build_frame, exec_command,
)
from tests.support.sshd_fixture import sshd  # noqa: F401  (conn needs it)
from tests.support.ssh_jobs import (  # noqa: F401  (conn is a fixture)
    PPID, agent_pid, conn, job, marker, pids_matching,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.sshd


# ----------------------------------------------------------------------------------------------
# running jobs
# ----------------------------------------------------------------------------------------------


def test_job_streams_lines_in_order_with_exit_code_and_outputs(conn, tmp_path):
    tricky = "it's \"quoted\"\nsecond line ünï€ $(touch %s) `touch %s` $HOME \\ end\n\n" % (
        tmp_path / "pwned1", tmp_path / "pwned2")
    script = r"""
. "$(dirname "$0")/lib.sh"
echo "lib=$kai_lib_loaded step=$KAI_STEP"
echo first
echo to-stderr >&2
sleep 1
for i in $(seq 1 50); do echo "line $i"; done
printf '%s' "$KAI_TRICKY" > "$KAI_OUT_DIR/tricky"
echo "result-value-42" > "$KAI_OUT_DIR/result.txt"
stat -c '%a' "$KAI_FILES_DIR/cfg.toml" > "$KAI_OUT_DIR/mode"
cat "$KAI_FILES_DIR/cfg.toml" > "$KAI_OUT_DIR/cfg"
echo "$KAI_WORK" > "$KAI_OUT_DIR/work"
exit 7
"""
    arrivals: list[tuple[float, str]] = []
    t0 = time.monotonic()
    res = conn.run_job(job(script, env={"KAI_TRICKY": tricky}, files={"cfg.toml": b"a = 1\n"}),
                       on_line=lambda line: arrivals.append((time.monotonic() - t0, line)))
    ended_at = time.monotonic() - t0
    lines = [line for _, line in arrivals]
    assert res.exit_code == 7 and not res.ok and res.error is None
    assert lines[:3] == ["lib=1 step=test-step", "first", "to-stderr"] or \
        lines[:3] == ["lib=1 step=test-step", "to-stderr", "first"]
    assert lines[-50:] == [f"line {i}" for i in range(1, 51)]  # stdout order kept
    # streamed as it happened, not at the end: "first" came a second before the job ended
    # (one clock for both: the agent's start counts in neither difference)
    first_at = dict((line, t) for t, line in arrivals)["first"]
    assert ended_at - first_at > 0.5
    assert res.tail == lines[-40:] and len(res.tail) == 40
    assert res.outputs["tricky"] == tricky.encode()  # quotes, newline, $(…) intact
    assert not (tmp_path / "pwned1").exists() and not (tmp_path / "pwned2").exists()
    assert res.outputs["result.txt"] == b"result-value-42\n"
    assert res.outputs["mode"] == b"600\n" and res.outputs["cfg"] == b"a = 1\n"
    assert not any("result-value-42" in line or "kai-out" in line or "kai-exit" in line
                   for line in lines)
    work = Path(res.outputs["work"].decode().strip())
    # nothing the job left stays behind; the agent's directory goes when the agent ends
    assert str(work).startswith("/tmp/kai.")
    # the agent tidies up after it reported the job and before it says it is ready again: the
    # next job, on the same agent and directory, finds nothing of this one
    after = conn.run_job(job('echo "$KAI_WORK"; cd "$KAI_WORK" && find . | sort'))
    assert after.tail == [str(work), ".", "./files", "./out"]
    conn.close()
    wait_until("the job directories removed on close", lambda: not work.parent.exists(), 5, 0.05)


def test_connection_is_reused_across_jobs(conn):
    r1 = conn.run_job(job("echo one"))
    t1 = conn.connect()
    r2 = conn.run_job(job("echo two; exit 3"))
    assert (r1.exit_code, r1.tail) == (0, ["one"])
    assert (r2.exit_code, r2.tail) == (3, ["two"])
    assert conn.connect() is t1  # same transport: one connection per host


def test_concurrent_jobs_on_one_connection_stay_within_channel_limit(conn):
    # sshd's MaxSessions is 10 too: more than 10 open channels would be refused
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        conn.run_job(job(f"sleep 0.3; echo job-{i}")))) for i in range(MAX_CHANNELS + 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.tail[0] for r in results) == sorted(f"job-{i}" for i in range(15))
    assert all(r.ok for r in results)




def test_agents_retired_as_they_speak_never_take_the_connection_down(conn):
    # More jobs than channel slots: agents beyond the idle cap are closed right after their job,
    # just as they print their readiness line. Closing a channel whose wake-up pipe the transport
    # thread was writing to killed the whole transport (EBADF) in CI; every job on the
    # connection then failed.
    transport = conn.connect()
    for round_ in range(4):
        results, errors = [], []

        def one(i: int) -> None:
            try:
                results.append(conn.run_job(job(f"echo r{round_}-{i}")))
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(3 * MAX_CHANNELS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        assert sorted(r.tail[0] for r in results if r.ok and r.tail) == sorted(
            f"r{round_}-{i}" for i in range(3 * MAX_CHANNELS))
    assert conn.connect() is transport and transport.is_active()


def test_agent_takes_the_next_job_without_new_session_or_lib(conn):
    script = ('. "${0%/*}/lib.sh"; ' + PPID
              + 'echo "a=${KAI_A-unset} f=$(ls "$KAI_FILES_DIR") lib=$kai_lib_loaded"')
    r1 = conn.run_job(job(script, env={"KAI_A": "1"}, files={"one": "x"}))
    agent = conn._idle[0]
    assert agent.jobs == 1 and set(agent.has) == {"lib.sh", "step.sh"}
    # the second frame carries no lib.sh and no script: the agent keeps them
    second = job(script)
    frame = build_frame(second, agent.has)
    assert b"KAI-PART lib.sh" not in frame and b"KAI-PART step.sh" not in frame
    r2 = conn.run_job(second)
    assert r1.tail == ["a=1 f=one lib=1"]
    assert r2.tail == ["a=unset f= lib=1"]  # no env or files left over from the first job
    assert agent_pid(r1) == agent_pid(r2) and agent.jobs == 2
    # a changed script under the same name is sent again
    r3 = conn.run_job(job(PPID + "echo changed"))
    assert r3.tail == ["changed"] and agent_pid(r3) == agent_pid(r1)


def test_short_jobs_back_to_back_keep_one_agent_and_its_directory(conn):
    # A job that ends within milliseconds has its stdin watcher killed moments after its fork.
    # That watcher once ran the agent's own exit cleanup and removed the live agent's directory
    # (one run in a few under CPU load): the next job then lost its outputs or its agent.
    pids, roots = set(), set()
    for _ in range(120):
        res = conn.run_job(job(PPID + 'echo "${KAI_WORK%/*}" > "$KAI_OUT_DIR/root"'))
        assert res.ok and res.tail == [], res
        pids.add(agent_pid(res))
        roots.add(res.outputs["root"].decode().strip())
    assert len(pids) == 1 and len(roots) == 1
    assert Path(roots.pop()).is_dir()


def test_a_dead_idle_agent_is_replaced_and_close_ends_agents(conn):
    first = agent_pid(conn.run_job(job(PPID + "true")))
    os.kill(first, 9)
    wait_until("the killed agent gone", lambda: not os.path.exists(f"/proc/{first}"), 5, 0.05)
    time.sleep(0.2)  # let the channel close reach us, or not: both paths must work
    res = conn.run_job(job(PPID + "echo fine"))
    assert res.ok and res.tail == ["fine"]
    second = agent_pid(res)
    assert second != first
    res = conn.run_job(job(PPID + 'echo "${KAI_WORK%/*}" > "$KAI_OUT_DIR/root"'))
    root = Path(res.outputs["root"].decode().strip())
    assert root.is_dir() and root.name.startswith("kai.")
    conn.close()
    wait_until("the agent ended by EOF", lambda: not os.path.exists(f"/proc/{second}"), 5, 0.05)
    wait_until("the agent's directory removed", lambda: not root.exists(), 5, 0.05)


def test_agent_whose_directory_vanished_reports_the_job_then_is_replaced(conn, caplog):
    # something removed the agent's directory (a /tmp cleaner): the job's result still stands,
    # that agent never says it is ready again, and the next job runs on a fresh one. What the
    # agent says about it is logged for the operator, never part of either job's output.
    caplog.set_level(logging.INFO, logger="installers.ssh")
    res = conn.run_job(job('echo "$PPID"; rm -rf "${KAI_WORK%/*}"'))
    assert res.ok and len(res.tail) == 1 and res.tail[0].isdigit()
    again = conn.run_job(job('echo "$PPID"'))
    assert again.ok and len(again.tail) == 1 and again.tail[0].isdigit()
    assert again.tail[0] != res.tail[0]
    assert "could not empty" in caplog.text  # the retired agent's last words, in the log


def test_agent_whose_kept_script_vanished_is_retired_before_the_next_job(conn):
    # the agent keeps lib.sh and step.sh for later jobs and will not be sent them again: if one
    # is gone, it must not claim to be ready
    res = conn.run_job(job(PPID + 'rm -f "${KAI_WORK%/*}/lib.sh"'))
    assert res.ok
    again = conn.run_job(job(PPID + 'echo ok'))
    assert again.ok and again.tail == ["ok"] and agent_pid(again) != agent_pid(res)


def test_agent_is_not_reused_after_a_cancel(conn):
    m = marker()
    cancel = threading.Event()
    box, lines = {}, []
    th = threading.Thread(target=lambda: box.update(
        r=conn.run_job(job(f'echo "agent=$PPID"; sleep {m}'), on_line=lines.append,
                       cancel=cancel)))
    th.start()
    wait_until("the job running and talking", lambda: pids_matching(f"sleep {m}") and lines, 10, 0.05)
    agent = int(lines[0].removeprefix("agent="))  # this job's agent, not any other on the machine
    cancel.set()
    th.join(15)
    assert box["r"].cancelled and not conn._idle
    wait_until("the agent ended by EOF (connection closed)", lambda: not os.path.exists(f"/proc/{agent}"), 10, 0.05)
    res = conn.run_job(job(PPID + "echo after"))
    assert res.tail == ["after"] and agent_pid(res) != agent


def test_idle_agents_are_capped_and_give_their_slots_up(conn):
    def burst(n):
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            conn.run_job(job(f"sleep 0.3; echo job-{i}")))) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return results

    assert all(r.ok for r in burst(MAX_CHANNELS))
    assert len(conn._idle) == MAX_IDLE_AGENTS
    # idle agents hold channel slots; a full burst still gets all of them
    assert all(r.ok for r in burst(MAX_CHANNELS))


def test_kai_exec_rejects_path_traversal_in_part_names(conn):
    # a hand-made frame: kai-exec.sh must refuse names with .. itself
    t = conn.connect()
    chan = t.open_session()
    chan.exec_command(exec_command("none"))
    chan.sendall(b"KAI-PART files/../../etc/x 1\nx KAI-RUN\n")
    chan.shutdown_write()
    assert chan.recv_exit_status() == 98
    assert b"bad part" in chan.recv_stderr(1000)
    chan.close()


def test_kai_exec_is_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    path = Path(__file__).parents[1] / "installers" / "scripts" / "kai-exec.sh"
    out = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout



# ----------------------------------------------------------------------------------------------
# timeout, cancel, dropped connection: the remote process tree must go
# ----------------------------------------------------------------------------------------------


def test_timeout_ends_job_and_kills_remote_processes(conn):
    m = marker()
    t0 = time.monotonic()
    res = conn.run_job(job(f"echo started; sleep {m}", timeout_s=1.0))
    assert res.timed_out and res.exit_code == 124 and not res.ok
    assert time.monotonic() - t0 < 4
    assert res.tail[0] == "started"
    wait_until("the timed-out job's processes gone", lambda: not pids_matching(f"sleep {m}"), 1, 0.05)


def test_cancel_kills_whole_tree_including_escapees(conn):
    a, b, c, d = marker(), marker(), marker(), marker()
    script = (f"sleep {a} & sleep {b} & (sleep {c}; echo never) & "
              f"setsid sleep {d} & echo ready; wait")
    cancel = threading.Event()
    box = {}
    th = threading.Thread(target=lambda: box.update(r=conn.run_job(job(script), cancel=cancel)))
    th.start()
    wait_until("all four sleeps running", lambda: all(pids_matching(f"sleep {x}") for x in (a, b, c, d)), 5, 0.05)
    t0 = time.monotonic()
    cancel.set()
    wait_until("all four sleeps gone after the cancel",
               lambda: not any(pids_matching(f"sleep {x}") for x in (a, b, c, d)), 6, 0.05)
    gone_after = time.monotonic() - t0
    th.join(10)
    res = box["r"]
    assert res.cancelled and not res.ok and res.exit_code == 130
    assert gone_after < 6
    assert "never" not in res.tail


def test_step_ignoring_term_is_killed_after_grace(conn):
    m = marker()
    cancel = threading.Event()
    box = {}
    script = f"trap '' TERM; echo ready; sleep {m}"
    th = threading.Thread(target=lambda: box.update(r=conn.run_job(job(script), cancel=cancel)))
    th.start()
    wait_until("the job running", lambda: pids_matching(f"sleep {m}"), 5, 0.05)
    cancel.set()
    t0 = time.monotonic()
    wait_until("the TERM-ignoring job gone", lambda: not pids_matching(f"sleep {m}"), 7, 0.05)
    assert time.monotonic() - t0 > 3  # it took the KILL after the 5 s TERM grace
    th.join(10)
    assert box["r"].cancelled


def test_dropped_connection_kills_remote_tree_and_is_reported(conn):
    a, b = marker(), marker()
    box = {}

    def run():
        try:
            box["r"] = conn.run_job(job(f"sleep {a} & sleep {b}; wait", step="runtime"))
        except ConnectionLostError as e:
            box["e"] = e

    th = threading.Thread(target=run)
    th.start()
    wait_until("both jobs running", lambda: pids_matching(f"sleep {a}") and pids_matching(f"sleep {b}"), 5, 0.05)
    conn.connect().sock.shutdown(socket.SHUT_RDWR)  # abrupt: no SSH close, the TCP link just ends
    th.join(10)
    assert "e" in box, box
    msg = str(box["e"])
    assert "node-1" in msg and "runtime" in msg and "lost" in msg and box["e"].retryable
    wait_until("both jobs gone with the connection",
               lambda: not pids_matching(f"sleep {a}") and not pids_matching(f"sleep {b}"), 6, 0.05)
    # the Prefect task's retry uses the same Connection: it reconnects
    assert conn.run_job(job("echo again")).tail == ["again"]


def test_idle_agents_of_a_dropped_link_are_not_handed_the_next_job(conn):
    # Seen in CI: the node-lock renewal had left a second, idle agent on a control plane when its
    # SSH session was killed mid-step. The step's retry took that agent ("ready" before the link
    # died), its frame hit the closed channel ("Socket is closed"), and with no live transport the
    # retry failed as a lost connection instead of reconnecting.
    jobs = [threading.Thread(target=conn.run_job, args=(job("sleep 0.3"),)) for _ in range(2)]
    for t in jobs:
        t.start()
    for t in jobs:
        t.join(10)
    assert len(conn._idle) == 2, "two agents ended their jobs and wait idle"
    transport = conn.connect()
    transport.sock.shutdown(socket.SHUT_RDWR)  # the link ends; no SSH close
    assert wait_until("the transport noticing the link ended", lambda: not transport.is_active(), 5)
    res = conn.run_job(job("echo reconnected", step="kubeadm-init"))
    assert res.ok and res.tail == ["reconnected"], res
    assert conn.connect() is not transport, "the job ran on a new connection"


# ----------------------------------------------------------------------------------------------
# secrets
# ----------------------------------------------------------------------------------------------


def _all_cmdlines() -> str:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return "\n".join(out)


def test_secrets_not_on_command_lines_nor_in_logs(conn, caplog):
    secret = f"s3cr3t-{random.randint(10**9, 10**10)}"
    m = marker()
    script = f'echo "public=$KAI_PUBLIC"; printf %s "$KAI_JOIN_TOKEN" > "$KAI_OUT_DIR/tok"; sleep {m} & wait'
    caplog.set_level(logging.DEBUG)
    cancel = threading.Event()
    box, lines = {}, []
    th = threading.Thread(target=lambda: box.update(r=conn.run_job(
        job(script, env={"KAI_PUBLIC": "visible"}, secret_env={"KAI_JOIN_TOKEN": secret}),
        on_line=lines.append, cancel=cancel)))
    th.start()
    wait_until("the job running", lambda: pids_matching(f"sleep {m}"), 5, 0.05)
    cmdlines = _all_cmdlines()
    assert f"sleep {m}" in cmdlines  # the scan sees the job's processes
    assert secret not in cmdlines
    cancel.set()
    th.join(10)
    assert lines == ["public=visible"]
    assert box["r"].outputs["tok"] == secret.encode()  # the script did get it
    assert secret not in caplog.text and any(r.name.startswith("paramiko") for r in caplog.records)
