"""The old SSH manager's request (`POST /api/v1/hosts/check` with `hosts` and `ssh_config`) as a
spec to check the hosts against: the body model and its mapping. The old SSH settings, their
Secret blocks and the old field names are deployments/legacy.py's, as for a start request.
"""

from __future__ import annotations

from pydantic import Field, ValidationError

from deployments.legacy import OLD_DEFAULTS, Mapped, SSHConfig, _Old, pydantic_problems, ssh_block
from installers.spec import SpecError


class LegacyHostList(_Old):
    """The old SSH manager's request: hosts to test over SSH, with the old `ssh_config`. Each is
    judged as a control plane (the strictest requirements)."""
    hosts: list[str] = Field(min_length=1, description="IP addresses of the hosts")
    ssh_config: SSHConfig = SSHConfig()
    k8s_version: str = OLD_DEFAULTS["k8s_version"]


def host_list_spec(body: dict) -> Mapped:
    """A spec for these hosts (and their secrets, to keep in memory) from an old host list;
    SpecError with every problem under the old field names."""
    try:
        req = LegacyHostList.model_validate(body)
    except ValidationError as exc:
        raise SpecError(pydantic_problems(exc)) from None
    ssh, secrets, problems = ssh_block(req.ssh_config)
    if problems:
        raise SpecError(problems)
    nodes = [{"name": f"host-{i + 1}", "address": address, "roles": ["control-plane"]}
             for i, address in enumerate(req.hosts)]
    spec = {"name": "hosts-check", "kubernetes": {"version": req.k8s_version}, "nodes": nodes,
            "ssh": ssh}
    field_of = {f"nodes[{i}].address": f"hosts[{i}]" for i in range(len(nodes))}
    field_of |= {"kubernetes.version": "k8s_version", "ssh.user": "ssh_config.username",
                 "ssh.port": "ssh_config.port", "ssh.private_key_file": "ssh_config.key_path",
                 "ssh.known_hosts_file": "ssh_config.known_hosts_file"}
    return Mapped(spec, secrets, field_of=field_of)
