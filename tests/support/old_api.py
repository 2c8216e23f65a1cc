"""The old service's contract (docs/old-api.md) as data: every documented answer's fields with their
JSON types, written once, and a checker. tests/test_old_api.py sends every documented request to
`kai serve` and checks the answers against these shapes; tests/test_flows_e2e.py checks a completed
install's status (cluster_info with nodes) against STATUS_COMPLETED.

A shape is a JSON type (str, bool, int, FLOAT), a constant (Const), Nullable(shape), a list
`[shape]`, MapOf(shape) for an object with free keys, or a dict of required keys. Extra fields are
allowed everywhere: kai adds its own beside the old ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "old-api.md"


class _Float:
    """A JSON number (a client decoding a float accepts 12 as well as 12.0); never a bool."""

    def __repr__(self) -> str:
        return "float"


FLOAT = _Float()


@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class Nullable:
    shape: Any


@dataclass(frozen=True)
class MapOf:
    shape: Any


@dataclass(frozen=True)
class NonEmpty:
    """A list that must hold at least one element of the shape (so its elements get checked)."""
    shape: Any


MODE = {"name": str, "description": str, "requirements": [str], "features": [str],
        "estimated_time": str}
MODES = {"success": Const(True),
         "modes": {"all_in_one": MODE, "ha_secure": MODE},
         "supported_versions": NonEmpty(str), "supported_cnis": NonEmpty(str),
         "default_config": {"k8s_version": str, "pod_cidr": str, "service_cidr": str,
                            "cni_provider": str}}
STARTED = {"success": Const(True), "installation_id": str, "message": str, "mode": str,
           "estimated_duration": str}
ERROR = {"success": Const(False), "error": str}
STEP_RESULT = {"step_name": str, "success": bool, "duration": FLOAT, "error_message": Nullable(str),
               "output": Nullable(str), "host": Nullable(str)}
PROGRESS = {"installation_id": str, "current_step": int, "total_steps": int, "status": str,
            "progress_percentage": FLOAT, "duration": FLOAT, "start_time": FLOAT,
            "end_time": Nullable(FLOAT), "error_message": Nullable(str),
            "step_results": [STEP_RESULT]}
STATUS = {"success": Const(True), "installation_id": str, "progress": PROGRESS,
          "started_at": FLOAT, "completed": bool}
NODE = {"name": str, "status": str, "roles": str, "age": str, "version": str, "internal_ip": str}
CLUSTER_INFO = {"mode": str, "kubernetes_version": str, "cni_provider": str, "pod_cidr": str,
                "service_cidr": str, "kubeconfig_path": str, "installation_id": str,
                "nodes": [NODE], "pod_count_by_namespace": MapOf(int)}
STATUS_FINAL = {**STATUS, "completed": Const(True), "success_status": bool,
                "cluster_info": CLUSTER_INFO}
STATUS_COMPLETED = {**STATUS_FINAL, "success_status": Const(True),
                    "progress": {**PROGRESS, "step_results": NonEmpty(STEP_RESULT),
                                 "end_time": FLOAT},
                    "cluster_info": {**CLUSTER_INFO, "nodes": NonEmpty(NODE),
                                     "pod_count_by_namespace": MapOf(int)}}
LOG = {"timestamp": str, "level": str, "message": str, "source": str}
LOGS = {"success": Const(True), "installation_id": str, "logs": [LOG], "total_logs": int}
CANCELLED = {"success": Const(True), "message": str}

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NOT_FOUND = "Installation not found"
ALREADY_COMPLETED = "Installation already completed"


def problems(value: Any, shape: Any, path: str = "$") -> list[str]:
    """Every way `value` (decoded JSON) differs from `shape`, each naming the field."""
    def kind(v: Any) -> str:
        return "null" if v is None else type(v).__name__

    if shape is FLOAT:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: a number expected, got {kind(value)} {value!r}"]
    if shape in (str, bool, int):
        ok = isinstance(value, shape) and not (shape is int and isinstance(value, bool))
        return [] if ok else [f"{path}: {shape.__name__} expected, got {kind(value)} {value!r}"]
    if isinstance(shape, Const):
        ok = value == shape.value and type(value) is type(shape.value)
        return [] if ok else [f"{path}: {shape.value!r} expected, got {value!r}"]
    if isinstance(shape, Nullable):
        return [] if value is None else problems(value, shape.shape, path)
    if isinstance(shape, (list, NonEmpty)):
        if not isinstance(value, list):
            return [f"{path}: a list expected, got {kind(value)}"]
        if isinstance(shape, NonEmpty) and not value:
            return [f"{path}: a non-empty list expected"]
        element = shape.shape if isinstance(shape, NonEmpty) else shape[0]
        return [p for i, item in enumerate(value) for p in problems(item, element, f"{path}[{i}]")]
    if isinstance(shape, MapOf):
        if not isinstance(value, dict):
            return [f"{path}: an object expected, got {kind(value)}"]
        return [p for k, v in value.items() for p in problems(v, shape.shape, f"{path}.{k}")]
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path}: an object expected, got {kind(value)}"]
        out = []
        for key, sub in shape.items():
            if key not in value:
                out.append(f"{path}.{key}: missing")
            else:
                out += problems(value[key], sub, f"{path}.{key}")
        return out
    raise TypeError(f"not a shape: {shape!r}")


def assert_conforms(value: Any, shape: Any, what: str) -> None:
    found = problems(value, shape)
    assert not found, f"{what} breaks the old contract:\n  " + "\n  ".join(found)


def field_names(shape: Any) -> set[str]:
    """Every field name a shape requires, at any depth."""
    if isinstance(shape, dict):
        return set(shape) | {n for sub in shape.values() for n in field_names(sub)}
    if isinstance(shape, (Nullable, MapOf, NonEmpty)):
        return field_names(shape.shape)
    if isinstance(shape, list):
        return field_names(shape[0])
    return set()


def documented_field_names(doc: str | None = None) -> set[str]:
    """The answer fields docs/old-api.md names (`"name":` inside its shapes)."""
    text = DOC.read_text() if doc is None else doc
    return set(re.findall(r'"([a-z_]+)"\s*:', text))


ALL_SHAPES = (MODES, STARTED, ERROR, STATUS, STATUS_FINAL, STATUS_COMPLETED, LOGS, CANCELLED)
