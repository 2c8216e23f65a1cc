"""Child process: the floor — plain paramiko, one persistent connection and one thread per host.

    python -m benchmarks.paramiko_floor CONFIG.json RESULT.json

No Prefect, no kai-exec frame: each step is `exec_command("sleep d; echo …")` on every host, with a
barrier between steps (the same step-by-step semantics as kai's plan and Ansible's `linear`).
Host keys are verified against the light hosts' known_hosts (RejectPolicy).
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

import paramiko


def main(argv: list[str]) -> int:
    config_path, result_path = argv
    cfg = json.loads(Path(config_path).read_text())
    hosts: list[tuple[str, str]] = [tuple(h) for h in cfg["hosts"]]
    steps, duration = cfg["steps"], cfg["duration"]
    command = f"sleep {duration:g}; echo bench-step slept"
    barrier = threading.Barrier(len(hosts))
    done = {name: 0 for name, _ in hosts}
    errors: list[str] = []
    lock = threading.Lock()

    def worker(name: str, address: str) -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(cfg["known_hosts"])
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        broken = False
        try:
            client.connect(address, username="root", key_filename=cfg["key_file"],
                           allow_agent=False, look_for_keys=False, timeout=30, banner_timeout=30,
                           auth_timeout=30)
        except Exception as exc:  # noqa: BLE001 - counted as this host's error
            with lock:
                errors.append(f"{name}: connect: {exc}")
            broken = True
        for _ in range(steps):
            if not broken:
                try:
                    _, out, _ = client.exec_command(command, timeout=duration * 10 + 60)
                    text = out.read()
                    if out.channel.recv_exit_status() != 0 or b"bench-step" not in text:
                        raise RuntimeError(f"bad result {text!r}")
                    with lock:
                        done[name] += 1
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        errors.append(f"{name}: {exc}")
                    broken = True
            barrier.wait()
        client.close()

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=h, daemon=True) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    Path(result_path).write_text(json.dumps({
        "wall_s": wall, "steps_done": done, "errors": errors,
        "peak_rss_mb": ru.ru_maxrss / 1024, "cpu_s": ru.ru_utime + ru.ru_stime}, indent=2))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
