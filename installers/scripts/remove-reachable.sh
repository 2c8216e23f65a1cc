#!/usr/bin/env bash
# remove_nodes, before anything changes: the node to remove answers over SSH (this script running
# on it is the proof) and says what kubeadm left there. Read-only: no done marker.
# Inputs: KAI_NODE_NAME.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"

if [[ -f /etc/kubernetes/kubelet.conf ]]; then
  what="joined to a cluster"
else
  what="not joined (kubeadm reset will find little to do)"
fi
if [[ -f /etc/kubernetes/manifests/kube-apiserver.yaml ]]; then
  what+=", runs a control plane"
fi
kai_log "$KAI_NODE_NAME (hostname $(hostname 2>/dev/null || echo unknown)) answers: $what"
