"""The old Flask service's request and response shapes, so that existing clients keep working.

Old start requests are flat bodies (`k8s_version`, `pod_cidr`, `masters`, `ssh_config`, …). They are
mapped onto a ClusterSpec; problems are reported under the old field names (with the spec path in
parentheses). Secrets in an old body — the SSH password, or the passphrase of the key file — never
reach flow-run parameters: the password goes into a Prefect Secret block named for the request, and
an encrypted key file is opened with its passphrase here and stored, unencrypted, in a Secret block
(the spec has no field for a key passphrase); the spec names only the blocks.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from installers import versions as V
from installers.spec import SpecError
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


class LoadBalancer(_Old):
    address: str
    port: int = Field(6443, ge=1, le=65535)


class KubeVip(_Old):
    vip: str = Field(description="free IP for kube-vip (ARP mode)")
    interface: str


class LegacyCommon(_Old):
    cluster_name: str = "kubernetes"
    k8s_version: str = V.DEFAULT_KUBERNETES_MINOR
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    cni_provider: Literal["calico", "flannel", "cilium"] = V.DEFAULT_CNI
    enable_rbac: bool = True
    enable_monitoring: bool = False
    ssh_config: SSHConfig = SSHConfig()


class LegacyAllInOneRequest(LegacyCommon):
    """Old all-in-one body: one node, reached at `host` (also accepted as `master` or `node_ip`)."""
    host: str = Field(validation_alias=AliasChoices("host", "master", "node_ip"),
                      description="IP address of the node")


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


def _pydantic_problems(exc: ValidationError) -> list[str]:
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
        raise SpecError(_pydantic_problems(exc)) from None


_HOST_PORT = re.compile(r"^(?P<host>[^:\[\]]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def to_spec(mode: str, req: LegacyAllInOneRequest | LegacyHARequest) -> Mapped:
    """Map an old body onto a spec dict (validated later, with the rest, by the wrapper)."""
    problems: list[str] = []
    field_of = {"name": "cluster_name", "kubernetes.version": "k8s_version",
                "networking.pod_cidr": "pod_cidr", "networking.service_cidr": "service_cidr",
                "networking.cni": "cni_provider", "ssh.user": "ssh_config.username",
                "ssh.port": "ssh_config.port", "ssh.connect_timeout": "ssh_config.timeout",
                "ssh.private_key_file": "ssh_config.key_path",
                "control_plane_endpoint.address": "load_balancer",
                "control_plane_endpoint.port": "load_balancer",
                "control_plane_endpoint.interface": "load_balancer.interface",
                "addons.monitoring": "enable_monitoring"}
    if not req.enable_rbac:
        problems.append("enable_rbac: false is not supported (kubeadm clusters always use RBAC)")
    warnings: list[str] = []

    if isinstance(req, LegacyAllInOneRequest):
        nodes = [{"name": "master-1", "address": req.host, "roles": ["control-plane", "worker"]}]
        field_of["nodes[0].address"] = "host"
        endpoint: dict[str, Any] = {"type": "node"}
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

    ssh_cfg = req.ssh_config
    ssh: dict[str, Any] = {"user": ssh_cfg.username, "port": ssh_cfg.port,
                           "connect_timeout": ssh_cfg.timeout}
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


def monitoring_addons(enable_monitoring: bool) -> dict[str, Any]:
    """The old body's `enable_monitoring` as the spec's `addons` block: true installs
    metrics-server and the kube-prometheus stack (installers/addons.py), false nothing."""
    return {"monitoring": bool(enable_monitoring)}


def _decrypt_key(path: str, passphrase: str) -> tuple[str, str | None]:
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).expanduser().read_bytes()
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

def status_envelope(st: dict) -> dict:
    """The old status response (`progress`, `completed`, `success_status`, `cluster_info`)."""
    failure = st.get("failure") or {}
    step_results = []
    for step in st["steps"]:
        ok = step["state"] == "COMPLETED"
        if step["hosts"]:
            for h in step["hosts"]:
                step_results.append({
                    "step_name": step["name"], "success": h["status"] != "FAILED",
                    "duration": h["seconds"], "error_message": h["error"], "host": h["host"]})
        else:
            step_results.append({"step_name": step["name"], "success": ok,
                                 "duration": step["duration_s"],
                                 "error_message": None if ok else step["message"], "host": None})
    status_word = {"SCHEDULED": "pending", "PENDING": "pending", "RUNNING": "running",
                   "COMPLETED": "completed", "FAILED": "failed", "CRASHED": "failed",
                   "CANCELLING": "cancelling", "CANCELLED": "cancelled",
                   "PAUSED": "paused"}.get(st["state"], st["state"].lower())
    error_message = failure.get("message")
    if failure.get("step"):
        hosts = ", ".join(failure.get("hosts") or []) or "controller"
        error_message = f"step {failure['step']} failed on {hosts}: {error_message or ''}".strip()
    return {
        "success": True,
        "installation_id": st["id"],
        "mode": st["mode"],
        "progress": {
            "current_step": st["current_step"],
            "total_steps": st["total_steps"],
            "steps_done": st["steps_done"],
            "status": status_word,
            "progress_percentage": st["percent"],
            "duration": st["duration_s"],
            "start_time": st["start_time"],
            "end_time": st["end_time"],
            "error_message": error_message,
            "step_results": step_results,
        },
        "completed": st["final"],
        "success_status": (st["state"] == "COMPLETED") if st["final"] else None,
        "cluster_info": st["cluster_info"],
        # kai's richer view
        "state": st["state"],
        "steps": st["steps"],
        "failure": st["failure"],
        "preflight_findings": st["preflight_findings"],
    }
