"""The spec's rules that depend on the mode a run is for (an argument, not part of the spec):
how many nodes and control planes each install mode needs, what add_nodes and remove_nodes may
name, and which options (force, renew, snapshot, an upgrade's target) a mode takes. Every problem
is one `field: message` line, as the spec's own (installers/spec.py)."""

from __future__ import annotations

from typing import Any, Mapping

from installers import modes
from installers.spec import MODES, ClusterSpec, NodeEndpoint
from installers.spec_loading import shown


def validate_for_mode(spec: ClusterSpec, mode: str, nodes: list[str] | None = None,
                      options: Mapping[str, Any] | None = None) -> list[str]:
    """Rules that depend on the mode (an argument, not part of the spec); `options` are the
    target a mode that takes one is given (installers/modes.py target_options)."""
    from installers import upgrade_rules

    p: list[str] = []
    cps = spec.control_planes()
    if mode not in MODES:
        if mode in modes.names():  # e.g. rebuild: no plan of its own
            return [f"mode: {mode} has no plan of its own, it runs other modes' plans one after "
                    f"another (planned modes: {', '.join(MODES)})"]
        return [f"mode: unknown mode {shown(mode)} (known: {', '.join(MODES)})"]
    if mode == "all_in_one":
        if len(spec.nodes) != 1:
            p.append(f"nodes: all_in_one needs exactly one node, the spec has {len(spec.nodes)}")
        elif not spec.nodes[0].is_control_plane:
            p.append("nodes[0].roles: the all_in_one node must have the role control-plane")
    elif mode == "ha":
        if len(cps) < 3:
            p.append(f"nodes: ha needs at least 3 control-plane nodes (etcd quorum), the spec has {len(cps)}")
        elif len(cps) % 2 == 0:
            p.append(f"nodes: ha needs an odd number of control-plane nodes (etcd quorum), "
                     f"the spec has {len(cps)}")
        if isinstance(spec.control_plane_endpoint, NodeEndpoint):
            p.append("control_plane_endpoint.type: ha needs kube_vip or load_balancer, not node")
    elif mode == "add_nodes":
        if not nodes:
            p.append("nodes: add_nodes needs the names of the nodes to add (--nodes a,b)")
        else:
            known = {n.name for n in spec.nodes}
            for name in nodes:
                if name not in known:
                    p.append(f"nodes: {shown(name)} (to add) is not a node of the spec")
            if cps and cps[0].name in nodes:
                p.append(f"nodes: {cps[0].name!r} is the first control plane; it cannot be added, "
                         f"the cluster is built around it")
            if len(set(nodes)) != len(nodes):
                p.append("nodes: a node is named twice in the list to add")
    elif mode == "remove_nodes":
        from installers.removal import problems as removal_problems  # it reads this module's classes
        p += removal_problems(spec, nodes)
    if nodes and not modes.get(mode).takes_nodes:
        p.append(f"nodes: a list of nodes only applies to add_nodes, not {mode}")
    if (options or {}).get(modes.FORCE_PARAM) and not modes.get(mode).takes_force:
        p.append(f"force: only applies to remove_nodes, not {mode}")
    if (options or {}).get(modes.RENEW_PARAM) and not modes.get(mode).takes_renew:
        p.append(f"renew: only applies to certs, not {mode}")
    if modes.get(mode).takes_snapshot:
        from installers.etcd_backups import name_problems  # pure: the name, not the file
        p += name_problems(spec.name, (options or {}).get(modes.SNAPSHOT_PARAM))
    elif (options or {}).get(modes.SNAPSHOT_PARAM) is not None:
        p.append(f"snapshot: only etcd_restore takes a snapshot, not {mode}")
    if modes.get(mode).takes_target:
        p += upgrade_rules.upgrade_problems(spec, options or {})
    else:
        p += upgrade_rules.options_for_other_modes(mode, options or {})
    return p
