"""sudo on the node: the password on stdin (never argv), refusals reported clearly, cancel."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from installers.ssh import Connection
from tests.support.sshd_fixture import start_sshd
from tests.support.ssh_jobs import job, marker, pids_matching
from tests.support.wait import wait_until

pytestmark = pytest.mark.sshd


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
        tricky = "a'b\"c\n$(id)"
        res = c.run_job(job('echo "$SUDO_USER"; id -u; printf %s "$KAI_X" > "$KAI_OUT_DIR/x"; '
                            'cat "$KAI_FILES_DIR/f"', env={"KAI_X": tricky},
                            files={"f": "file-body\n"}))
        # a non-root login that sudo made root; sudo read exactly the password line: the frame
        # after it arrived whole
        assert res.ok, res
        assert res.tail == [SUDO_USER, "0", "file-body"]
        assert res.outputs["x"] == tricky.encode()


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
        wait_until("the job running under sudo", lambda: pids_matching(f"sleep {m}"), 8, 0.05)
        cancel.set()
        wait_until("the job under sudo gone after the cancel", lambda: not pids_matching(f"sleep {m}"), 6, 0.05)
        th.join(10)
    assert box["r"].cancelled
