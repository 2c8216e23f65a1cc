#!/usr/bin/env bash
# remove_nodes, on a control plane to remove, while its API server still runs: remove its kube-vip
# static pod, so that kube-vip gives up the VIP (and its leadership) and another control plane's
# kube-vip takes it; then wait until the VIP has left this node and answers from elsewhere
# (the API server's /readyz through the VIP, the cluster CA verified). Idempotent: no done marker.
# Inputs: KAI_VIP (address), KAI_VIP_PORT.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_VIP:?KAI_VIP is required (the control-plane VIP)}"
: "${KAI_VIP_PORT:?KAI_VIP_PORT is required}"
KAI_VIP_WAIT_S=${KAI_VIP_WAIT_S:-90}

MANIFEST=/etc/kubernetes/manifests/kube-vip.yaml
CA=/etc/kubernetes/pki/ca.crt

# Read all of ip's output first: `ip | grep -q` would stop reading at the match, and under
# pipefail ip's SIGPIPE would turn the match into "not here".
vip_here() {
  local addrs
  addrs=$(ip -o addr show 2>/dev/null) || true
  [[ $addrs == *" $KAI_VIP/"* ]]
}

# wait_for DESCRIPTION COMMAND...: until COMMAND succeeds, at most KAI_VIP_WAIT_S seconds.
wait_for() {
  local what=$1 deadline
  shift
  deadline=$((SECONDS + KAI_VIP_WAIT_S))
  until "$@"; do
    ((SECONDS < deadline)) || kai_die "$what: not within ${KAI_VIP_WAIT_S} s"
    sleep 0.5
  done
}

vip_gone() { ! vip_here; }

vip_answers() {
  local host=$KAI_VIP code
  [[ $host == *:* ]] && host="[$host]"
  code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 2 \
    --cacert "$CA" "https://$host:$KAI_VIP_PORT/readyz" 2>/dev/null) || return 1
  [[ $code == 200 ]]
}

[[ -f $CA ]] || kai_die "$CA is missing: this node is not an initialised control plane"
KAI_CHANGED=0
kai_remove_file "$MANIFEST"
if kai_changed; then kai_log "kube-vip static pod removed: the kubelet stops it"; fi
if vip_here; then kai_log "this node holds the VIP $KAI_VIP: waiting for kube-vip to release it"; fi
wait_for "the VIP $KAI_VIP to leave this node" vip_gone
wait_for "the API through the VIP https://$KAI_VIP:$KAI_VIP_PORT from another control plane" vip_answers
kai_log "the VIP $KAI_VIP answers from another control plane"
