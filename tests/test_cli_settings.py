"""One settings path for every command, and plain output when stdout is not a terminal.

Which Prefect server a command uses: PREFECT_API_URL from the environment, else from ./.env, else
the running `kai serve`'s (<state dir>/serve.json), else a clear error — never a temporary server
of Prefect's own. The end-to-end tests run the `kai` CLI in a directory whose `.env` names the
session's real Prefect server (tests/support/e2e_server.py) with an empty state dir: only the `.env` can
lead them there. Runs target only a light test host (an address in a network namespace this run creates): a
closed port there, a silent listener the test owns there, or its sshd.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from installers.settings import NoPrefectServer, resolve_settings
from tests.support.e2e_server import kai_server, quiet_env  # noqa: F401
from tests.support.netns import netns_node, node_spec, silent_listener  # noqa: F401  (fixture)
from tests.support.ports import closed_port
from tests.support.wait import wait_until

KAI = str(Path(sys.executable).parent / "kai")
MARKUP_OR_ESCAPES = ("[dim]", "[/", "[red]", "[green]", "[yellow]", "\x1b")


def run_kai(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, stdout and stderr to pipes (not a terminal)."""
    return subprocess.run([KAI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def write_spec(directory: Path, spec: dict) -> str:
    (directory / "cluster.yaml").write_text(yaml.safe_dump(spec))
    return "cluster.yaml"


def assert_plain(text: str) -> None:
    found = [m for m in MARKUP_OR_ESCAPES if m in text]
    assert not found, f"markup or escape sequences {found} in output:\n{text}"


@pytest.fixture()
def clean_prefect_env(monkeypatch):
    """No PREFECT_API_URL from outside; whatever resolve_settings exports is undone afterwards."""
    monkeypatch.setenv("PREFECT_API_URL", "placeholder")  # records the original for teardown
    monkeypatch.delenv("PREFECT_API_URL")
    return monkeypatch


@pytest.fixture()
def listener(netns_node):
    """A listener on a test host's address that accepts and never speaks (SSH waits for its
    banner); it counts the connections it got."""
    with silent_listener(netns_node) as silent:
        yield silent


# --- resolve_settings: the order, and the error -------------------------------------------------

def test_prefect_url_from_env_then_dotenv_then_running_serve(tmp_path, clean_prefect_env):
    mp = clean_prefect_env
    state = tmp_path / "state"
    state.mkdir()
    (state / "serve.json").write_text(json.dumps({"pid": os.getpid(),
                                                  "prefect_api_url": "http://127.0.0.1:3/api"}))
    mp.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"KAI_STATE_DIR={state}\n")  # kai's settings come from .env too
    assert resolve_settings(need_prefect=True).prefect_api_url == "http://127.0.0.1:3/api"
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:3/api"  # for Prefect's client

    mp.delenv("PREFECT_API_URL")
    (tmp_path / ".env").write_text(f"KAI_STATE_DIR={state}\nPREFECT_API_URL=http://127.0.0.1:2/api\n")
    assert resolve_settings(need_prefect=True).prefect_api_url == "http://127.0.0.1:2/api"

    mp.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    assert resolve_settings(need_prefect=True).prefect_api_url == "http://127.0.0.1:1/api"

    mp.delenv("PREFECT_API_URL")  # `kai serve` itself: env or .env, never another serve's URL
    (tmp_path / ".env").write_text(f"KAI_STATE_DIR={state}\n")
    assert resolve_settings(use_running_serve=False).prefect_api_url is None
    assert "PREFECT_API_URL" not in os.environ


def test_no_server_is_an_error_that_says_how_to_start_one(tmp_path, clean_prefect_env):
    mp = clean_prefect_env
    mp.chdir(tmp_path)
    mp.setenv("KAI_STATE_DIR", str(tmp_path))
    with pytest.raises(NoPrefectServer) as missing:
        resolve_settings(need_prefect=True)
    assert str(missing.value) == (
        f"no Prefect server: no `kai serve` is running ({tmp_path}/serve.json does not exist). "
        "Start one with `kai serve` (same KAI_STATE_DIR), or set PREFECT_API_URL in the environment "
        "or in ./.env to a running Prefect server's API (e.g. http://127.0.0.1:4200/api)")

    gone = subprocess.Popen(["true"])
    gone.wait()  # a `kai serve` killed before it could remove its serve.json
    (tmp_path / "serve.json").write_text(json.dumps({"pid": gone.pid,
                                                     "prefect_api_url": "http://127.0.0.1:3/api"}))
    with pytest.raises(NoPrefectServer, match=re.escape(
            f"the `kai serve` recorded in {tmp_path}/serve.json (pid {gone.pid}) is no longer running")):
        resolve_settings(need_prefect=True)
    assert "PREFECT_API_URL" not in os.environ


def test_commands_without_a_server_fail_clearly_and_touch_no_host(tmp_path, listener):
    env = quiet_env(KAI_STATE_DIR=str(tmp_path / "state"))
    spec = write_spec(tmp_path, node_spec("no-server", listener.address, listener.port,
                                          private_key_secret="kai-test-no-such-block"))
    for args in (["hosts", "check", spec], ["install", spec, "--detach"],
                 ["status", str(uuid.uuid4())], ["logs", str(uuid.uuid4())],
                 ["cancel", str(uuid.uuid4())]):
        t0 = time.monotonic()
        result = run_kai(*args, cwd=tmp_path, env=env)
        took = time.monotonic() - t0
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("kai: no Prefect server: no `kai serve` is running"), result.stderr
        assert "Traceback" not in result.stderr
        print(f"\nkai {args[0]} without a server: exit 3 in {took:.1f} s")
    assert listener.accepted() == 0, "a host was contacted"


# --- against the session's real Prefect server, named only in ./.env ---------------------------

@pytest.fixture()
def dotenv_cwd(kai_server, tmp_path):  # noqa: F811
    """(working dir whose .env names the server, the CLI's environment: nothing else leads there)."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / ".env").write_text(f"PREFECT_API_URL={kai_server.prefect_api_url}\n")
    env = quiet_env(KAI_STATE_DIR=str(tmp_path / "state"))  # no serve.json there
    env.pop("FORCE_COLOR", None)
    return cwd, env


def status_json(run_id: str, cwd: Path, env: dict) -> dict:
    result = run_kai("status", run_id, "--json", cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_install_status_logs_cancel_use_the_server_in_dotenv(dotenv_cwd, listener):
    cwd, env = dotenv_cwd
    spec = write_spec(cwd, node_spec("dotenv-run", listener.address, listener.port, timeout=120))
    started = run_kai("install", spec, "--mode", "preflight", "--detach", cwd=cwd, env=env)
    assert started.returncode == 0, started.stderr
    run_id = re.fullmatch(r"started preflight run (\S+)\n", started.stdout).group(1)

    wait_until("run RUNNING", lambda: status_json(run_id, cwd, env)["state"] == "RUNNING", 120)
    status = run_kai("status", run_id, cwd=cwd, env=env)
    assert status.returncode == 0 and status.stdout.startswith(f"preflight run {run_id}: RUNNING")
    assert_plain(status.stdout)

    def flow_logged() -> bool:
        logs = run_kai("logs", run_id, cwd=cwd, env=env)
        assert logs.returncode == 0, logs.stderr
        assert_plain(logs.stdout)
        return "preflight on 1 host(s): n1" in logs.stdout
    wait_until("the flow's first log line", flow_logged, 120)

    cancel = run_kai("cancel", run_id, cwd=cwd, env=env)
    assert (cancel.returncode, cancel.stdout) == (0, f"run {run_id}: cancelling\n"), cancel.stderr
    wait_until("run CANCELLED", lambda: status_json(run_id, cwd, env)["state"] == "CANCELLED", 120)


def test_install_following_into_a_pipe_prints_plain_text(dotenv_cwd, netns_node):
    cwd, env = dotenv_cwd
    spec = write_spec(cwd, node_spec("dotenv-pipe", netns_node.address, closed_port()))
    result = run_kai("install", spec, "--mode", "preflight", cwd=cwd, env=env, timeout=240)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("kai: preflight failed at step facts on n1"), result.stderr
    log_lines = [line for line in result.stdout.splitlines()
                 if re.match(r"\d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", line)]
    assert any("preflight on 1 host(s): n1" in line for line in log_lines), result.stdout
    assert any("Connection refused" in line or "connect" in line.lower() for line in log_lines), \
        result.stdout
    assert_plain(result.stdout + result.stderr)


@pytest.mark.parametrize("found_by", ["dotenv", "running kai serve"])
def test_hosts_check_finds_secret_blocks_on_the_server(found_by, dotenv_cwd, kai_server,  # noqa: F811
                                                       light_hosts):
    """Through ./.env, or without it through the running `kai serve`'s serve.json — which Prefect
    itself does not read: kai must export the URL before anything imports Prefect."""
    from prefect.blocks.system import Secret

    cwd, env = dotenv_cwd
    if found_by == "running kai serve":
        (cwd / ".env").unlink()
        env["KAI_STATE_DIR"] = str(kai_server.state_dir)
    hosts = light_hosts(1)
    block = f"kai-test-key-{uuid.uuid4().hex[:12]}"
    with kai_server.prefect():
        Secret(value=hosts.key_file.read_text()).save(block)
    try:
        spec = {"name": "dotenv-check",
                "nodes": [{"name": "n1", "address": hosts[0].address, "roles": ["control-plane"]}],
                "ssh": {"user": "root", "private_key_secret": block,
                        "known_hosts_file": str(hosts.known_hosts)}}
        result = run_kai("hosts", "check", write_spec(cwd, spec), cwd=cwd, env=env)
    finally:
        with kai_server.prefect():
            _delete_block(block)
    print(f"\n{result.stdout}{result.stderr}")
    # the key came from the block: facts were gathered over SSH (the judgement is the machine's)
    assert f"n1 ({hosts[0].address})" in result.stdout, result.stdout
    # the facts arrived: the system row names the OS (`?` when facts.env was missing)
    assert re.search(r"^\W system +\W info +\W [^?\s]", result.stdout, re.M), result.stdout
    assert ("hosts check: 0 host(s) unreachable" in result.stderr
            or "hosts check: 1 host(s) ok" in result.stdout), (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert_plain(result.stdout + result.stderr)


def _delete_block(name: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.delete_block_document(client.read_block_document_by_name(name, "secret").id)
