"""A real OpenSSH server on loopback for tests (Debian's openssh-server, /usr/sbin/sshd).

    from tests.support.sshd_fixture import sshd  # noqa: F401  (makes the fixture available)

    def test_x(sshd):
        target = sshd.target(node="n1")            # SSHTarget: root, client key, known_hosts

`sshd` is module-scoped: generated host and client keys, ListenAddress 127.0.0.1, a free port,
`-D -e -f cfg`, root login by key only. `SSHD.start(..., users_overlay=...)` can also run the
server in a private mount namespace where extra users exist (for sudo tests) — the machine's own
/etc is never changed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest

from tests.support.ports import free_port

SSHD_BIN = "/usr/sbin/sshd"


def keygen(path: Path, kind: str = "ed25519") -> paramiko.PKey:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "kai-test", "-f", str(path)],
                   check=True)
    return paramiko.PKey.from_path(str(path))


@dataclass
class SSHD:
    dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    host_key: paramiko.PKey | None = None
    client_key_path: Path | None = None
    known_hosts_path: Path | None = None
    proc: subprocess.Popen | None = None
    extra_config: str = ""
    users_overlay: dict[str, str] = field(default_factory=dict)  # /etc path -> file content

    @property
    def fingerprint(self) -> str:
        return self.host_key.fingerprint

    def target(self, node: str = "node-1", **overrides):
        from installers.ssh import SSHTarget

        kw = dict(node=node, host=self.host, port=self.port, user="root",
                  key_file=str(self.client_key_path), known_hosts=str(self.known_hosts_path),
                  allow_agent=False, connect_timeout=5, connect_retries=0)
        kw.update(overrides)
        return SSHTarget(**kw)

    def start(self) -> "SSHD":
        self.dir.mkdir(parents=True, exist_ok=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.host_key = keygen(self.dir / "host_ed25519")
        keygen(self.dir / "client_ed25519")
        self.client_key_path = self.dir / "client_ed25519"
        shutil.copy(self.dir / "client_ed25519.pub", self.dir / "authorized_keys")
        self.port = free_port()
        self.known_hosts_path = self.dir / "known_hosts"
        self.known_hosts_path.write_text(
            f"[{self.host}]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n")
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            f"ListenAddress {self.host}\nPort {self.port}\n"
            f"HostKey {self.dir}/host_ed25519\nPidFile {self.dir}/sshd.pid\n"
            f"AuthorizedKeysFile {self.dir}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
            "MaxSessions 10\nMaxStartups 100:30:200\nLogLevel ERROR\n"
            # root's ~/.bashrc here runs `pyenv init` (~0.2-0.5 s per session): bash skips it
            # when SHLVL says it is nested, which keeps the tests fast
            "SetEnv SHLVL=5\n"
            "Subsystem sftp internal-sftp\n" + self.extra_config)
        cmd = [SSHD_BIN, "-D", "-e", "-f", str(cfg)]
        if self.users_overlay:
            # sshd reads authorized_keys as the logging-in user (private keys stay 0600)
            os.chmod(self.dir, 0o755)
            os.chmod(self.dir / "authorized_keys", 0o644)
            cmd = self._in_private_mount_ns(cmd)
        log = open(self.dir / "sshd.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self._wait_ready()
        return self

    def _in_private_mount_ns(self, cmd: list[str]) -> list[str]:
        """sshd (and every session it starts) sees overlay copies of some /etc files."""
        binds = []
        for n, (etc_path, content) in enumerate(self.users_overlay.items()):
            src = self.dir / f"overlay-{n}"
            src.write_text(content)
            os.chmod(src, 0o440 if "sudoers" in etc_path else 0o644)
            if etc_path == "/etc/shadow":
                os.chmod(src, 0o640)
            binds.append(f"mount --bind {src} {etc_path}")
        script = " && ".join(binds) + ' && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd]

    def _wait_ready(self, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("sshd did not answer in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def session_pids(self) -> list[int]:
        """sshd processes serving connections (children of the listener)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def start_sshd(**kw) -> SSHD:
    return SSHD(dir=Path(tempfile.mkdtemp(prefix="kai-sshd-")), **kw).start()


@pytest.fixture(scope="module")
def sshd():
    if not os.path.exists(SSHD_BIN) or os.geteuid() != 0:
        pytest.skip("needs root and /usr/sbin/sshd")
    server = start_sshd()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
