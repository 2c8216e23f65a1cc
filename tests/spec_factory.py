"""Small spec dicts for the tests (documentation addresses; nothing is ever contacted)."""

from __future__ import annotations

import copy


def aio(**over) -> dict:
    d = {"name": "demo",
         "nodes": [{"name": "node-1", "address": "192.168.10.11", "roles": ["control-plane"]}]}
    d.update(over)
    return copy.deepcopy(d)


def ha(workers: int = 2, cps: int = 3, endpoint: dict | None = None, **over) -> dict:
    nodes = [{"name": f"cp-{i}", "address": f"192.168.10.{10 + i}", "roles": ["control-plane"]}
             for i in range(1, cps + 1)]
    nodes += [{"name": f"worker-{i}", "address": f"192.168.10.{20 + i}", "roles": ["worker"]}
              for i in range(1, workers + 1)]
    d = {"name": "demo-ha",
         "control_plane_endpoint": endpoint or {"type": "kube_vip", "address": "192.168.10.100",
                                                "interface": "eth0"},
         "nodes": nodes}
    d.update(over)
    return copy.deepcopy(d)
