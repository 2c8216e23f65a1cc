"""The old Flask service's request and response shapes, so that existing clients keep working.

Old start requests are flat bodies (`k8s_version`, `pod_cidr`, `masters`, `ssh_config`, …). They are
mapped onto a ClusterSpec; problems are reported under the old field names (with the spec path in
parentheses). Secrets in an old body — the SSH password, or the passphrase of the key file — never
reach flow-run parameters: the password goes into a Prefect Secret block named for the request, and
an encrypted key file is opened with its passphrase here and stored, unencrypted, in a Secret block
(the spec has no field for a key passphrase); the spec names only the blocks.

Beside it: a run's status in the old shape (deployments/legacy_status.py) and the old SSH
manager's hosts-check body (deployments/legacy_hosts.py).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from installers import modes as mode_table
from installers import versions as V
from installers.spec import Networking, SpecError
from installers.spec_problems import format_path

LEGACY_KEYS = {"k8s_version", "pod_cidr", "service_cidr", "cni_provider", "cluster_name",
               "enable_rbac", "enable_monitoring", "host", "master", "node_ip", "masters",
               "workers", "load_balancer", "ssh_config"}


class _Old(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SSHConfig(_Old):
    username: str = "root"
    auth_method: Literal["key", "password"] = "key"
    key_path: str | None = Field(None, description="private key file on the kai controller")
    key_passphrase: SecretStr | None = Field(None, description="never stored in run parameters")
    password: SecretStr | None = Field(None, description="never stored in run parameters")
    port: int = Field(22, ge=1, le=65535)
    timeout: float = Field(10, gt=0, le=600, description="connect timeout, seconds")
    # kai's addition: the old service did not verify host keys; kai does, against this file
    known_hosts_file: str | None = Field(None, description="known_hosts file to verify host keys "
                                                           "against (default ~/.ssh/known_hosts)")


class LoadBalancer(_Old):
    address: str
    port: int = Field(6443, ge=1, le=65535)


class KubeVip(_Old):
    vip: str = Field(description="free IP for kube-vip (ARP mode)")
    interface: str


# An old body's defaults, which `GET /modes` also shows as `default_config`: one place. The old
# service's default CNI was cilium, which kai installs without a mirror too (its pinned Helm chart,
# installers/addons.py).
OLD_DEFAULT_CNI = "cilium"
OLD_DEFAULTS = {"k8s_version": V.DEFAULT_KUBERNETES_MINOR,
                "pod_cidr": Networking.model_fields["pod_cidr"].default,
                "service_cidr": Networking.model_fields["service_cidr"].default,
                "cni_provider": OLD_DEFAULT_CNI}


class LegacyCommon(_Old):
    cluster_name: str = "kubernetes"
    k8s_version: str = OLD_DEFAULTS["k8s_version"]
    pod_cidr: str = OLD_DEFAULTS["pod_cidr"]
    service_cidr: str = OLD_DEFAULTS["service_cidr"]
    cni_provider: Literal["calico", "flannel", "cilium"] = OLD_DEFAULT_CNI
    enable_rbac: bool = True
    enable_monitoring: bool = False
    ssh_config: SSHConfig = SSHConfig()


class LegacyAllInOneRequest(LegacyCommon):
    """Old all-in-one body: one node, reached at `host` (also accepted as `master` or `node_ip`);
    without a host, the node is the machine kai runs on, as in the old service."""
    host: str | None = Field(None, validation_alias=AliasChoices("host", "master", "node_ip"),
                             description="IP address of the node; none: the machine kai runs on")


class LegacyHARequest(LegacyCommon):
    """Old ha_secure body: control planes, workers and the endpoint in front of the API servers."""
    masters: list[str] = Field(min_length=1, description="control-plane IP addresses")
    workers: list[str] = Field(default_factory=list, description="worker IP addresses")
    load_balancer: str | LoadBalancer | KubeVip = Field(
        description="'address' or 'address:port' of an existing load balancer, "
                    "or {vip, interface} for kube-vip")


def is_legacy(body: dict) -> bool:
    return "spec" not in body and bool(LEGACY_KEYS & set(body))


@dataclass
class Mapped:
    spec: dict
    secrets: dict[str, str] = field(default_factory=dict)  # block name -> value (created later)
    warnings: list[str] = field(default_factory=list)
    field_of: dict[str, str] = field(default_factory=dict)  # spec path -> old field name
    problems: list[str] = field(default_factory=list)  # found while mapping (old field names)


def pydantic_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        path = format_path([p for p in err["loc"] if p not in ("str", "LoadBalancer", "KubeVip")])
        kind = err.get("type")
        msg = ("unknown field" if kind == "extra_forbidden" else
               "required field missing" if kind == "missing" else err["msg"])
        out.append(f"{path}: {msg}")
    return list(dict.fromkeys(out))


def parse(mode: str, body: dict) -> LegacyAllInOneRequest | LegacyHARequest:
    model = LegacyAllInOneRequest if mode == "all_in_one" else LegacyHARequest
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise SpecError(pydantic_problems(exc)) from None


_HOST_PORT = re.compile(r"^(?P<host>[^:\[\]]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def local_all_in_one_node(address: str) -> dict:
    """The node of an old all-in-one body without a host: the machine kai runs on, marked
    `connection: local` (its steps run as local processes), at the address it advertises."""
    return {"name": "master-1", "address": address, "roles": ["control-plane", "worker"],
            "connection": "local"}


def this_machines_address() -> tuple[str, str | None]:
    """(address, None), or ("", the problem under the old field name)."""
    from installers.local_machine import LocalMachineError, local_machine_address
    try:
        return local_machine_address(), None
    except LocalMachineError as exc:
        return "", f"host: not given, so the node is this machine, but {exc}"


def to_spec(mode: str, req: LegacyAllInOneRequest | LegacyHARequest,
            local_address: Callable[[], tuple[str, str | None]] = this_machines_address) -> Mapped:
    """Map an old body onto a spec dict (validated later, with the rest, by the wrapper).
    `local_address` is asked only for an all-in-one body without a host."""
    problems: list[str] = []
    field_of = {"name": "cluster_name", "kubernetes.version": "k8s_version",
                "networking.pod_cidr": "pod_cidr", "networking.service_cidr": "service_cidr",
                "networking.cni": "cni_provider", "ssh.user": "ssh_config.username",
                "ssh.port": "ssh_config.port", "ssh.connect_timeout": "ssh_config.timeout",
                "ssh.private_key_file": "ssh_config.key_path",
                "ssh.known_hosts_file": "ssh_config.known_hosts_file",
                "control_plane_endpoint.address": "load_balancer",
                "control_plane_endpoint.port": "load_balancer",
                "control_plane_endpoint.interface": "load_balancer.interface",
                "addons.monitoring": "enable_monitoring"}
    if not req.enable_rbac:
        problems.append("enable_rbac: false is not supported (kubeadm clusters always use RBAC)")
    warnings: list[str] = []

    if isinstance(req, LegacyAllInOneRequest) and req.host is None:
        address, problem = local_address()
        problems += [problem] if problem else []
        nodes = [local_all_in_one_node(address)]
        field_of["nodes[0].address"] = "host"
        endpoint: dict[str, Any] = {"type": "node"}
    elif isinstance(req, LegacyAllInOneRequest):
        nodes = [{"name": "master-1", "address": req.host, "roles": ["control-plane", "worker"]}]
        field_of["nodes[0].address"] = "host"
        endpoint = {"type": "node"}
    else:
        nodes = []
        for i, address in enumerate(req.masters):
            field_of[f"nodes[{len(nodes)}].address"] = f"masters[{i}]"
            nodes.append({"name": f"master-{i + 1}", "address": address, "roles": ["control-plane"]})
        for i, address in enumerate(req.workers):
            field_of[f"nodes[{len(nodes)}].address"] = f"workers[{i}]"
            nodes.append({"name": f"worker-{i + 1}", "address": address, "roles": ["worker"]})
        lb = req.load_balancer
        if isinstance(lb, KubeVip):
            endpoint = {"type": "kube_vip", "address": lb.vip, "interface": lb.interface}
            field_of["control_plane_endpoint.address"] = "load_balancer.vip"
        elif isinstance(lb, LoadBalancer):
            endpoint = {"type": "load_balancer", "address": lb.address, "port": lb.port}
        elif (m := _HOST_PORT.match(lb)) and 1 <= int(m["port"]) <= 65535:
            endpoint = {"type": "load_balancer", "address": m["host"].strip("[]"), "port": int(m["port"])}
        else:
            endpoint = {"type": "load_balancer", "address": lb}

    ssh, secrets, ssh_problems = ssh_block(req.ssh_config)
    problems += ssh_problems
    spec = {
        "name": req.cluster_name,
        "kubernetes": {"version": req.k8s_version},
        "control_plane_endpoint": endpoint,
        "networking": {"pod_cidr": req.pod_cidr, "service_cidr": req.service_cidr,
                       "cni": req.cni_provider},
        "nodes": nodes,
        "ssh": ssh,
        "addons": monitoring_addons(req.enable_monitoring),
    }
    return Mapped(spec, secrets, warnings, field_of, problems)


def ssh_block(ssh_cfg: SSHConfig) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(the spec's `ssh` block, Secret blocks to create, problems) for an old `ssh_config`: the
    password and a passphrase-protected key go into Secret blocks named here, never the spec."""
    problems: list[str] = []
    ssh: dict[str, Any] = {"user": ssh_cfg.username, "port": ssh_cfg.port,
                           "connect_timeout": ssh_cfg.timeout}
    if ssh_cfg.known_hosts_file:
        ssh["known_hosts_file"] = ssh_cfg.known_hosts_file
    secrets: dict[str, str] = {}
    request_tag = uuid.uuid4().hex[:12]
    if ssh_cfg.auth_method == "password":
        if ssh_cfg.password is None:
            problems.append("ssh_config.password: required when auth_method is 'password'")
        else:
            name = f"kai-legacy-{request_tag}-ssh-password"
            secrets[name] = ssh_cfg.password.get_secret_value()
            ssh["password_secret"] = name
    else:
        if ssh_cfg.password is not None:
            problems.append("ssh_config.password: only used when auth_method is 'password'")
        if ssh_cfg.key_passphrase is not None:
            if not ssh_cfg.key_path:
                problems.append("ssh_config.key_passphrase: needs ssh_config.key_path")
            else:
                key, problem = _decrypt_key(ssh_cfg.key_path, ssh_cfg.key_passphrase.get_secret_value())
                if problem:
                    problems.append(problem)
                else:
                    name = f"kai-legacy-{request_tag}-ssh-key"
                    secrets[name] = key
                    ssh["private_key_secret"] = name
        elif ssh_cfg.key_path:
            ssh["private_key_file"] = ssh_cfg.key_path
    return ssh, secrets, problems


