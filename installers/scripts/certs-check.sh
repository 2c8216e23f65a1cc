#!/usr/bin/env bash
# How long every kubeadm-managed certificate of this control plane has left: `kubeadm certs
# check-expiration -o json` (kubeadm's CertificateExpirationInfo, output.kubeadm.k8s.io/v1alpha3:
# the certificates — API server, kubelet client, front-proxy, etcd server/peer/healthcheck, the
# kubeconfigs' client certificates — and the CAs) into $KAI_OUT_DIR/expiration.json; the
# controller judges it (installers/certs.py). Read-only: no done marker.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"

[[ -f /etc/kubernetes/pki/ca.crt && -f /etc/kubernetes/manifests/kube-apiserver.yaml ]] ||
  kai_die "this node is not a kubeadm control plane (no /etc/kubernetes/pki/ca.crt or kube-apiserver manifest)"
command -v kubeadm >/dev/null 2>&1 || kai_die "kubeadm is not installed"

mkdir -p "$KAI_OUT_DIR"
# stdout is the JSON document alone; kubeadm's notes and warnings go to stderr, shown on failure
if ! kubeadm certs check-expiration -o json >"$KAI_OUT_DIR/expiration.json" 2>"$KAI_WORK/stderr"; then
  cat "$KAI_WORK/stderr" >&2
  kai_die "kubeadm certs check-expiration failed (its output is above)"
fi
[[ -s $KAI_OUT_DIR/expiration.json ]] || kai_die "kubeadm certs check-expiration printed nothing"
kai_log "kubeadm certs check-expiration: $(grep -c '"name"' "$KAI_OUT_DIR/expiration.json") certificates and CAs read"
