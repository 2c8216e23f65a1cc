#!/usr/bin/env bash
# remove_nodes, on a remaining control plane: kubectl drain one node (cordon, evict through the
# API so PodDisruptionBudgets are honoured, DaemonSet pods left, emptyDir data given up), within
# KAI_DRAIN_TIMEOUT_S. On failure the error names the pods that could not be evicted and why.
# A node no longer registered is skipped. Idempotent by nature: no done marker.
# Inputs: KAI_NODE_NAME, KAI_DRAIN_TIMEOUT_S (seconds).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"
: "${KAI_DRAIN_TIMEOUT_S:?KAI_DRAIN_TIMEOUT_S is required (seconds)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"
[[ $KAI_DRAIN_TIMEOUT_S =~ ^[1-9][0-9]*$ ]] ||
  kai_die "KAI_DRAIN_TIMEOUT_S must be a whole number of seconds, not '$KAI_DRAIN_TIMEOUT_S'"
[[ -f /etc/kubernetes/admin.conf ]] ||
  kai_die "/etc/kubernetes/admin.conf is missing: run this on an initialised control plane"

kubectl_admin() { kubectl --kubeconfig /etc/kubernetes/admin.conf "$@"; }

if ! out=$(kubectl_admin get node "$KAI_NODE_NAME" 2>&1); then
  if [[ $out == *NotFound* || $out == *"not found"* ]]; then
    kai_log "$KAI_NODE_NAME: not registered (already deleted): nothing to drain"
    exit 0
  fi
  printf '%s\n' "$out" >&2
  kai_die "kubectl get node $KAI_NODE_NAME failed (its error is above)"
fi

# blocking_pods LOG: "namespace/name" of every pod kubectl could not evict, once each.
blocking_pods() {
  local line rest seen=" "
  while IFS= read -r line; do
    rest=$line
    while [[ $rest =~ pods/\"([^\"]+)\"\ -n\ \"([^\"]+)\" ]]; do
      if [[ $seen != *" ${BASH_REMATCH[2]}/${BASH_REMATCH[1]} "* ]]; then
        seen+="${BASH_REMATCH[2]}/${BASH_REMATCH[1]} "
        printf '%s\n' "${BASH_REMATCH[2]}/${BASH_REMATCH[1]}"
      fi
      rest=${rest#*"${BASH_REMATCH[0]}"}
    done
  done <"$1"
}

log="$KAI_WORK/drain.log"
kai_log "draining $KAI_NODE_NAME (timeout ${KAI_DRAIN_TIMEOUT_S}s)"
rc=0
kubectl_admin drain "$KAI_NODE_NAME" --ignore-daemonsets --delete-emptydir-data \
  --timeout="${KAI_DRAIN_TIMEOUT_S}s" 2>&1 | tee "$log" || rc=$?
if ((rc != 0)); then
  mapfile -t pods < <(blocking_pods "$log")
  # kubectl's own reasons: a budget that refused the eviction, a pod without a controller, …
  why=$(grep -oE '(will retry after [0-9a-z.]+\): |cannot delete ).*' "$log" | tail -n 1 |
    sed -E 's/^will retry after [0-9a-z.]+\): //') || true
  if ((${#pods[@]} > 0)); then
    kai_die "drain of $KAI_NODE_NAME failed (timeout ${KAI_DRAIN_TIMEOUT_S}s): blocked by pod(s) ${pods[*]}${why:+: $why}"
  fi
  kai_die "drain of $KAI_NODE_NAME failed (exit $rc)${why:+: $why} (kubectl's output is above)"
fi
kai_log "$KAI_NODE_NAME drained"
