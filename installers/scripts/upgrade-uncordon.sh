#!/usr/bin/env bash
# After `kai upgrade` upgraded nodes, from the first control plane (admin.conf): wait until each
# node is Ready with its kubelet at the target version, then uncordon it — unless it was cordoned
# before the upgrade (upgrade-drain.sh's record says "before"): that one stays cordoned and is
# listed in $KAI_OUT_DIR/left_cordoned. A node that does not come back stays cordoned (the
# step fails naming it). Inputs: KAI_UNCORDON_NODES (space list), KAI_K8S_VERSION,
# KAI_READY_TIMEOUT_S.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_UNCORDON_NODES:?KAI_UNCORDON_NODES is required (node names)}"
: "${KAI_K8S_VERSION:?KAI_K8S_VERSION is required}"
: "${KAI_READY_TIMEOUT_S:?KAI_READY_TIMEOUT_S is required (seconds)}"
: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"
[[ $KAI_READY_TIMEOUT_S =~ ^[1-9][0-9]*$ ]] || kai_die "KAI_READY_TIMEOUT_S must be whole seconds, not '$KAI_READY_TIMEOUT_S'"

kai_begin

ADMIN=/etc/kubernetes/admin.conf
[[ -f $ADMIN ]] || kai_die "$ADMIN is missing: uncordon runs on an initialised control plane"
RECORDS="$KAI_STATE_DIR/upgrade/cordoned"
WANT="v${KAI_K8S_VERSION#v}"

# "STATUS VERSION" of a node from `kubectl get nodes NAME` (kubectl's table: NAME STATUS ROLES AGE VERSION)
node_line() {
  local out _name status _roles _age version
  out=$(kubectl --kubeconfig "$ADMIN" get nodes "$1" 2>&1) || {
    printf 'unreadable %s\n' "${out//$'\n'/ }"
    return 0
  }
  read -r _name status _roles _age version < <(tail -n 1 <<<"$out")
  printf '%s %s\n' "$status" "$version"
}

read -r -a nodes <<<"$KAI_UNCORDON_NODES"
deadline=$((SECONDS + KAI_READY_TIMEOUT_S))
while :; do
  waiting=()
  for node in "${nodes[@]}"; do
    read -r status version < <(node_line "$node")
    [[ $status == Ready* && $version == "$WANT" ]] || waiting+=("$node ($status, kubelet $version)")
  done
  ((${#waiting[@]} == 0)) && break
  ((SECONDS < deadline)) ||
    kai_die "not Ready at $WANT after ${KAI_READY_TIMEOUT_S}s, left cordoned: ${waiting[*]}"
  sleep 2
done
kai_log "Ready at $WANT: ${nodes[*]}"

for node in "${nodes[@]}"; do
  who=$(cat "$RECORDS/$node" 2>/dev/null || echo kai)
  if [[ $who == before ]]; then
    kai_log "$node stays cordoned: it was cordoned before the upgrade"
    printf '%s\n' "$node" >>"$KAI_OUT_DIR/left_cordoned"
  else
    attempt=0
    until out=$(kubectl --kubeconfig "$ADMIN" uncordon "$node" 2>&1); do
      attempt=$((attempt + 1))
      ((attempt < 20)) || kai_die "kubectl uncordon $node failed 20 times: $out"
      sleep 3
    done
    kai_log "$out"
  fi
  rm -f "$RECORDS/$node"
done
kai_done
