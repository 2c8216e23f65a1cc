"""Turn the spec's SSH settings (defaults + per-node overrides) into runner targets.

Secret values come only from Prefect Secret blocks named in the spec; they are registered with the
log redactor the moment they are read and never leave this process.
"""

from __future__ import annotations

from collections.abc import Callable

from installers import redact
from installers.settings import KaiSettings
from installers.spec import Bastion, ClusterSpec, Node
from installers.ssh import LocalTarget, SSHTarget


def load_secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    if not isinstance(value, str):
        raise ValueError(f"Prefect Secret block {name!r} does not hold a string")
    redact.REDACTOR.add(value)
    return value


def ssh_targets(
    spec: ClusterSpec,
    nodes: list[Node] | None = None,
    secret: Callable[[str], str] = load_secret_block,
) -> dict[str, SSHTarget | LocalTarget]:
    """One target per node name: an SSHTarget, or a LocalTarget for the node marked
    `connection: local` (its agent started as KAI_LOCAL_AGENT_COMMAND says); secrets read once
    per block name."""
    cache: dict[str, str] = {}

    def get(name: str | None) -> str | None:
        if not name:
            return None
        if name not in cache:
            cache[name] = secret(name)
        return cache[name]

    default = spec.ssh
    pins = default.host_key_fingerprints
    targets = {}
    local_prefix: tuple[str, ...] | None = None
    for node in nodes if nodes is not None else spec.nodes:
        if node.connection == "local":
            if local_prefix is None:
                local_prefix = KaiSettings().local_agent_prefix()
            targets[node.name] = LocalTarget.for_this_process(node.name, local_prefix)
            continue
        o = node.ssh
        pick = lambda field: (getattr(o, field) if o is not None and getattr(o, field) is not None  # noqa: E731
                              else getattr(default, field))
        bastion = pick("bastion")
        sudo = pick("sudo")
        # a node that names its own key replaces the default key source (file or secret), whichever
        key_from = o if o is not None and (o.private_key_file or o.private_key_secret) else default
        targets[node.name] = SSHTarget(
            node=node.name,
            host=node.address,
            port=pick("port"),
            user=pick("user"),
            key_file=key_from.private_key_file,
            key_text=get(key_from.private_key_secret),
            key_passphrase=get(pick("private_key_passphrase_secret")),
            password=get(pick("password_secret")),
            sudo=sudo,
            sudo_password=get(pick("sudo_password_secret")) if sudo == "password" else None,
            bastion=_bastion_target(bastion, get, default.known_hosts_file) if bastion else None,
            known_hosts=pick("known_hosts_file"),
            host_key_fingerprints=tuple(pins.get(node.name, []) + pins.get(node.address, [])),
            accept_new=default.accept_new_host_keys,
            connect_timeout=pick("connect_timeout"),
        )
    return targets


def _bastion_target(b: Bastion, get: Callable[[str | None], str | None],
                    known_hosts: str | None) -> SSHTarget:
    return SSHTarget(
        node=f"bastion {b.host}",
        host=b.host,
        port=b.port,
        user=b.user,
        key_file=b.private_key_file,
        key_text=get(b.private_key_secret),
        key_passphrase=get(b.private_key_passphrase_secret),
        password=get(b.password_secret),
        known_hosts=b.known_hosts_file or known_hosts,
        host_key_fingerprints=tuple(b.host_key_fingerprints),
    )
