"""remove_nodes' rules: which removals are refused, and where the work runs. Pure functions.

Refused before anything is touched, each with a message naming the node:
- a name that is not a node of the spec, or named twice;
- the last control plane, or control planes whose removal would leave etcd without quorum: the
  remaining members must be a majority of the members there are now (3 → 2 is allowed, 2 → 1 is
  not). Counted twice: from the spec when the plan is made (`kai plan`, the REST start), and from
  the running cluster's control-plane Nodes when the run starts (a spec not edited after an
  earlier removal still lists the removed node; tasks/remove.py `quorum_check`);
- the first control plane of a cluster whose endpoint is that node's own address (type `node`):
  the endpoint would go with it.

The spec after a removal is the user's to edit: the flow takes node names, the plan and the final
report say which entries to delete from the spec. The work that needs the cluster (cordon, drain,
`kubectl delete node`, etcd) runs on the *anchor*: the spec's first control plane not removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from installers.spec_loading import shown

if TYPE_CHECKING:
    from installers.spec import ClusterSpec, Node


def quorum(members: int) -> int:
    """etcd's quorum: a majority of the members."""
    return members // 2 + 1


def quorum_problem(members: Iterable[str], removing: Iterable[str], where: str) -> str | None:
    """Why removing `removing` (control planes among `members`) is refused, or None.
    `where` says which count this is ("the spec lists", "the cluster has")."""
    members = list(dict.fromkeys(members))
    going = [m for m in dict.fromkeys(removing) if m in members]
    if not going:
        return None
    left = len(members) - len(going)
    names = ", ".join(repr(n) for n in going)
    if left == 0:
        return (f"nodes: removing {names} would remove the last control plane ({where} "
                f"{len(members)}: {', '.join(members)}); a cluster needs at least one")
    if left < quorum(len(members)):
        return (f"nodes: removing {names} would leave {left} of {len(members)} etcd members "
                f"({where} {len(members)} control planes: {', '.join(members)}); they would not "
                f"hold quorum ({quorum(len(members))} needed) — remove control planes only while "
                f"a majority of the members stays, or add control planes first")
    return None


def problems(spec: ClusterSpec, nodes: Sequence[str] | None) -> list[str]:
    """Every reason the spec refuses removing `nodes` (empty: allowed)."""
    from installers.spec import NodeEndpoint

    if not nodes:
        return ["nodes: remove_nodes needs the names of the nodes to remove (--nodes a,b)"]
    p: list[str] = []
    known = {n.name for n in spec.nodes}
    for name in nodes:
        if name not in known:
            p.append(f"nodes: {shown(name)} (to remove) is not a node of the spec "
                     f"(nodes: {', '.join(sorted(known))})")
    for name in dict.fromkeys(n for n in nodes if list(nodes).count(n) > 1):
        p.append(f"nodes: {shown(name)} is named twice in the list to remove")
    cps = [n.name for n in spec.control_planes()]
    if (problem := quorum_problem(cps, nodes, "the spec lists")) is not None:
        p.append(problem)
    if isinstance(spec.control_plane_endpoint, NodeEndpoint) and cps and cps[0] in nodes:
        p.append(f"nodes: {cps[0]!r} is the control-plane endpoint of this cluster "
                 f"(control_plane_endpoint.type node: {spec.endpoint()}); removing it would take "
                 f"the endpoint with it")
    return p


def anchor(spec: ClusterSpec, nodes: Sequence[str]) -> Node:
    """The control plane that runs the cluster-side work: the first one not being removed."""
    return next(n for n in spec.control_planes() if n.name not in nodes)


def remaining(spec: ClusterSpec, nodes: Sequence[str]) -> list[Node]:
    return [n for n in spec.nodes if n.name not in nodes]


def live_problems(control_planes: Sequence[str], registered: Sequence[str],
                  nodes: Sequence[str]) -> tuple[list[str], list[str]]:
    """(problems, notes) from the running cluster: `control_planes` are the registered Nodes with
    the control-plane role, `registered` every registered Node. A node to remove that is not
    registered any more is a note (an earlier run deleted it: this one finishes the rest)."""
    problems_found: list[str] = []
    if (problem := quorum_problem(control_planes, nodes, "the cluster has")) is not None:
        problems_found.append(problem)
    notes = [f"{name}: not registered in the cluster (already deleted); its remaining steps run"
             for name in nodes if name not in registered]
    return problems_found, notes


def spec_edit_note(spec: ClusterSpec, nodes: Sequence[str]) -> str:
    """What the user removes from the spec after the run."""
    gone = [n for n in spec.nodes if n.name in nodes]
    entries = ", ".join(f"{n.name} ({n.address})" for n in gone)
    return (f"after the removal, delete these entries from the spec's nodes: {entries} "
            f"(kai does not edit the spec; later runs of any mode expect it edited)")
