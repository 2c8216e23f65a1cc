"""Run the synthetic plan as an Ansible playbook (ansible-core) and read the PLAY RECAP."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.ansible.playbook import write_config, write_inventory, write_playbook
from benchmarks.measure import TreeSampler, children_cpu

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def ansible_playbook_bin() -> str:
    path = Path(sys.executable).parent / "ansible-playbook"
    if not path.exists():
        raise RuntimeError("ansible-playbook not found next to the interpreter: "
                           "pip install -e '.[bench]' (ansible-core)")
    return str(path)


def run_ansible(hosts: list[tuple[str, str]], *, steps: int, duration: float, strategy: str,
                module: str, key_file: str, known_hosts: str, log_dir: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kai-bench-ansible-"))
    control_dir = Path(tempfile.mkdtemp(prefix="kb-cp-", dir="/tmp"))  # short: socket path limit
    inventory, cfg, playbook = work / "hosts.ini", work / "ansible.cfg", work / "play.yml"
    write_inventory(inventory, hosts, key_file)
    write_config(cfg, inventory=inventory, forks=len(hosts), strategy=strategy,
                 known_hosts=known_hosts, workdir=work, control_dir=control_dir)
    write_playbook(playbook, steps, duration, module)
    env = {**os.environ, "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_HOME": str(work / "home")}
    log_path = log_dir / f"ansible-{module}-{strategy}-{len(hosts)}.log"
    cpu0 = children_cpu()
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([ansible_playbook_bin(), str(playbook)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=work)
        sampler = TreeSampler(proc.pid).start()
        rc = proc.wait()
        wall = time.time() - t0
        sampler.stop()
    cpu = children_cpu() - cpu0
    text = log_path.read_text(errors="replace")
    recap = {m.group(1): dict(ok=int(m.group(2)), unreachable=int(m.group(4)),
                              failed=int(m.group(5)))
             for m in map(RECAP.match, text.splitlines()) if m}
    done = {name: recap.get(name, {}).get("ok", 0) for name, _ in hosts}
    errors = [f"{name}: {r}" for name, r in recap.items() if r["failed"] or r["unreachable"]]
    if rc != 0:
        errors.append(f"ansible-playbook exit code {rc}")
    _stop_control_masters(control_dir)
    shutil.rmtree(work, ignore_errors=True)
    return {"wall_s": wall, "steps_done": done, "errors": errors, "exit_code": rc,
            "peak_rss_mb": sampler.peak_rss_mb, "cpu_s": cpu, "log": str(log_path)}


def _stop_control_masters(control_dir: Path) -> None:
    """The ControlPersist masters this run started (found by their unique control path)."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(control_dir) in cmd and "ssh" in cmd:
            try:
                os.kill(proc.info["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
    shutil.rmtree(control_dir, ignore_errors=True)