MAX_KEY_FILE_BYTES = 64 * 1024


def monitoring_addons(enable_monitoring: bool) -> dict[str, Any]:
    """The old body's `enable_monitoring` as the spec's `addons` block: true installs
    metrics-server and the kube-prometheus stack (installers/addons.py), false nothing."""
    return {"monitoring": bool(enable_monitoring)}


def _decrypt_key(path: str, passphrase: str) -> tuple[str, str | None]:
    from cryptography.hazmat.primitives import serialization

    key_file = Path(path).expanduser()
    try:
        # a key file is small and regular: never read a device or a huge file into memory
        if not key_file.is_file() or key_file.stat().st_size > MAX_KEY_FILE_BYTES:
            return "", f"ssh_config.key_path: {path!r} is not a private key file"
        data = key_file.read_bytes()
    except OSError as exc:
        return "", f"ssh_config.key_path: cannot read {path!r}: {exc.strerror}"
    try:
        key = serialization.load_ssh_private_key(data, passphrase.encode())
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, passphrase.encode())
        except (ValueError, TypeError):
            return "", "ssh_config.key_passphrase: cannot open the key with this passphrase"
    except TypeError:  # the key is not encrypted
        key = serialization.load_ssh_private_key(data, None)
    text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()
    return text, None


def rename_problems(problems: list[str], mapped: Mapped) -> list[str]:
    """'networking.pod_cidr: …' → 'pod_cidr (networking.pod_cidr): …' for old clients."""
    out = []
    for problem in problems:
        path, sep, rest = problem.partition(": ")
        old = mapped.field_of.get(path)
        out.append(f"{old} ({path}): {rest}" if old and sep else problem)
    return out


