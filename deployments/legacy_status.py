"""A run's status in the old service's shape (`GET /{id}/status`: docs/old-api.md), built from
kai's richer status (deployments/run_status.py), which stays beside the old keys: the old
`progress` with its step numbers and per-host `step_results`, `cluster_info` with `kubectl get
nodes`' columns. Where an old name would change kai's type, kai's value moves to a new name
(`current_step_name`, `start_time_iso`, `role_list`). The other answers: deployments/legacy.py.
"""

from __future__ import annotations

import time
from datetime import datetime


def epoch(iso_time: str | None) -> float | None:
    return datetime.fromisoformat(iso_time).timestamp() if iso_time else None


# a step still to finish (run_status's "running" states): the run's current step is the last one
_STEP_ACTIVE = ("RUNNING", "PENDING", "AWAITINGRETRY", "RETRYING")


def step_number(st: dict) -> int:
    """The old `current_step`: the number of the step being run, counting from 1 in the order the
    steps started ("step 3 of 9"); 0 before the first; once none runs, the last one that ran."""
    steps = st["steps"]
    active = [i for i, s in enumerate(steps) if s["state"] in _STEP_ACTIVE]
    if active and not st["final"]:
        return active[-1] + 1
    ran = [i for i, s in enumerate(steps) if s["state"] not in ("PENDING", "SCHEDULED")]
    return ran[-1] + 1 if ran else 0


def _step_results(st: dict) -> list[dict]:
    results = []
    for step in st["steps"]:
        ok = step["state"] == "COMPLETED"
        if step["hosts"]:
            for h in step["hosts"]:
                results.append({
                    "step_name": step["name"], "success": h["status"] != "FAILED",
                    "duration": float(h["seconds"] or 0.0), "error_message": h["error"],
                    "output": h.get("output") or None, "host": h["host"]})
        else:
            results.append({"step_name": step["name"], "success": ok,
                            "duration": float(step["duration_s"] or 0.0),
                            "error_message": None if ok else step["message"], "output": None,
                            "host": None})
    return results


def status_envelope(st: dict, now: float | None = None) -> dict:
    """`GET /{id}/status`: the old `progress`, `started_at`, `completed` (and, once completed,
    `success_status` and `cluster_info`), with kai's richer view beside."""
    failure = st.get("failure") or {}
    status_word = {"SCHEDULED": "pending", "PENDING": "pending", "RUNNING": "running",
                   "COMPLETED": "completed", "FAILED": "failed", "CRASHED": "failed",
                   "CANCELLING": "cancelling", "CANCELLED": "cancelled",
                   "PAUSED": "paused"}.get(st["state"], st["state"].lower())
    error_message = failure.get("message")
    if failure.get("step"):
        hosts = ", ".join(failure.get("hosts") or []) or "controller"
        error_message = f"step {failure['step']} failed on {hosts}: {error_message or ''}".strip()
    # a run not started yet has no start time: it was asked for at `created`
    started_at = epoch(st["created"]) or 0.0
    body = {
        "success": True,
        "installation_id": st["id"],
        "mode": st.get("reported_mode") or st["mode"],
        "kai_mode": st["mode"],
        "progress": {
            "installation_id": st["id"],
            "current_step": step_number(st),
            "total_steps": st["total_steps"],
            "status": status_word,
            "progress_percentage": float(st["percent"]),
            "duration": float(st["duration_s"] or 0.0),
            "start_time": epoch(st["start_time"]) or started_at,
            "end_time": epoch(st["end_time"]),
            "error_message": error_message,
            "step_results": _step_results(st),
            # kai's
            "current_step_name": st["current_step"],
            "steps_done": st["steps_done"],
            "start_time_iso": st["start_time"],
            "end_time_iso": st["end_time"],
        },
        "started_at": started_at,
        "completed": st["final"],
        # kai's richer view
        "state": st["state"],
        "steps": st["steps"],
        "failure": st["failure"],
        "preflight_findings": st["preflight_findings"],
    }
    if st["final"]:
        body["success_status"] = st["state"] == "COMPLETED"
        body["cluster_info"] = cluster_info(st, now)
    return body


def cluster_info(st: dict, now: float | None = None) -> dict:
    """The old `cluster_info` from verify's data (the `cluster-facts` artifact, kept whole beside
    the old keys); a run that ended before verify has the spec's values and no nodes."""
    facts = dict(st.get("cluster_info") or {})
    spec = st.get("cluster") or {}
    now = time.time() if now is None else now
    nodes = []
    for n in facts.get("nodes") or []:
        roles = n.get("roles") or []
        created = epoch(n.get("created") or None)
        nodes.append({**n,
                      "name": n.get("name", ""),
                      "status": "Ready" if n.get("ready") else "NotReady",
                      "roles": ",".join(roles) or "<none>",    # as `kubectl get nodes` shows them
                      "age": human_age(now - created) if created is not None else "<unknown>",
                      "version": n.get("kubelet_version", ""),
                      "internal_ip": n.get("address", ""),
                      "role_list": list(roles)})
    return {**facts,
            "mode": st.get("reported_mode") or st["mode"],
            "installation_id": st["id"],
            "kubernetes_version": facts.get("version") or str(spec.get("kubernetes_version") or ""),
            "cni_provider": facts.get("cni") or str(spec.get("cni") or ""),
            "pod_cidr": facts.get("pod_cidr") or str(spec.get("pod_cidr") or ""),
            "service_cidr": facts.get("service_cidr") or str(spec.get("service_cidr") or ""),
            "kubeconfig_path": facts.get("kubeconfig_path") or "",
            "nodes": nodes,
            "pod_count_by_namespace": dict(facts.get("pod_count_by_namespace") or {})}


def human_age(seconds: float) -> str:
    """An age as `kubectl get` prints it (apimachinery's duration.HumanDuration): 45s, 5m30s,
    3h20m, 2d4h, 400d, 3y20d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // (24 * 365), (hours // 24) % 365
    if years < 8:
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"
