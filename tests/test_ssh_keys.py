"""Host key verification against a real OpenSSH server: unknown and changed keys, pins, accept_new."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from installers.ssh import Connection, HostKeyError
from tests.support.sshd_fixture import keygen, sshd  # noqa: F401  (fixture)
from tests.support.ssh_jobs import job

pytestmark = pytest.mark.sshd


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
        assert c.run_job(job("echo ok")).tail == ["ok"]
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
        assert c.run_job(job("echo pinned")).tail == ["pinned"]
    wrong = keygen(tmp_path / "k2").fingerprint
    c = Connection(sshd.target(known_hosts=nowhere, host_key_fingerprints=(wrong,)))
    with pytest.raises(HostKeyError) as e:
        c.connect()
    assert wrong in str(e.value) and sshd.fingerprint in str(e.value)
    assert f"{sshd.host}:{sshd.port}" in str(e.value)
