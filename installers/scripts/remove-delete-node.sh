#!/usr/bin/env bash
# remove_nodes, on a remaining control plane: `kubectl delete node` (after the node's reset stopped
# its kubelet, which would register it again), then check it is gone. A Node already gone is fine.
# Idempotent: no done marker.
# Inputs: KAI_NODE_NAME.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"
[[ -f /etc/kubernetes/admin.conf ]] ||
  kai_die "/etc/kubernetes/admin.conf is missing: run this on an initialised control plane"

kubectl_admin() { kubectl --kubeconfig /etc/kubernetes/admin.conf "$@"; }

kubectl_admin delete node "$KAI_NODE_NAME" --ignore-not-found 2>&1 ||
  kai_die "kubectl delete node $KAI_NODE_NAME failed (its error is above)"
if out=$(kubectl_admin get node "$KAI_NODE_NAME" 2>&1); then
  kai_die "node $KAI_NODE_NAME is still registered after kubectl delete node (is its kubelet still running?)"
fi
[[ $out == *NotFound* || $out == *"not found"* ]] || {
  printf '%s\n' "$out" >&2
  kai_die "kubectl get node $KAI_NODE_NAME failed (its error is above)"
}
kai_log "node $KAI_NODE_NAME is no longer registered"
