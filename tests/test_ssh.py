"""kai's SSH runner against a real OpenSSH server on loopback (tests/sshd_fixture.py)."""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paramiko
import pytest

from installers.ssh import (
    MAX_CHANNELS,
    ConnectError,
    Connection,
    ConnectionLostError,
    Fleet,
    HostKeyError,
    RemoteJob,
    SSHTarget,
    build_frame,
)
from tests.sshd_fixture import keygen, start_sshd, sshd  # noqa: F401  (fixture)

pytestmark = pytest.mark.sshd

LIB = "kai_lib_loaded=1\n"


def job(script: str, *, step="test-step", env=None, secret_env=None, files=None, timeout_s=30.0):
    return RemoteJob(step=step, script="step.sh", script_text="set -euo pipefail\n" + script,
                     lib_text=LIB, env=env or {}, secret_env=secret_env or {}, files=files or {},
                     timeout_s=timeout_s)


def marker() -> int:
    """A sleep duration nobody else uses, to find our remote processes with pgrep."""
    return random.randint(10_000_000, 99_999_999)


def pids_matching(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_until(pred, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


@pytest.fixture
def conn(sshd):
    c = Connection(sshd.target())
    yield c
    c.close()


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
    # (the agent tidies up after it reported the job, before it says it is ready again)
    assert wait_until(lambda: sorted(p.name for p in work.rglob("*")) == ["files", "out"], 5)
    conn.close()
    assert wait_until(lambda: not work.parent.exists(), 5)


def test_connection_is_reused_and_run_fixed_command(conn):
    r1 = conn.run_job(job("echo one"))
    t1 = conn.connect()
    r2 = conn.run("echo two; exit 3")
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


def _agent_pid(res) -> int:
    """The job's bash is exec'd from a subshell of the agent: its parent is the agent."""
    return int(res.outputs["ppid"])


PPID = 'echo "$PPID" > "$KAI_OUT_DIR/ppid"; '


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
    assert _agent_pid(r1) == _agent_pid(r2) and agent.jobs == 2
    # a changed script under the same name is sent again
    r3 = conn.run_job(job(PPID + "echo changed"))
    assert r3.tail == ["changed"] and _agent_pid(r3) == _agent_pid(r1)


def test_short_jobs_back_to_back_keep_one_agent_and_its_directory(conn):
    # A job that ends within milliseconds has its stdin watcher killed moments after its fork.
    # That watcher once ran the agent's own exit cleanup and removed the live agent's directory
    # (one run in a few under CPU load): the next job then lost its outputs or its agent.
    pids, roots = set(), set()
    for _ in range(120):
        res = conn.run_job(job(PPID + 'echo "${KAI_WORK%/*}" > "$KAI_OUT_DIR/root"'))
        assert res.ok and res.tail == [], res
        pids.add(_agent_pid(res))
        roots.add(res.outputs["root"].decode().strip())
    assert len(pids) == 1 and len(roots) == 1
    assert Path(roots.pop()).is_dir()


def test_a_dead_idle_agent_is_replaced_and_close_ends_agents(conn):
    first = _agent_pid(conn.run_job(job(PPID + "true")))
    os.kill(first, 9)
    assert wait_until(lambda: not os.path.exists(f"/proc/{first}"), 5)
    time.sleep(0.2)  # let the channel close reach us, or not: both paths must work
    res = conn.run_job(job(PPID + "echo fine"))
    assert res.ok and res.tail == ["fine"]
    second = _agent_pid(res)
    assert second != first
    res = conn.run_job(job(PPID + 'echo "${KAI_WORK%/*}" > "$KAI_OUT_DIR/root"'))
    root = Path(res.outputs["root"].decode().strip())
    assert root.is_dir() and root.name.startswith("kai.")
    conn.close()
    assert wait_until(lambda: not os.path.exists(f"/proc/{second}"), 5)  # EOF ended it
    assert wait_until(lambda: not root.exists(), 5)  # and it removed its directory


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
    assert again.ok and again.tail == ["ok"] and _agent_pid(again) != _agent_pid(res)


def test_agent_is_not_reused_after_a_cancel(conn):
    m = marker()
    cancel = threading.Event()
    box, lines = {}, []
    th = threading.Thread(target=lambda: box.update(
        r=conn.run_job(job(f'echo "agent=$PPID"; sleep {m}'), on_line=lines.append,
                       cancel=cancel)))
    th.start()
    assert wait_until(lambda: pids_matching(f"sleep {m}") and lines, 10)
    agent = int(lines[0].removeprefix("agent="))  # this job's agent, not any other on the machine
    cancel.set()
    th.join(15)
    assert box["r"].cancelled and not conn._idle
    assert wait_until(lambda: not os.path.exists(f"/proc/{agent}"), 10)  # closed: EOF ended it
    res = conn.run_job(job(PPID + "echo after"))
    assert res.tail == ["after"] and _agent_pid(res) != agent


def test_idle_agents_are_capped_and_give_their_slots_up(conn):
    from installers.ssh import MAX_IDLE_AGENTS

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
    # idle agents hold channel slots; plain commands and a full burst still get theirs
    assert conn.run("echo plain").tail == ["plain"]
    assert all(r.ok for r in burst(MAX_CHANNELS))


def test_upload_sets_mode(conn, tmp_path):
    dest = tmp_path / "uploaded.conf"
    conn.upload(b"secret-ish\n", str(dest), mode=0o640)
    assert dest.read_bytes() == b"secret-ish\n"
    assert dest.stat().st_mode & 0o777 == 0o640


def test_frame_rejects_bad_names():
    with pytest.raises(ValueError, match=r"env: 'BAD-NAME'"):
        build_frame(job("true", env={"BAD-NAME": "x"}))
    with pytest.raises(ValueError, match=r"files: '../x'"):
        build_frame(job("true", files={"../x": "x"}))
    with pytest.raises(ValueError, match="KAI_WORK"):
        build_frame(job("true", env={"KAI_WORK": "/"}))


def test_kai_exec_rejects_path_traversal_in_part_names(conn):
    # a hand-made frame: kai-exec.sh must refuse names with .. itself
    t = conn.connect()
    chan = t.open_session()
    from installers.ssh import _exec_command
    chan.exec_command(_exec_command("none"))
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
# host keys
# ----------------------------------------------------------------------------------------------


def test_changed_host_key_is_refused_naming_both_fingerprints(sshd, tmp_path):
    other = keygen(tmp_path / "other")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{sshd.host}]:{sshd.port} {other.get_name()} {other.get_base64()}\n")
    for accept_new in (False, True):  # accept_new never accepts a *changed* key
        c = Connection(sshd.target(known_hosts=str(kh), accept_new=accept_new, connect_retries=2))
        t0 = time.monotonic()
        with pytest.raises(HostKeyError) as e:
            c.connect()
        assert time.monotonic() - t0 < 2  # not retried
        msg = str(e.value)
        assert f"{sshd.host}:{sshd.port}" in msg and "CHANGED" in msg
        assert other.fingerprint in msg and sshd.fingerprint in msg
    assert kh.read_text().count("\n") == 1  # nothing added


def test_unknown_host_key_is_refused_with_fingerprint(sshd, tmp_path):
    c = Connection(sshd.target(known_hosts=str(tmp_path / "empty_known_hosts")))
    with pytest.raises(HostKeyError) as e:
        c.connect()
    msg = str(e.value)
    assert f"{sshd.host}:{sshd.port}" in msg and sshd.fingerprint in msg
    assert "accept_new" in msg and "known_hosts" in msg
    assert not (tmp_path / "empty_known_hosts").exists()


def test_accept_new_adds_the_key_then_it_is_verified(sshd, tmp_path):
    kh = tmp_path / "sub" / "known_hosts"
    with Connection(sshd.target(known_hosts=str(kh), accept_new=True)) as c:
        c.connect()
    line = kh.read_text()
    assert line.startswith(f"[{sshd.host}]:{sshd.port} ssh-ed25519 ")
    assert kh.stat().st_mode & 0o777 == 0o600
    with Connection(sshd.target(known_hosts=str(kh))) as c:  # now known, accept_new off
        assert c.run("echo ok").tail == ["ok"]
    assert kh.read_text() == line  # not added twice


def test_hashed_known_hosts_entry_is_understood(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    shutil.copy(sshd.known_hosts_path, kh)
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "|1|" in kh.read_text()
    with Connection(sshd.target(known_hosts=str(kh))) as c:
        c.connect()


def test_pinned_fingerprint_accepted_and_wrong_pin_refused(sshd, tmp_path):
    nowhere = str(tmp_path / "no_known_hosts")
    with Connection(sshd.target(known_hosts=nowhere, host_key_fingerprints=(sshd.fingerprint,))) as c:
        assert c.run("echo pinned").tail == ["pinned"]
    wrong = keygen(tmp_path / "k2").fingerprint
    c = Connection(sshd.target(known_hosts=nowhere, host_key_fingerprints=(wrong,)))
    with pytest.raises(HostKeyError) as e:
        c.connect()
    assert wrong in str(e.value) and sshd.fingerprint in str(e.value)
    assert f"{sshd.host}:{sshd.port}" in str(e.value)


def test_bad_fingerprint_format_names_the_field():
    with pytest.raises(ValueError, match="host_key_fingerprints"):
        SSHTarget(node="n", host="127.0.0.1", host_key_fingerprints=("MD5:aa:bb",))


# ----------------------------------------------------------------------------------------------
# auth and connect failures
# ----------------------------------------------------------------------------------------------


def test_connect_to_closed_port_retries_with_backoff_then_fails(sshd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        c = Connection(sshd.target(port=port, connect_retries=2, connect_backoff_s=0.1,
                                   connect_timeout=1))
        t0 = time.monotonic()
        with pytest.raises(ConnectError) as e:
            c.connect()
        elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 3  # 0.1 + 0.2 backoff, bounded
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "3 attempt" in msg and "refused" in msg.lower()
    assert e.value.retryable


def test_close_does_not_wait_for_a_connect_in_backoff(sshd):
    """A cancelled flow closes its fleet while a worker thread is still retrying a dead host:
    close() must return at once and the connect must give up, not hold the process for a minute."""
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        c = Connection(sshd.target(port=port, connect_retries=5, connect_backoff_s=3, connect_timeout=1))
        errors = []
        worker = threading.Thread(target=lambda: errors.append(pytest.raises(ConnectError, c.connect)))
        worker.start()
        time.sleep(0.3)  # the first attempt was refused; now sleeping 3 s before the next
        t0 = time.monotonic()
        c.close()
        assert time.monotonic() - t0 < 1
        worker.join(1.5)  # the backoff sleep is cut short too
    assert not worker.is_alive(), "connect kept retrying after close()"
    assert errors and "closed" in str(errors[0].value)


def test_auth_failure_is_not_retried(sshd, tmp_path):
    keygen(tmp_path / "stranger")
    c = Connection(sshd.target(key_file=str(tmp_path / "stranger"), connect_retries=3,
                               connect_backoff_s=2))
    t0 = time.monotonic()
    with pytest.raises(ConnectError) as e:
        c.connect()
    assert time.monotonic() - t0 < 1.5
    assert "authentication failed" in str(e.value) and not e.value.retryable


def test_key_text_from_a_secret(sshd):
    text = Path(sshd.client_key_path).read_text()
    with Connection(sshd.target(key_file=None, key_text=text)) as c:
        assert c.run("echo via-key-text").tail == ["via-key-text"]
    with pytest.raises(ConnectError, match="key_text"):
        Connection(sshd.target(key_file=None, key_text="not a key")).connect()


def test_bastion_direct_tcpip(sshd):
    bastion = sshd.target(node="bastion")
    with Fleet({"n1": sshd.target(node="n1", bastion=bastion),
                "n2": sshd.target(node="n2", bastion=bastion)}) as fleet:
        a, b = fleet.get("n1"), fleet.get("n2")
        assert fleet.get("n1") is a
        assert a.run_job(job("echo through-bastion")).tail == ["through-bastion"]
        assert b.run_job(job("echo also")).tail == ["also"]
        assert a._bastion is b._bastion  # one bastion connection shared
    with pytest.raises(KeyError, match="n3"):
        Fleet().get("n3")


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
    assert wait_until(lambda: not pids_matching(f"sleep {m}"), 1)


def test_cancel_kills_whole_tree_including_escapees(conn):
    a, b, c, d = marker(), marker(), marker(), marker()
    script = (f"sleep {a} & sleep {b} & (sleep {c}; echo never) & "
              f"setsid sleep {d} & echo ready; wait")
    cancel = threading.Event()
    box = {}
    th = threading.Thread(target=lambda: box.update(r=conn.run_job(job(script), cancel=cancel)))
    th.start()
    assert wait_until(lambda: all(pids_matching(f"sleep {x}") for x in (a, b, c, d)), 5)
    t0 = time.monotonic()
    cancel.set()
    assert wait_until(lambda: not any(pids_matching(f"sleep {x}") for x in (a, b, c, d)), 6)
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
    assert wait_until(lambda: pids_matching(f"sleep {m}"), 5)
    cancel.set()
    t0 = time.monotonic()
    assert wait_until(lambda: not pids_matching(f"sleep {m}"), 7)
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
    assert wait_until(lambda: pids_matching(f"sleep {a}") and pids_matching(f"sleep {b}"), 5)
    conn.connect().sock.shutdown(socket.SHUT_RDWR)  # abrupt: no SSH close, the TCP link just ends
    th.join(10)
    assert "e" in box, box
    msg = str(box["e"])
    assert "node-1" in msg and "runtime" in msg and "lost" in msg and box["e"].retryable
    assert wait_until(lambda: not pids_matching(f"sleep {a}") and not pids_matching(f"sleep {b}"), 6)
    # the Prefect task's retry uses the same Connection: it reconnects
    assert conn.run_job(job("echo again")).tail == ["again"]


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
    assert wait_until(lambda: pids_matching(f"sleep {m}"), 5)
    cmdlines = _all_cmdlines()
    assert f"sleep {m}" in cmdlines  # the scan sees the job's processes
    assert secret not in cmdlines
    cancel.set()
    th.join(10)
    assert lines == ["public=visible"]
    assert box["r"].outputs["tok"] == secret.encode()  # the script did get it
    assert secret not in caplog.text and any(r.name.startswith("paramiko") for r in caplog.records)


# ----------------------------------------------------------------------------------------------
# sudo
# ----------------------------------------------------------------------------------------------

SUDO_USER, SUDO_UID, SUDO_PASSWORD = "kaitest", 4242, 'pw "with" $(spaces) \'n quotes'


@pytest.fixture(scope="module")
def sudo_sshd(tmp_path_factory):
    """An sshd in a private mount namespace whose /etc/{passwd,shadow,group,sudoers} carry a
    user `kaitest` with a password and a sudo rule that requires it. The machine's /etc is
    untouched; sudo, PAM and pam_unix are the machine's real ones."""
    if shutil.which("sudo") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root, sudo and unshare")
    home = Path(tempfile.mkdtemp(prefix="kai-home-"))  # /tmp itself, reachable by the user
    os.chown(home, SUDO_UID, SUDO_UID)
    pw_hash = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=SUDO_PASSWORD,
                             capture_output=True, text=True, check=True).stdout.strip()
    overlay = {
        "/etc/passwd": Path("/etc/passwd").read_text()
        + f"{SUDO_USER}:x:{SUDO_UID}:{SUDO_UID}::{home}:/bin/bash\n",
        "/etc/group": Path("/etc/group").read_text() + f"{SUDO_USER}:x:{SUDO_UID}:\n",
        "/etc/shadow": Path("/etc/shadow").read_text() + f"{SUDO_USER}:{pw_hash}:19000:0:99999:7:::\n",
        "/etc/sudoers": "Defaults env_reset\nDefaults lecture=never\n"
        "root ALL=(ALL:ALL) ALL\n" f"{SUDO_USER} ALL=(ALL:ALL) ALL\n",
    }
    server = start_sshd(users_overlay=overlay)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def test_sudo_password_is_read_from_stdin_and_frame_survives(sudo_sshd):
    t = sudo_sshd.target(user=SUDO_USER, sudo="password", sudo_password=SUDO_PASSWORD)
    with Connection(t) as c:
        assert c.run("id -un").tail == [SUDO_USER]  # really a non-root login
        tricky = "a'b\"c\n$(id)"
        res = c.run_job(job('id -u; printf %s "$KAI_X" > "$KAI_OUT_DIR/x"; cat "$KAI_FILES_DIR/f"',
                            env={"KAI_X": tricky}, files={"f": "file-body\n"}))
        # sudo read exactly the password line byte by byte: the frame after it arrived whole
        assert res.ok, res
        assert res.tail == ["0", "file-body"]
        assert res.outputs["x"] == tricky.encode()
        assert c.run("id -u", sudo=True).tail == ["0"]


def test_sudo_wrong_password_fails_clearly_without_hanging(sudo_sshd):
    t = sudo_sshd.target(user=SUDO_USER, sudo="password", sudo_password="wrong")
    with Connection(t) as c:
        t0 = time.monotonic()
        res = c.run_job(job("echo should-not-run", timeout_s=30))
        assert time.monotonic() - t0 < 15 and not res.timed_out
    assert not res.ok and res.exit_code != 0
    assert "sudo" in res.error and "sudo_password" in res.error
    assert "should-not-run" not in res.tail
    assert any("incorrect password" in line for line in res.tail)


def test_sudo_nopasswd_without_rule_fails_at_once(sudo_sshd):
    t = sudo_sshd.target(user=SUDO_USER, sudo="nopasswd")
    with Connection(t) as c:
        t0 = time.monotonic()
        res = c.run_job(job("echo should-not-run"))
        assert time.monotonic() - t0 < 3
    assert not res.ok and "sudo" in res.error
    assert any("password is required" in line for line in res.tail)


def test_sudo_cancel_kills_remote_tree(sudo_sshd):
    m = marker()
    t = sudo_sshd.target(user=SUDO_USER, sudo="password", sudo_password=SUDO_PASSWORD)
    cancel = threading.Event()
    box = {}
    with Connection(t) as c:
        th = threading.Thread(target=lambda: box.update(
            r=c.run_job(job(f"sleep {m} & wait"), cancel=cancel)))
        th.start()
        assert wait_until(lambda: pids_matching(f"sleep {m}"), 8)
        cancel.set()
        assert wait_until(lambda: not pids_matching(f"sleep {m}"), 6)
        th.join(10)
    assert box["r"].cancelled
