#!/usr/bin/env bash
# remove_nodes, on a remaining control plane: cordon every node to remove at once, so that pods
# drained from one never land on another that goes next. A node no longer registered is skipped
# (an earlier run deleted it). Idempotent by nature (kubectl cordon): no done marker.
# Inputs: KAI_NODES (space-separated node names).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODES:?KAI_NODES is required (space-separated node names)}"
[[ -f /etc/kubernetes/admin.conf ]] ||
  kai_die "/etc/kubernetes/admin.conf is missing: run this on an initialised control plane"

kubectl_admin() { kubectl --kubeconfig /etc/kubernetes/admin.conf "$@"; }

# node_registered NAME: 0 when the Node exists, 1 when the API says NotFound; dies otherwise.
node_registered() {
  local out
  if out=$(kubectl_admin get node "$1" 2>&1); then
    return 0
  fi
  [[ $out == *NotFound* || $out == *"not found"* ]] && return 1
  printf '%s\n' "$out" >&2
  kai_die "kubectl get node $1 failed (its error is above)"
}

for node in $KAI_NODES; do
  if node_registered "$node"; then
    kubectl_admin cordon "$node" 2>&1 || kai_die "kubectl cordon $node failed (its error is above)"
  else
    kai_log "$node: not registered (already deleted): nothing to cordon"
  fi
done
