"""rebuild: reset every node, then install again — what a scheduled rebuild runs."""

from typing import Literal

from prefect import flow

from flows.all_in_one import all_in_one
from flows.ha import ha
from flows.reset import reset
from installers.spec import ClusterSpec


@flow(name="rebuild")
def rebuild(spec: ClusterSpec, mode: Literal["auto", "all_in_one", "ha"] = "auto",
            lock_wait_s: float = 30) -> dict:
    """Reset the cluster, then install it from scratch (auto: one node → all_in_one, else ha)."""
    if mode == "auto":
        mode = "all_in_one" if len(spec.nodes) == 1 else "ha"
    reset(spec, lock_wait_s=lock_wait_s)
    install = all_in_one if mode == "all_in_one" else ha
    return install(spec, lock_wait_s=lock_wait_s)
