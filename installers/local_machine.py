"""The machine kai runs on, asked through its local transport (installers/ssh/local.py).

Used where a request names no host and means this machine (the old API's all-in-one body): its
address is what the node will advertise, found the way kubeadm finds it (local-address.sh). It goes
through the same agent as every step, so KAI_LOCAL_AGENT_COMMAND applies here too.
"""

from __future__ import annotations

from installers.scripts_store import lib_text, script_text
from installers.settings import KaiSettings
from installers.ssh import ConnectError, LocalConnection, LocalTarget, RemoteJob

ADDRESS_TIMEOUT_S = 30.0


class LocalMachineError(RuntimeError):
    """This machine could not tell its address; the message says why (with its output)."""


def local_machine_address(command_prefix: tuple[str, ...] | None = None) -> str:
    prefix = KaiSettings().local_agent_prefix() if command_prefix is None else command_prefix
    job = RemoteJob(step="local-address", script="local-address.sh",
                    script_text=script_text("local-address.sh"), lib_text=lib_text(), env={},
                    timeout_s=ADDRESS_TIMEOUT_S)
    try:
        with LocalConnection(LocalTarget.for_this_process("local", prefix)) as conn:
            result = conn.run_job(job)
    except ConnectError as exc:
        raise LocalMachineError(f"cannot find this machine's address: {exc}") from None
    address = result.outputs.get("address", b"").decode().strip()
    if not result.ok or not address:
        why = result.error or ("timed out" if result.timed_out else f"exit code {result.exit_code}")
        tail = " | ".join(result.tail[-3:])
        raise LocalMachineError(f"cannot find this machine's address: {why}"
                                + (f": {tail}" if tail else ""))
    return address
