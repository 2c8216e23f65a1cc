"""The upgrade mode's rules that need no host: which version it may move to, in what batches.

kubeadm moves a cluster one minor at a time (its MaximumAllowedMinorVersionUpgradeSkew is 1) and
never down; a patch within the minor is an upgrade too. At plan time the cluster's version is the
spec's `kubernetes.version` (the spec describes the running cluster; it may already say the
target, edited before the upgrade); the upgrade's preflight checks the same rule again against
the versions the nodes really run (installers/upgrade_checks.py).

Prefect-free and model-free (the spec is only read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from installers import versions as V

if TYPE_CHECKING:
    from installers.spec import ClusterSpec

TARGET_FIELD = "to"
MAX_UNAVAILABLE_FIELD = "max_unavailable"
DEFAULT_MAX_UNAVAILABLE = 1


@dataclass(frozen=True)
class Target:
    minor: str     # "1.37"
    version: str   # "1.37.1": a minor alone means its default patch (installers/versions.py)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.removeprefix("v").split("."))


def resolve_target(to: Any) -> tuple[Target | None, list[str]]:
    """(the target, []) or (None, the problems naming the field)."""
    if to is None or to == "":
        return None, [f"{TARGET_FIELD}: upgrade needs the Kubernetes version to move to "
                      f"(e.g. --to 1.37, or a patch such as 1.36.5)"]
    if not isinstance(to, str):
        return None, [f"{TARGET_FIELD}: must be a version string such as \"1.37\", "
                      f"not {type(to).__name__}"]
    try:
        minor, full = V.resolve_kubernetes_version(to)
    except ValueError as exc:
        return None, [f"{TARGET_FIELD}: {exc}"]
    return Target(minor, full), []


def step_problems(current: str, target: Target, where: str, allow_same: bool = False) -> list[str]:
    """Is current → target one supported upgrade step? `where` says where `current` came from
    (the spec's kubernetes.version, the API servers). allow_same: the spec may say the target
    already (edited before the upgrade), the running versions are judged at run time."""
    cur, new = version_tuple(current), version_tuple(target.version)
    if new == cur and allow_same:
        return []
    if new < cur:
        return [f"{TARGET_FIELD}: {target.version} is older than {current} ({where}): "
                f"kai upgrades, it never goes down (a downgrade is a rebuild at the older version)"]
    if new == cur:
        return [f"{TARGET_FIELD}: the cluster is already at {current} ({where}): nothing to upgrade "
                f"(after an upgrade, set kubernetes.version to the new version in the spec)"]
    if new[:2] > (cur[0], cur[1] + 1):
        step = f"{cur[0]}.{cur[1] + 1}"
        return [f"{TARGET_FIELD}: {target.version} skips a minor: {where} is {current}, and kubeadm "
                f"upgrades one minor at a time (first --to {step}, then --to {target.minor})"]
    if new[0] != cur[0]:
        return [f"{TARGET_FIELD}: {target.version} is another major version than {current} ({where})"]
    return []


def max_unavailable_problems(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return [f"{MAX_UNAVAILABLE_FIELD}: the number of workers upgraded at once must be a whole "
                f"number of at least 1, not {value!r}"]
    return []


def upgrade_problems(spec: ClusterSpec, options: Mapping[str, Any]) -> list[str]:
    """Every problem of an upgrade's options against the spec, each naming its field."""
    target, problems = resolve_target(options.get(TARGET_FIELD))
    if target is not None:
        problems += step_problems(spec.kubernetes.full_version, target,
                                  f"the spec's kubernetes.version {spec.kubernetes.version}",
                                  allow_same=True)
    return problems + max_unavailable_problems(options.get(MAX_UNAVAILABLE_FIELD))


def options_for_other_modes(mode: str, options: Mapping[str, Any]) -> list[str]:
    """A target given to a mode that takes none is a mistake worth saying."""
    return [f"{name}: only the upgrade mode takes {name}, not {mode}"
            for name in (TARGET_FIELD, MAX_UNAVAILABLE_FIELD) if options.get(name) is not None]


def worker_batches(workers: Sequence[str], max_unavailable: int | None) -> list[list[str]]:
    """The workers in the spec's order, `max_unavailable` at a time."""
    size = max_unavailable or DEFAULT_MAX_UNAVAILABLE
    return [list(workers[i:i + size]) for i in range(0, len(workers), size)]
