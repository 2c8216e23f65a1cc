"""What kai's two kinds of host lock hold right now, read the way a test checks them."""

from __future__ import annotations


def host_lock_slots(address: str) -> int:
    """Active slots of the Prefect global concurrency limit kai takes for a host (0 or 1)."""
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(f"kai-host-{address}").active_slots


def node_lock(host) -> dict[str, str]:
    """The node lock file's fields (/var/lib/kai/lock; empty when no run holds the node)."""
    out = host.exec("cat /var/lib/kai/lock 2>/dev/null || true").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
