"""Run kai's node scripts for real on this machine without letting them change it.

A `ScriptNode` recreates kai-exec.sh's run-time layout ($KAI_WORK with lib.sh, the script,
files/ and out/; docs/architecture.md §3) in a temporary directory, with the done markers in a
temporary $KAI_STATE_DIR and strict fake commands (kubeadm, kubectl…) first on PATH.

Scripts that write below /etc run in a *sandbox*: a private mount namespace where /etc is an
overlay whose upper layer is a temporary directory (what a script writes to /etc lands there;
the machine's /etc is untouched), optionally in a new network namespace too (so iptables rules
exist only there). Seed files for the sandbox with `etc()`; read what the script wrote with
`etc_path()`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "installers" / "scripts"


class ScriptNode:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.files = self.work / "files"
        self.out = self.work / "out"
        self.state = root / "state"
        self.fakes = root / "bin"
        self.home = root / "home"
        self.etc_upper = root / "etc-upper"
        self._etc_workdir = root / "etc-work"
        self.strace_log = root / "strace.log"
        self.post_log = root / "post.log"
        for d in (self.files, self.out, self.state, self.fakes, self.home, self.etc_upper,
                  self._etc_workdir):
            d.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o700)

    # --- inputs ---------------------------------------------------------------------------

    def file(self, name: str, text: str) -> Path:
        path = self.files / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    def fake(self, name: str, body: str) -> Path:
        """An executable bash stand-in named `name`, first on the script's PATH."""
        path = self.fakes / name
        path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
        path.chmod(0o755)
        return path

    def etc(self, rel: str, text: str) -> Path:
        """A file that the sandboxed script sees as /etc/<rel>."""
        path = self.etc_upper / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def etc_path(self, rel: str) -> Path:
        """Where /etc/<rel> written inside the sandbox ended up."""
        return self.etc_upper / rel

    # --- running --------------------------------------------------------------------------

    def env(self, extra: dict[str, str], step: str, step_hash: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.fakes}:/usr/bin:/bin",
            "HOME": str(self.home),
            "KAI_WORK": str(self.work),
            "KAI_FILES_DIR": str(self.files),
            "KAI_OUT_DIR": str(self.out),
            "KAI_STATE_DIR": str(self.state),
            "KAI_STEP": step,
            "KAI_STEP_HASH": step_hash,
        }
        env.update(extra)
        return env

    def run(self, script: str, env: dict[str, str] | None = None, *, step: str | None = None,
            step_hash: str = "hash-1", sandbox: bool = False, netns: bool = False,
            strace: bool = False, setup: str = "", post: str = "",
            overlays: tuple[str, ...] = (), systemd: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        shutil.copy(SCRIPTS_DIR / "lib.sh", self.work / "lib.sh")
        shutil.copy(SCRIPTS_DIR / script, self.work / script)
        target = str(self.work / script)
        inner = f"bash {shlex.quote(target)}"
        if strace:
            inner = (f"strace -f -qq -v -s 65535 -e trace=execve -o {shlex.quote(str(self.strace_log))} "
                     + inner)
        if not (sandbox or netns or setup or post or overlays or systemd):
            return subprocess.run(["bash", "-c", inner],
                                  env=self.env(env or {}, step or Path(script).stem, step_hash),
                                  capture_output=True, text=True, timeout=timeout)
        mount = ""
        if sandbox:
            mount = ("mount -t overlay overlay -o "
                     f"lowerdir=/etc,upperdir={self.etc_upper},workdir={self._etc_workdir} /etc\n")
        for path in overlays:  # more directories the script may write to, e.g. /usr/local, /opt
            upper, work = self.upper_dir(path), self.root / ("work" + path.replace("/", "-"))
            work.mkdir(parents=True, exist_ok=True)
            mount += f"mount -t overlay overlay -o lowerdir={path},upperdir={upper},workdir={work} {path}\n"
        if systemd:  # what kai_systemd_running looks for; systemctl itself is a fake
            mount += "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system\n"
        body = (f"set -e\n{mount}{setup}\nset +e\n{inner}\nrc=$?\n"
                f"( {post or ':'} ) >{shlex.quote(str(self.post_log))} 2>&1\nexit $rc\n")
        cmd = ["unshare", "--mount", "--propagation", "private"]
        if netns:
            cmd.append("--net")
        cmd += ["bash", "-c", body]
        return subprocess.run(cmd, env=self.env(env or {}, step or Path(script).stem, step_hash),
                              capture_output=True, text=True, timeout=timeout)

    def upper_dir(self, path: str) -> Path:
        """Where files written below `path` (an entry of `overlays`) land."""
        upper = self.root / ("upper" + path.replace("/", "-"))
        upper.mkdir(parents=True, exist_ok=True)
        return upper

    def execve_lines(self) -> list[str]:
        return [ln for ln in self.strace_log.read_text().splitlines() if "execve(" in ln]


def lib_call(tmp: Path, snippet: str, env: dict[str, str] | None = None,
             strace_log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Source lib.sh in a fresh bash and run `snippet` (a test of one helper)."""
    script = tmp / "lib-call.sh"
    script.write_text(f"set -euo pipefail\n. {shlex.quote(str(SCRIPTS_DIR / 'lib.sh'))}\n{snippet}\n")
    cmd = ["bash", str(script)]
    if strace_log is not None:
        cmd = ["strace", "-f", "-qq", "-s", "65535", "-e", "trace=execve", "-o", str(strace_log)] + cmd
    full_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "KAI_WORK": str(tmp)}
    full_env.update(env or {})
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=60)


def can_sandbox() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None
