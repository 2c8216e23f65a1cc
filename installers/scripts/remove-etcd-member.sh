#!/usr/bin/env bash
# remove_nodes --force, on a remaining control plane: remove a dead control plane's etcd member
# (a reachable one's own `kubeadm reset` removes it). etcdctl runs inside this node's etcd
# container, with the healthcheck client certificate kubeadm made. A member already gone is fine.
# Idempotent: no done marker.
# Inputs: KAI_NODE_NAME (the member's name: kubeadm names it after the node).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"

PKI=/etc/kubernetes/pki/etcd

etcd_container() {
  local ids=()
  mapfile -t ids < <(crictl ps --name etcd --state running -q)
  ((${#ids[@]} > 0)) || kai_die "no running etcd container on this control plane (crictl ps --name etcd)"
  printf '%s\n' "${ids[0]}"
}

etcdctl_here() {
  crictl exec "$ETCD_ID" etcdctl --endpoints=https://127.0.0.1:2379 --cacert="$PKI/ca.crt" \
    --cert="$PKI/healthcheck-client.crt" --key="$PKI/healthcheck-client.key" "$@"
}

# kai_dec_to_hex DECIMAL: an unsigned 64-bit decimal (etcd's member IDs in JSON) in hex, by long
# division on the digits (bash's arithmetic is signed: printf %x breaks above 2^63).
kai_dec_to_hex() {
  local n=$1 hex="" q r d i digits=0123456789abcdef
  [[ $n =~ ^[0-9]+$ ]] || kai_die "not a member ID: '$n'"
  while [[ $n != 0 ]]; do
    q="" r=0
    for ((i = 0; i < ${#n}; i++)); do
      d=$((r * 10 + ${n:i:1}))
      q+=$((d / 16))
      r=$((d % 16))
    done
    hex=${digits:r:1}$hex
    n=$(sed -E 's/^0+//' <<<"$q")
    [[ -n $n ]] || n=0
  done
  printf '%s\n' "${hex:-0}"
}

# member_id JSON NAME: the decimal ID of the member named NAME in `member list -w json`, or nothing.
member_id() {
  local object name id
  while IFS= read -r object; do
    [[ $object =~ \"name\"[[:space:]]*:[[:space:]]*\"([^\"]*)\" ]] || continue
    name=${BASH_REMATCH[1]}
    [[ $object =~ \"ID\"[[:space:]]*:[[:space:]]*([0-9]+) ]] || continue
    id=${BASH_REMATCH[1]}
    if [[ $name == "$2" ]]; then
      printf '%s\n' "$id"
      return 0
    fi
  done < <(grep -oE '\{[^{}]*\}' <<<"$1")
}

ETCD_ID=$(etcd_container)
list=$(etcdctl_here member list -w json) || kai_die "etcdctl member list failed (its error is above)"
id=$(member_id "$list" "$KAI_NODE_NAME")
if [[ -z $id ]]; then
  kai_log "etcd has no member named $KAI_NODE_NAME (already removed)"
  exit 0
fi
hex=$(kai_dec_to_hex "$id")
kai_log "removing etcd member $KAI_NODE_NAME ($hex)"
etcdctl_here member remove "$hex" 2>&1 || kai_die "etcdctl member remove $hex failed (its error is above)"
list=$(etcdctl_here member list -w json) || kai_die "etcdctl member list failed (its error is above)"
[[ -z $(member_id "$list" "$KAI_NODE_NAME") ]] || kai_die "etcd still lists $KAI_NODE_NAME after member remove"
kai_log "etcd member $KAI_NODE_NAME removed"
