"""The operator's defaults for old-style request bodies: `<state dir>/old-body-defaults.yaml`.

An old client's flat body (deployments/legacy.py) can only say what the old Flask service knew:
hosts, version, CNI, CIDRs, SSH. Everything else a site needs — its package mirror (the offline
mode), its kubelet settings (hosts still on cgroup v1), proxy, preflight exceptions, step
timeouts — has no field there, and old clients must keep working unchanged. So the operator puts
those parts of a spec in this file once, and every old body is mapped onto a spec with them filled
in underneath: what the body says wins, the file fills only what the body cannot say.

Read on every old-style request (no restart after an edit); a missing file means no defaults. Only
the parts below may appear: the cluster's identity, nodes, endpoint, CIDRs and SSH come from the
request, never from a file that applies to every cluster. A bad file refuses the request with one
line per problem, naming the file — and nothing runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from installers.settings import KaiSettings
from installers.spec_loading import SpecError, parse_yaml, read_spec_file

FILE_NAME = "old-body-defaults.yaml"
# spec sections an old body has no field for (a key the body maps — name, kubernetes.version,
# networking.*, nodes, control_plane_endpoint, ssh, addons.monitoring — is the request's alone)
ALLOWED = ("mirror", "runtime", "kubelet", "preflight", "steps", "storage", "etcd_backup")


def path(state_dir: Path | None = None) -> Path:
    return (state_dir or KaiSettings().state_path()) / FILE_NAME


def load(state_dir: Path | None = None) -> dict[str, Any]:
    """The defaults ({} without a file), or SpecError naming the file and every problem."""
    file = path(state_dir)
    if not file.exists():
        return {}
    try:
        data = parse_yaml(read_spec_file(file))
    except SpecError as exc:
        raise SpecError([f"{file}: {p}" for p in exc.problems]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError([f"{file}: must be a mapping of spec sections ({', '.join(ALLOWED)}), "
                         f"not {type(data).__name__}"])
    problems = [f"{file}: {key}: not a default an operator may set for old-style requests "
                f"(allowed: {', '.join(ALLOWED)}; the request itself says the rest)"
                for key in data if key not in ALLOWED]
    problems += [f"{file}: {key}: must be a mapping, not {type(data[key]).__name__}"
                 for key in data if key in ALLOWED and not isinstance(data[key], dict)]
    if problems:
        raise SpecError(problems)
    return data


def fill(spec: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`spec` with `defaults` underneath: mappings merged key by key, the spec's value wins."""
    out = dict(defaults)
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = fill(value, out[key])
        else:
            out[key] = value
    return out
