#!/usr/bin/env bash
# `kubeadm init` on the first control plane with the rendered kubeadm.yaml (v1beta4).
# Inputs: KAI_NODE_NAME, KAI_UPLOAD_CERTS (0|1); file kubeadm.yaml.
# kubeadm's output is streamed (tokens and the certificate key are not printed: --skip-*-print).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"
: "${KAI_UPLOAD_CERTS:?KAI_UPLOAD_CERTS is required (0|1)}"
: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"

CONFIG="$KAI_FILES_DIR/kubeadm.yaml"
[[ -f $CONFIG ]] || kai_die "input file kubeadm.yaml is missing"
case $KAI_UPLOAD_CERTS in 0 | 1) ;; *) kai_die "KAI_UPLOAD_CERTS must be 0 or 1, not '$KAI_UPLOAD_CERTS'" ;; esac

kai_begin # exits here when this node was initialised by kai with the same inputs

if [[ -f /etc/kubernetes/admin.conf ]]; then
  # Either an init that was interrupted, an init with other inputs, or a control plane set up
  # outside kai. kubeadm init cannot run over it, and guessing which case it is could destroy a
  # working cluster: say what to do instead.
  if [[ -f $(kai_marker_path) ]]; then
    kai_die "$KAI_NODE_NAME was initialised by kai with different inputs; kubeadm init cannot change a running control plane: rebuild the cluster (or reset this node) to apply them"
  fi
  kai_die "/etc/kubernetes/admin.conf exists on $KAI_NODE_NAME but kai has no record of a completed init (interrupted init, or a control plane made outside kai): reset this node first"
fi

args=(init --config "$CONFIG")
if [[ $KAI_UPLOAD_CERTS == 1 ]]; then args+=(--upload-certs); fi
args+=(--skip-token-print --skip-certificate-key-print)

kai_log "running kubeadm ${args[*]}"
if ! kubeadm "${args[@]}" 2>&1; then
  kai_log "kubelet's last log lines:"
  journalctl -u kubelet -n 50 --no-pager 2>&1 || true
  kai_die "kubeadm init failed on $KAI_NODE_NAME (its output is above)"
fi

# root's kubectl on the node, as kubeadm suggests (reset.sh removes it).
home=${HOME:-/root}
mkdir -p "$home/.kube"
chmod 0700 "$home/.kube"
kai_install_file /etc/kubernetes/admin.conf "$home/.kube/config" 0600
kai_done
