#!/usr/bin/env bash
# `kubeadm join --config` with the rendered kubeadm-join.yaml, whose placeholders
# (__KAI_JOIN_TOKEN__, __KAI_CA_CERT_HASH__, __KAI_CERTIFICATE_KEY__) are filled here from the
# secret environment variables by bash builtins only: secrets never reach a command line.
# Inputs: KAI_NODE_NAME, KAI_CONTROL_PLANE (0|1); secrets KAI_JOIN_TOKEN, KAI_CA_CERT_HASH,
# KAI_CERTIFICATE_KEY (control planes); file kubeadm-join.yaml.
set -euo pipefail
# Keep the secrets in this shell only: no child process (kubeadm included)
# inherits them in its environment.
export -n KAI_JOIN_TOKEN KAI_CA_CERT_HASH KAI_CERTIFICATE_KEY 2>/dev/null || true
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_NODE_NAME:?KAI_NODE_NAME is required}"
: "${KAI_CONTROL_PLANE:?KAI_CONTROL_PLANE is required (0|1)}"
: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"
: "${KAI_JOIN_TOKEN:?KAI_JOIN_TOKEN is required (secret)}"
: "${KAI_CA_CERT_HASH:?KAI_CA_CERT_HASH is required (secret)}"
case $KAI_CONTROL_PLANE in
  0) ;;
  1) : "${KAI_CERTIFICATE_KEY:?KAI_CERTIFICATE_KEY is required to join a control plane (secret)}" ;;
  *) kai_die "KAI_CONTROL_PLANE must be 0 or 1, not '$KAI_CONTROL_PLANE'" ;;
esac

kai_begin

if [[ -f /etc/kubernetes/kubelet.conf ]]; then
  kai_log "$KAI_NODE_NAME: already joined (/etc/kubernetes/kubelet.conf exists)"
  kai_done
  exit 0
fi

config="$KAI_WORK/kubeadm-join.yaml" # $KAI_WORK is 0700 and deleted after the step
kai_render_secrets "$KAI_FILES_DIR/kubeadm-join.yaml" "$config"

kai_log "running kubeadm join --config kubeadm-join.yaml ($([[ $KAI_CONTROL_PLANE == 1 ]] && echo control plane || echo worker))"
# Output is streamed through a redactor in case kubeadm ever echoes a credential.
if ! kubeadm join --config "$config" 2>&1 |
  kai_redact "$KAI_JOIN_TOKEN" "$KAI_CA_CERT_HASH" "${KAI_CERTIFICATE_KEY:-}"; then
  rm -f "$config"
  kai_log "kubelet's last log lines:"
  journalctl -u kubelet -n 50 --no-pager 2>&1 | kai_redact "$KAI_JOIN_TOKEN" || true
  kai_die "kubeadm join failed on $KAI_NODE_NAME (its output is above)"
fi
rm -f "$config"
kai_done
