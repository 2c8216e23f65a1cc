"""Connecting: retries with capped backoff, close during backoff, auth failures, key_text, bastions."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from installers.ssh import ConnectError, Connection, Fleet
from tests.support.sshd_fixture import keygen, sshd  # noqa: F401  (fixture)
from tests.support.ssh_jobs import job

pytestmark = pytest.mark.sshd


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
        assert c.run_job(job("echo via-key-text")).tail == ["via-key-text"]
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


def test_a_host_that_stops_answering_is_a_lost_link_not_a_channel_limit(sshd):
    # A powered-off host looks alive to TCP until keepalives fail: a channel request then gets no
    # answer at all. That must read as a lost link (the step may be retried on a new connection),
    # not as sshd refusing channels.
    import contextlib
    import os
    import signal

    from installers.ssh import ConnectionLostError
    from tests.support.wait import wait_until

    c = Connection(sshd.target(connect_timeout=2))
    try:
        c.connect()
        ours = [p for p in _descendants(sshd.proc.pid)]
        assert ours, "no sshd process serves our connection"
        for pid in ours:  # (an earlier test's session may be ending meanwhile)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(ConnectionLostError, match="did not answer a request for a channel"):
                c.run_job(job("echo unreachable"))
            assert time.monotonic() - t0 < 10
        finally:
            for pid in ours:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        wait_until("the connection working again", lambda: c.run_job(job("echo back")).tail == ["back"], 20, 0.05)
    finally:
        c.close()


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return kids + [d for k in kids for d in _descendants(k)]
