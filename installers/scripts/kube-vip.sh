#!/usr/bin/env bash
# Install the kube-vip static pod (/etc/kubernetes/manifests/kube-vip.yaml).
#   pre-init:  first control plane before `kubeadm init`; the rendered file mounts
#              super-admin.conf, because admin.conf gets its rights only late in init (kube-vip#684).
#   post-init: first control plane after init: mount admin.conf again.
#   join:      joining control planes, after `kubeadm join --control-plane` wrote admin.conf.
# kubelet notices the changed manifest by itself; nothing is restarted.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_KUBE_VIP_PHASE:?KAI_KUBE_VIP_PHASE is required (pre-init|post-init|join)}"
: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"

MANIFEST=/etc/kubernetes/manifests/kube-vip.yaml
SOURCE="$KAI_FILES_DIR/kube-vip.yaml"

case $KAI_KUBE_VIP_PHASE in
  pre-init | post-init | join) ;;
  *) kai_die "KAI_KUBE_VIP_PHASE must be pre-init, post-init or join, not '$KAI_KUBE_VIP_PHASE'" ;;
esac
[[ -f $SOURCE ]] || kai_die "input file kube-vip.yaml is missing"

kai_begin

content=""
IFS= read -r -d '' content <"$SOURCE" || true
if [[ $KAI_KUBE_VIP_PHASE != pre-init ]]; then
  [[ -f /etc/kubernetes/admin.conf ]] ||
    kai_die "kube-vip $KAI_KUBE_VIP_PHASE needs /etc/kubernetes/admin.conf (run it after kubeadm init/join)"
  # super-admin.conf exists only on the first control plane and only for init's sake.
  content=${content//"path: /etc/kubernetes/super-admin.conf"/"path: /etc/kubernetes/admin.conf"}
fi

mkdir -p /etc/kubernetes/manifests
KAI_CHANGED=0
kai_write_file "$MANIFEST" 0600 < <(printf '%s' "$content")
if kai_changed; then
  kai_log "kube-vip manifest installed ($KAI_KUBE_VIP_PHASE)"
else
  kai_log "kube-vip manifest already up to date ($KAI_KUBE_VIP_PHASE)"
fi
kai_done
