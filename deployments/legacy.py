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
import time
import uuid
from datetime import datetime
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
        raise SpecError(_pydantic_problems(exc)) from None
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
# value moves to a new name (`mode_list`, `current_step_name`, `start_time_iso`, `role_list`).

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
    """`POST /{mode}/start`'s 202 answer (kai's `status_url`, `warnings`, … beside)."""
    return {"success": True, "installation_id": run_id, "mode": mode,
            "message": f"{mode} installation started",
            "estimated_duration": mode_table.get(mode).estimated_time, **kai}


def epoch(iso_time: str | None) -> float | None:
    return datetime.fromisoformat(iso_time).timestamp() if iso_time else None


# a step still to finish (run_status's "running" states): the run's current step is the last one
_STEP_ACTIVE = ("RUNNING", "PENDING", "AWAITINGRETRY", "RETRYING")


def step_number(st: dict) -> int:
    """The old `current_step`: the number of the step being run, counting from 1 in the order the
    steps started ("step 3 of 9"); 0 before the first; once none runs, the last one that ran."""
    steps = st["steps"]
    active = [i for i, s in enumerate(steps) if s["state"] in _STEP_ACTIVE]
    if active and not st["final"]:
        return active[-1] + 1
    ran = [i for i, s in enumerate(steps) if s["state"] not in ("PENDING", "SCHEDULED")]
    return ran[-1] + 1 if ran else 0


def _step_results(st: dict) -> list[dict]:
    results = []
    for step in st["steps"]:
        ok = step["state"] == "COMPLETED"
        if step["hosts"]:
            for h in step["hosts"]:
                results.append({
                    "step_name": step["name"], "success": h["status"] != "FAILED",
                    "duration": float(h["seconds"] or 0.0), "error_message": h["error"],
                    "output": h.get("output") or None, "host": h["host"]})
        else:
            results.append({"step_name": step["name"], "success": ok,
                            "duration": float(step["duration_s"] or 0.0),
                            "error_message": None if ok else step["message"], "output": None,
                            "host": None})
    return results


def status_envelope(st: dict, now: float | None = None) -> dict:
    """`GET /{id}/status`: the old `progress`, `started_at`, `completed` (and, once completed,
    `success_status` and `cluster_info`), with kai's richer view beside."""
    failure = st.get("failure") or {}
    status_word = {"SCHEDULED": "pending", "PENDING": "pending", "RUNNING": "running",
                   "COMPLETED": "completed", "FAILED": "failed", "CRASHED": "failed",
                   "CANCELLING": "cancelling", "CANCELLED": "cancelled",
                   "PAUSED": "paused"}.get(st["state"], st["state"].lower())
    error_message = failure.get("message")
    if failure.get("step"):
        hosts = ", ".join(failure.get("hosts") or []) or "controller"
        error_message = f"step {failure['step']} failed on {hosts}: {error_message or ''}".strip()
    # a run not started yet has no start time: it was asked for at `created`
    started_at = epoch(st["created"]) or 0.0
    body = {
        "success": True,
        "installation_id": st["id"],
        "mode": st["mode"],
        "progress": {
            "installation_id": st["id"],
            "current_step": step_number(st),
            "total_steps": st["total_steps"],
            "status": status_word,
            "progress_percentage": float(st["percent"]),
            "duration": float(st["duration_s"] or 0.0),
            "start_time": epoch(st["start_time"]) or started_at,
            "end_time": epoch(st["end_time"]),
            "error_message": error_message,
            "step_results": _step_results(st),
            # kai's
            "current_step_name": st["current_step"],
            "steps_done": st["steps_done"],
            "start_time_iso": st["start_time"],
            "end_time_iso": st["end_time"],
        },
        "started_at": started_at,
        "completed": st["final"],
        # kai's richer view
        "state": st["state"],
        "steps": st["steps"],
        "failure": st["failure"],
        "preflight_findings": st["preflight_findings"],
    }
    if st["final"]:
        body["success_status"] = st["state"] == "COMPLETED"
        body["cluster_info"] = cluster_info(st, now)
    return body


def cluster_info(st: dict, now: float | None = None) -> dict:
    """The old `cluster_info` from verify's data (the `cluster-facts` artifact, kept whole beside
    the old keys); a run that ended before verify has the spec's values and no nodes."""
    facts = dict(st.get("cluster_info") or {})
    spec = st.get("cluster") or {}
    now = time.time() if now is None else now
    nodes = []
    for n in facts.get("nodes") or []:
        roles = n.get("roles") or []
        created = epoch(n.get("created") or None)
        nodes.append({**n,
                      "name": n.get("name", ""),
                      "status": "Ready" if n.get("ready") else "NotReady",
                      "roles": ",".join(roles) or "<none>",    # as `kubectl get nodes` shows them
                      "age": human_age(now - created) if created is not None else "<unknown>",
                      "version": n.get("kubelet_version", ""),
                      "internal_ip": n.get("address", ""),
                      "role_list": list(roles)})
    return {**facts,
            "mode": st["mode"],
            "installation_id": st["id"],
            "kubernetes_version": facts.get("version") or str(spec.get("kubernetes_version") or ""),
            "cni_provider": facts.get("cni") or str(spec.get("cni") or ""),
            "pod_cidr": facts.get("pod_cidr") or str(spec.get("pod_cidr") or ""),
            "service_cidr": facts.get("service_cidr") or str(spec.get("service_cidr") or ""),
            "kubeconfig_path": facts.get("kubeconfig_path") or "",
            "nodes": nodes,
            "pod_count_by_namespace": dict(facts.get("pod_count_by_namespace") or {})}


def human_age(seconds: float) -> str:
    """An age as `kubectl get` prints it (apimachinery's duration.HumanDuration): 45s, 5m30s,
    3h20m, 2d4h, 400d, 3y20d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // (24 * 365), (hours // 24) % 365
    if years < 8:
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"
