"""Smoke run of the orchestration benchmark (benchmarks/orchestration.py) on 5 light hosts.

Not a timing assertion: it checks that every method completed every step on every host with no
error, that the Prefect server ingested the kai run, that the add_nodes plan touched only the new
host and the first control plane, and that the JSON, markdown and PNG were written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HOSTS, STEPS = 5, 2

pytestmark = [pytest.mark.e2e, pytest.mark.sshd]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not Path("/usr/sbin/sshd").exists():
        return "needs /usr/sbin/sshd"
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        return "needs ansible-core (pip install -e '.[bench]')"
    for mod in ("matplotlib", "psutil"):
        try:
            __import__(mod)
        except ImportError:
            return f"needs {mod} (pip install -e '.[bench]')"
    return None


@pytest.mark.timeout(900)
def test_benchmark_smoke(tmp_path: Path) -> None:
    if reason := _missing():
        pytest.skip(reason)
    cmd = [sys.executable, "-m", "benchmarks.orchestration", "--hosts", str(HOSTS),
           "--steps", str(STEPS), "--duration", "0.2", "--status-hosts", str(HOSTS),
           "--status-clients", "5", "--add-nodes-cluster", "3", "--out", str(tmp_path),
           "--name", "smoke"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    results = json.loads((tmp_path / "smoke.json").read_text())
    (size,) = results["sizes"]
    assert size["hosts"] == HOSTS
    methods = size["methods"]
    assert set(methods) == {"paramiko", "kai", "ansible-command-linear", "ansible-command-free",
                            "ansible-raw-linear"}
    for name, res in methods.items():
        assert res["errors"] == [], f"{name}: {res['errors']}"
        assert len(res["steps_done"]) == HOSTS, f"{name}: {res['steps_done']}"
        assert all(v == STEPS for v in res["steps_done"].values()), f"{name}: {res['steps_done']}"
        assert res["wall_s"] > 0

    kai = methods["kai"]
    assert kai["ingest"]["complete"], kai["ingest"]
    assert kai["ingest"]["marker_lines"] >= STEPS * HOSTS
    assert kai["db_locked"] == 0

    assert results["status"]["calls"] > 0 and results["status"]["error_count"] == 0
    for existing, add in results["add_nodes"].items():
        assert add["error"] is None, add
        assert len(add["touched"]) == 2, add  # the new worker and the first control plane

    md = (tmp_path / "smoke.md").read_text()
    assert "| 5 | kai |" in md and "**Targets**" in md
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
