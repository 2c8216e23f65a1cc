"""A node marked `connection: local`: the spec's rules, its runner target, the old all-in-one body
without a host, and local-address.sh (run against a fake `ip`, so it reads nothing real).
The transport itself: tests/test_local_transport.py; end to end: tests/test_local_e2e.py."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from deployments import control, legacy
from installers.local_machine import LocalMachineError, local_machine_address
from installers.spec import SpecError, load_spec
from installers.ssh import LocalTarget, SSHTarget
from tasks.targets import ssh_targets
from tests.spec_factory import aio, ha


def local(spec: dict, i: int = 0, **extra) -> dict:
    spec = copy.deepcopy(spec)
    spec["nodes"][i].update({"connection": "local", **extra})
    return spec


def problems(spec: dict) -> list[str]:
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    return err.value.problems


def test_a_local_node_is_valid_and_ssh_is_the_default():
    assert load_spec(aio()).nodes[0].connection == "ssh"
    assert load_spec(local(aio())).nodes[0].connection == "local"
    assert any("nodes[0].connection" in p for p in problems(local(aio(), connection="telnet")))


def test_one_local_machine_and_no_ssh_block_on_it():
    two = local(local(ha(workers=0)), 1)
    assert problems(two) == ["nodes[1].connection: only one node can be the local machine (also nodes[0])"]
    with_ssh = local(aio(), ssh={"user": "debian"})
    assert problems(with_ssh) == ["nodes[0].ssh: a node with connection 'local' is not reached "
                                  "over SSH; remove its ssh block"]


def test_the_local_node_gets_a_local_target_with_the_configured_prefix(monkeypatch):
    monkeypatch.setenv("KAI_LOCAL_AGENT_COMMAND", "nsenter -t 42 -a -- 'env' -i")
    spec = load_spec(local(ha(workers=1), 3))  # worker-1 is this machine, the others are not
    targets = ssh_targets(spec, secret=lambda name: pytest.fail(f"no secret needed: {name}"))
    me = targets["worker-1"]
    assert isinstance(me, LocalTarget) and me.command_prefix == ("nsenter", "-t", "42", "-a", "--",
                                                                 "env", "-i")
    assert me.sudo == ("none" if os.geteuid() == 0 else "nopasswd")
    assert all(isinstance(targets[n], SSHTarget) for n in ("cp-1", "cp-2", "cp-3"))
    monkeypatch.setenv("KAI_LOCAL_AGENT_COMMAND", "nsenter 'unclosed")
    with pytest.raises(ValueError, match="KAI_LOCAL_AGENT_COMMAND: not shell words"):
        ssh_targets(spec)


def test_the_old_all_in_one_body_without_a_host_is_this_machine():
    asked = []
    req = legacy.parse("all_in_one", {"cluster_name": "old", "cni_provider": "flannel"})
    mapped = legacy.to_spec("all_in_one", req,
                            local_address=lambda: asked.append(1) or ("10.250.0.2", None))
    assert asked == [1] and not mapped.problems
    _, spec = control.validate("all_in_one", mapped.spec)
    assert spec["nodes"] == [{**legacy.local_all_in_one_node("10.250.0.2"), "labels": {},
                              "taints": [], "ssh": None}]
    assert spec["nodes"][0]["connection"] == "local"
    # with a host, nothing is asked and the node is reached over SSH, as before
    with_host = legacy.to_spec("all_in_one", legacy.parse("all_in_one", {"host": "10.0.0.1"}),
                               local_address=lambda: pytest.fail("asked for this machine"))
    assert "connection" not in with_host.spec["nodes"][0]


def test_this_machine_without_an_address_is_a_problem_under_host():
    req = legacy.parse("all_in_one", {})
    mapped = legacy.to_spec("all_in_one", req, local_address=lambda: ("", "host: not given, so "
                                                                      "the node is this machine, but it has none"))
    assert mapped.problems == ["host: not given, so the node is this machine, but it has none"]


# --- local-address.sh, against a fake `ip` ---------------------------------------------------------

FAKE_IP = """#!/bin/sh
case "$*" in
  "-4 route show default") printf '%s' "$ROUTE" ;;
  "-4 -o addr show dev eth0 scope global") printf '%s' "$ETH0" ;;
  "-4 -o addr show scope global") printf '%s' "$ALL" ;;
  *) echo "fake ip: unexpected: $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def fake_ip(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ip").write_text(FAKE_IP)
    (bin_dir / "ip").chmod(0o755)
    return bin_dir


def address(fake_ip: Path, tmp_path: Path, **outputs: str) -> str:
    env = [f"{k}={v}" for k, v in outputs.items()]
    # the prefix: the fake ip first on PATH, the agent's directory in the sandbox
    prefix = ("env", f"TMPDIR={tmp_path}", f"PATH={fake_ip}:/usr/bin:/bin", *env)
    return local_machine_address(prefix)


ETH0 = "2: eth0    inet 10.250.0.2/24 brd 10.250.0.255 scope global eth0\\       valid_lft forever\n"


def test_the_address_is_the_default_routes_interfaces(fake_ip, tmp_path):
    route = "default via 10.250.0.1 dev eth0 onlink \n"
    assert address(fake_ip, tmp_path, ROUTE=route, ETH0=ETH0) == "10.250.0.2"


def test_without_a_default_route_the_one_global_address(fake_ip, tmp_path):
    assert address(fake_ip, tmp_path, ROUTE="", ALL=ETH0) == "10.250.0.2"
    two = ETH0 + ETH0.replace("10.250.0.2", "10.9.0.7").replace("eth0", "eth1")
    with pytest.raises(LocalMachineError, match="no default route, and 2 global IPv4 addresses"):
        address(fake_ip, tmp_path, ROUTE="", ALL=two)
    with pytest.raises(LocalMachineError, match="interface eth0 has no global IPv4 address"):
        address(fake_ip, tmp_path, ROUTE="default via 10.250.0.1 dev eth0\n", ETH0="")


def test_in_the_tests_this_machine_is_never_the_local_machine():
    """tests/conftest.py: a local node without a prefix of its own refuses to start here."""
    with pytest.raises(LocalMachineError, match=r"exit 97.*tests: no local machine in this process"):
        local_machine_address()
