#!/usr/bin/env bash
# Drain nodes for `kai upgrade`, from the first control plane (admin.conf): `kubectl drain` cordons
# each node and evicts its pods through the API, which honours PodDisruptionBudgets; DaemonSet
# pods stay, emptyDir data goes (the pods are recreated elsewhere). The nodes drain in parallel.
# Inputs: KAI_DRAIN_NODES (space list), KAI_DRAIN_TIMEOUT_S (kubectl's --timeout), KAI_K8S_VERSION
# (the upgrade's target: a drain per target). Before cordoning, it records who cordoned each node
# ($KAI_STATE_DIR/upgrade/cordoned/<node>: "kai", or "before" when it was cordoned already), so
# upgrade-uncordon.sh uncordons only what kai cordoned.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_DRAIN_NODES:?KAI_DRAIN_NODES is required (node names)}"
: "${KAI_DRAIN_TIMEOUT_S:?KAI_DRAIN_TIMEOUT_S is required (seconds)}"
: "${KAI_K8S_VERSION:?KAI_K8S_VERSION is required}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"
[[ $KAI_DRAIN_TIMEOUT_S =~ ^[1-9][0-9]*$ ]] || kai_die "KAI_DRAIN_TIMEOUT_S must be whole seconds, not '$KAI_DRAIN_TIMEOUT_S'"

kai_begin

ADMIN=/etc/kubernetes/admin.conf
[[ -f $ADMIN ]] || kai_die "$ADMIN is missing: drains run on an initialised control plane"
RECORDS="$KAI_STATE_DIR/upgrade/cordoned"

# kubectl_retry ARGS...: the API endpoint may move for a few seconds (kube-vip fails over while a
# control plane's kubelet restarts): retry for up to 60 s.
kubectl_retry() {
  local attempt out=""
  for attempt in $(seq 1 20); do
    if out=$(kubectl --kubeconfig "$ADMIN" "$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    ((attempt < 20)) && sleep 3
  done
  printf '%s\n' "$out" >&2
  return 1
}

mkdir -p "$RECORDS"
chmod 0700 "$KAI_STATE_DIR" "$KAI_STATE_DIR/upgrade" "$RECORDS"
read -r -a nodes <<<"$KAI_DRAIN_NODES"
for node in "${nodes[@]}"; do
  [[ -f $RECORDS/$node ]] && continue # a drain of an earlier attempt or run cordoned it
  status=$(kubectl_retry get nodes "$node") || kai_die "cannot read node $node from the API"
  if [[ $status == *SchedulingDisabled* ]]; then
    kai_log "$node was cordoned before the upgrade: it is drained and upgraded, and stays cordoned"
    printf 'before\n' >"$RECORDS/$node"
  else
    printf 'kai\n' >"$RECORDS/$node"
  fi
done

pids=()
for node in "${nodes[@]}"; do
  kai_log "draining $node (timeout ${KAI_DRAIN_TIMEOUT_S}s)"
  kubectl --kubeconfig "$ADMIN" drain "$node" --ignore-daemonsets --delete-emptydir-data \
    --timeout="${KAI_DRAIN_TIMEOUT_S}s" >"$KAI_WORK/drain-$node.log" 2>&1 &
  pids+=("$!")
done
failed=()
for i in "${!nodes[@]}"; do
  node=${nodes[$i]}
  if wait "${pids[$i]}"; then
    sed "s/^/$node: /" "$KAI_WORK/drain-$node.log"
    continue
  fi
  sed "s/^/$node: /" "$KAI_WORK/drain-$node.log" >&2
  # kubectl names each pod it could not evict: the last one named is the one that blocked
  blocker=$(grep -o 'evicting pods/"[^"]*" -n "[^"]*"' "$KAI_WORK/drain-$node.log" | tail -n 1 || true)
  if [[ $blocker =~ pods/\"([^\"]*)\"\ -n\ \"([^\"]*)\" ]]; then
    failed+=("$node: pod ${BASH_REMATCH[2]}/${BASH_REMATCH[1]} could not be evicted within ${KAI_DRAIN_TIMEOUT_S}s (a PodDisruptionBudget allows no disruption, or the pod does not terminate)")
  else
    failed+=("$node: kubectl drain failed: $(tail -n 1 "$KAI_WORK/drain-$node.log")")
  fi
done
if ((${#failed[@]} > 0)); then
  for f in "${failed[@]}"; do printf 'ERROR: drain of %s\n' "$f" >&2; done
  kai_die "drain failed on ${#failed[@]} node(s); they stay cordoned until the upgrade is rerun: ${failed[*]}"
fi
kai_done
