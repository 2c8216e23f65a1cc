"""rebuild: reset every node, then install again — what a scheduled rebuild runs."""

from typing import Literal

from prefect import flow

from flows import flow_of
from flows.reset import reset
from installers.modes import install_choices, install_mode
from installers.spec import ClusterSpec


@flow(name="rebuild")
def rebuild(spec: ClusterSpec, mode: Literal[install_choices()] = "auto",  # type: ignore[valid-type]
            lock_wait_s: float = 30) -> dict:
    """Reset the cluster, then install it from scratch (auto: one node → all_in_one, else ha)."""
    reset(spec, lock_wait_s=lock_wait_s)
    install = flow_of(install_mode(spec, mode))
    return install(spec, lock_wait_s=lock_wait_s)
