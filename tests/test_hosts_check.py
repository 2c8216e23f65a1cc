"""The old SSH manager's job: `POST /api/v1/hosts/check` (over HTTP, against `kai serve`) and
`kai hosts check`, one code path (deployments/hosts_check.py), against booted test hosts — one
whose key is not the one known_hosts holds: reported as not verified, and nothing else is done on
it (its sshd never lets us log in: no "Accepted publickey" in its journal).

Read-only on the session's booted hosts (no reset needed before or after).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.hosts.booted import spec_fragment
from tests.support.e2e_server import kai_server  # noqa: F401

pytestmark = [pytest.mark.hosts, pytest.mark.e2e]
KAI = str(Path(sys.executable).parent / "kai")
LOGINS = "journalctl --no-pager -o cat _COMM=sshd | grep -c 'Accepted publickey' || true"


def logins(host) -> int:
    return int(host.exec(LOGINS).stdout.strip() or 0)


@pytest.fixture(scope="module")
def checked(booted_hosts, tmp_path_factory):
    """(good host, host with a wrong known key, spec of both, known_hosts with the wrong key)."""
    good, bad = booted_hosts[0], booted_hosts[1]
    tmp = tmp_path_factory.mktemp("hosts-check")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "not-the-host",
                    "-f", str(tmp / "other")], check=True)
    other = (tmp / "other.pub").read_text().split()
    lines = [f"{bad.name},{bad.address} {other[0]} {other[1]}\n" if line.startswith(f"{bad.name},")
             else line for line in good.known_hosts.read_text().splitlines(keepends=True)]
    assert any(line.startswith(f"{bad.name},") for line in lines)
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text("".join(lines))
    spec = {"name": "checked", **spec_fragment([good, bad])}
    spec["ssh"]["known_hosts_file"] = str(known_hosts)
    return good, bad, spec, known_hosts


def wait_logins(host, above: int, timeout_s: float = 10) -> int:
    """The host's login count once it exceeds `above` (the journal lags a little), or as is."""
    deadline = time.monotonic() + timeout_s
    while (count := logins(host)) <= above and time.monotonic() < deadline:
        time.sleep(0.3)
    return count


def assert_checked(good_row: dict, good, expected_arch: str | None = None) -> None:
    assert good_row["reachable"] is True and good_row["host_key_verified"] is True, good_row
    assert good_row["error"] is None and "Debian" in (good_row["os"] or ""), good_row
    assert good_row["arch"] and isinstance(good_row["cpus"], int) and good_row["cpus"] >= 1, good_row
    assert isinstance(good_row["memory_mb"], int) and isinstance(good_row["disk_free_mb"], int), good_row
    assert good_row["address"] == good.address and isinstance(good_row["findings"], list), good_row


def test_rest_hosts_check_reports_each_host_and_refuses_a_wrong_key(kai_server, checked):  # noqa: F811
    good, bad, spec, known_hosts = checked
    before = {good.name: logins(good), bad.name: logins(bad)}
    t0 = time.monotonic()
    with kai_server.client() as c:
        r = c.post("/api/v1/hosts/check", json={"spec": spec, "mode": "preflight"})
        spec_s = time.monotonic() - t0
        assert r.status_code == 200, r.text
        body = r.json()
        # the old SSH manager's body: a host list and the old ssh_config (with kai's known_hosts)
        t1 = time.monotonic()
        old = c.post("/api/v1/hosts/check", json={"hosts": [good.address], "ssh_config": {
            "username": "root", "auth_method": "key", "key_path": str(good.key_file),
            "port": good.ssh_port, "timeout": 10, "known_hosts_file": str(known_hosts)}})
        old_s = time.monotonic() - t1
        invalid = c.post("/api/v1/hosts/check", json={"hosts": [], "ssh_config": {"colour": 1}})
    print(f"\nhosts/check: spec of 2 hosts {spec_s:.1f} s; old host list of 1 {old_s:.1f} s")

    assert body["success"] is True and body["mode"] == "preflight" and body["ok"] is False, body
    good_row, bad_row = body["hosts"]
    assert_checked(good_row, good)
    assert bad_row["reachable"] is True and bad_row["host_key_verified"] is False, bad_row
    assert "host key" in bad_row["error"].lower() and bad.name in bad_row["error"], bad_row
    assert (bad_row["os"], bad_row["cpus"], bad_row["findings"]) == (None, None, []), bad_row
    # we logged in to the good host, never to the one whose key did not match
    assert wait_logins(good, before[good.name]) > before[good.name]
    assert logins(bad) == before[bad.name], "kai logged in to a host whose key it did not verify"

    assert old.status_code == 200, old.text
    [row] = old.json()["hosts"]
    assert_checked(row, good)
    assert row["node"] == "host-1"
    assert invalid.status_code == 400 and invalid.json()["error"].startswith("Validation failed: ")
    problems = invalid.json()["problems"]
    assert any(p.startswith("hosts:") for p in problems) and any(
        p.startswith("ssh_config.colour:") for p in problems), problems


def test_cli_hosts_check_is_the_same_check(checked, tmp_path):
    good, bad, spec, _ = checked
    before = logins(bad)
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KAI_"))}
    env["KAI_STATE_DIR"] = str(tmp_path / "state")
    t0 = time.monotonic()
    result = subprocess.run([KAI, "hosts", "check", "cluster.yaml", "--mode", "preflight"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
                            stdin=subprocess.DEVNULL)
    print(f"\nkai hosts check: 2 hosts in {time.monotonic() - t0:.1f} s")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "0 host(s) unreachable, 1 host key(s) not verified" in result.stderr, result.stderr
    out = " ".join(result.stdout.split())  # rich wraps long cells
    assert f"{good.name} ({good.address})" in out and "Debian" in out and "CPUs" in out, out
    assert f"{bad.name} ({bad.address})" in out and "host key" in out.lower(), out
    assert logins(bad) == before