def store_secrets(secrets: dict[str, str]) -> None:
    from prefect.blocks.system import Secret

    for name, value in secrets.items():
        Secret(value=value).save(name, overwrite=False)


def delete_secrets(names: list[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name in names:
            try:
                doc = client.read_block_document_by_name(name, block_type_slug="secret")
                client.delete_block_document(doc.id)
            except ObjectNotFound:
                pass


# --- response shapes ---------------------------------------------------------------------------
# The old service's answers (docs/old-api.md: names and JSON types an old client parses), built
# from kai's richer data, which stays beside them. Where an old name would change kai's type, kai's
# value moves to a new name (`mode_list`). A run's status: deployments/legacy_status.py.

NOT_FOUND = "Installation not found"
SHOWN_PROBLEMS = 10  # in an old 400's `error` line
ALREADY_COMPLETED = "Installation already completed"


def validation_error(problems: list[str]) -> str:
    """The old 400 answer's `error`: "Validation failed: Missing required field: masters; …"."""
    worded = []
    for problem in problems[:SHOWN_PROBLEMS]:  # all of them are in `problems`
        path, sep, rest = problem.partition(": ")
        worded.append(f"Missing required field: {path}" if sep and rest == "required field missing"
                      else problem)
    more = len(problems) - SHOWN_PROBLEMS
    return "Validation failed: " + "; ".join(worded) + (f"; and {more} more" if more > 0 else "")


def modes_envelope(kai: dict) -> dict:
    """`GET /modes`: the old object keyed by mode (every key is a name `POST /{mode}/start`
    accepts), supported versions and CNIs as names, the old body's defaults — and kai's own
    tables beside them (kai's list of modes as `mode_list`)."""
    common = [f"{', '.join(V.SUPPORTED_OS)} host(s), reachable over SSH as root or a sudoer "
              f"(host keys verified)",
              f"control planes: {V.MIN_CONTROL_PLANE_CPUS}+ CPUs, "
              f"{V.MIN_CONTROL_PLANE_MEM_MB}+ MiB memory; every host {V.MIN_DISK_MB}+ MiB free disk",
              "swap off (or turned off by kai)"]
    listed = {}
    for mode in mode_table.MODES:
        name = mode_table.listed_name(mode)
        listed[name] = {"name": name, "description": mode.description,
                        "requirements": list(mode.requirements) + (common if mode.installs else []),
                        "features": list(mode.features), "estimated_time": mode.estimated_time,
                        # kai's
                        "mode": mode.name, "aliases": sorted(mode.aliases)}
    minors = sorted(V.KUBERNETES_MINORS, key=lambda m: tuple(int(x) for x in m.split(".")),
                    reverse=True)  # newest first, as the old service listed them
    rest = {k: v for k, v in kai.items() if k != "modes"}
    return {"success": True, "modes": listed, "supported_versions": minors,
            "supported_cnis": list(V.CNIS), "default_config": dict(OLD_DEFAULTS),
            "mode_list": kai.get("modes", []), **rest}


def start_envelope(run_id: str, mode: str, **kai: Any) -> dict:
    """`POST /{mode}/start`'s 202 answer, `mode` the name the caller used (modes.reported_name),
    kai's canonical `kai_mode`, `status_url`, `warnings`, … beside."""
    canonical = mode_table.canonical_mode(mode)
    return {"success": True, "installation_id": run_id, "mode": mode,
            "message": f"{mode} installation started",
            "estimated_duration": mode_table.get(canonical).estimated_time, "kai_mode": canonical, **kai}
