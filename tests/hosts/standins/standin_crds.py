"""CustomResourceDefinitions for the API stand-in: validation, the Established condition, the
custom objects they allow, and API discovery of their groups.

What the real API server does, in the subset kai relies on:
- a CRD is checked (metadata.name = <plural>.<group>, names, scope, versions: at least one, exactly
  one storage version, every served version with a schema) and refused with 422 Invalid naming
  the field;
- it turns NamesAccepted and then Established a moment after it is created (ESTABLISH_DELAY_S):
  until then its resources are not served — a custom object applied too early is refused with
  404 NotFound, which kubectl reports as "no matches for kind … ensure CRDs are installed first";
- an object of a group that is neither built in nor served by an Established CRD is refused;
- GET /apis/<group>/<version> lists the served resources (kubectl's discovery).
Python 3 standard library only (runs on the test hosts inside the API stand-in).
"""

from __future__ import annotations

import re

ESTABLISH_DELAY_S = 1.0
CRD_PREFIX = "apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
BUILTIN_GROUPS = {"", "apps", "rbac.authorization.k8s.io", "storage.k8s.io", "policy",
                  "apiextensions.k8s.io", "apiregistration.k8s.io", "networking.k8s.io",
                  "admissionregistration.k8s.io", "batch", "coordination.k8s.io",
                  "discovery.k8s.io", "node.k8s.io", "scheduling.k8s.io", "certificates.k8s.io",
                  "autoscaling", "events.k8s.io", "flowcontrol.apiserver.k8s.io"}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def is_custom(api_version: str) -> bool:
    return group_version(api_version)[0] not in BUILTIN_GROUPS


def crd_problem(obj: dict) -> str | None:
    """Why the API server refuses this CRD (422 Invalid), or None."""
    name = (obj.get("metadata") or {}).get("name", "")
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
    if not group or "." not in group:
        return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: spec.group: ' \
               f'Invalid value: "{group}": should be a domain with at least one dot'
    if not plural or not _DNS_LABEL.fullmatch(plural):
        return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: ' \
               f'spec.names.plural: Invalid value: "{plural}"'
    if not kind:
        return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: ' \
               f'spec.names.kind: Required value'
    if name != f"{plural}.{group}":
        return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: metadata.name: ' \
               f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: spec.scope: ' \
               f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"'
    versions = spec.get("versions") or []
    if not versions:
        return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: spec.versions: ' \
               f'Invalid value: must have exactly one version marked as storage version'
    if sum(bool(v.get("storage")) for v in versions) != 1:
        return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: ' \
               f'spec.versions: Invalid value: must have exactly one version marked as storage version'
    for i, v in enumerate(versions):
        if v.get("served") and not ((v.get("schema") or {}).get("openAPIV3Schema")):
            return f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: ' \
                   f'spec.versions[{i}].schema.openAPIV3Schema: Required value: schemas are required'
    return None


def established(created: float | None, now: float) -> bool:
    return created is not None and now - created >= ESTABLISH_DELAY_S


def with_conditions(crd: dict, created: float | None, now: float) -> dict:
    """The CRD as GET shows it: status.acceptedNames and the conditions."""
    ok = established(created, now)
    crd = dict(crd)
    crd["status"] = {
        "acceptedNames": (crd.get("spec") or {}).get("names", {}),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            {"type": "Established", "status": "True" if ok else "False",
             "reason": "InitialNamesAccepted" if ok else "Installing"},
        ],
        "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
    }
    return crd


def served(crds: list[tuple[dict, float | None]], group: str, version: str,
           now: float) -> list[dict]:
    """The Established CRDs that serve group/version."""
    return [c for c, t in crds if established(t, now) and c["spec"]["group"] == group
            and any(v["name"] == version and v.get("served") for v in c["spec"]["versions"])]


def discovery(crds: list[tuple[dict, float | None]], group: str, version: str,
              now: float) -> dict | None:
    """GET /apis/<group>/<version> for a CRD group (None: not served: 404)."""
    mine = served(crds, group, version, now)
    if not mine:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
            "resources": [{"name": c["spec"]["names"]["plural"], "kind": c["spec"]["names"]["kind"],
                           "namespaced": c["spec"]["scope"] == "Namespaced",
                           "singularName": c["spec"]["names"].get("singular", ""),
                           "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                          for c in mine]}


def custom_object_problem(crds: list[tuple[dict, float | None]], obj: dict, key: str,
                          now: float) -> str | None:
    """Why a custom object at REST path `key` is refused (404: no such resource), or None."""
    group, version = group_version(obj.get("apiVersion", ""))
    kind = obj.get("kind", "")
    for crd in served(crds, group, version, now):
        names = crd["spec"]["names"]
        if names["kind"] != kind:
            continue
        namespaced = crd["spec"]["scope"] == "Namespaced"
        m = re.fullmatch(rf"apis/{re.escape(group)}/{re.escape(version)}"
                         rf"(/namespaces/[^/]+)?/([^/]+)/[^/]+", key)
        if not m or m[2] != names["plural"] or bool(m[1]) != namespaced:
            return f"the server could not find the requested resource ({key})"
        return None
    return f"the server could not find the requested resource ({key}): no Established " \
           f"CustomResourceDefinition serves kind {kind} in {group}/{version}"
