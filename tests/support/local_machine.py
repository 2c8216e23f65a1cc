"""Tests only: a booted test host plays "the local machine" of kai's local transport.

kai starts the agent of a node marked `connection: local` behind KAI_LOCAL_AGENT_COMMAND, an argv
put in front of the agent's command line (installers/ssh/local.py). The session's `kai serve`
(e2e_server.py) sets it to `<state dir>/local-machine`, a script that exists only while a test
holds `acting_as_local_machine(state_dir, host)`: outside of that, a local node fails to start,
naming the missing script — no node script ever runs on the machine running the tests.

The script enters the host's namespaces (nsenter into its systemd, as Host.exec does) after
joining the host's pids cgroup, so that nothing it starts outlives the host's teardown, and gives
the agent the host's own clean environment.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

from tests.hosts import network
from tests.hosts.booted import HOST_PATH

SCRIPT_NAME = "local-machine"


def local_agent_command(state_dir: Path) -> str:
    """KAI_LOCAL_AGENT_COMMAND for a `kai serve` whose state dir is `state_dir`."""
    return shlex.quote(str(Path(state_dir) / SCRIPT_NAME))


@contextlib.contextmanager
def acting_as_local_machine(state_dir: Path, host):
    script = Path(state_dir) / SCRIPT_NAME
    procs = network.CGROUP_ROOT / "pids" / host.cgroup / "cgroup.procs"
    text = "\n".join([
        "#!/bin/sh",
        f"# written by tests/support/local_machine.py: the booted test host {host.name} acts as",
        "# the local machine of kai's local transport (its agent enters the host's namespaces)",
        f"echo $$ > {shlex.quote(str(procs))} 2>/dev/null",
        f"exec nsenter -t {int(host.leader_pid)} -a -- env -i PATH={HOST_PATH} LANG=C.UTF-8 "
        'HOME=/root "$@"',
        "",
    ])
    tmp = script.with_name(script.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, script)  # a run starting an agent now sees the whole script or none
    try:
        yield host
    finally:
        script.unlink(missing_ok=True)
