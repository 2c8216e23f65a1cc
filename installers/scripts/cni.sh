#!/usr/bin/env bash
# Apply the CNI manifest (cilium, calico or flannel) with the admin kubeconfig.
# Inputs: KAI_CNI, KAI_CNI_VERSION, KAI_CNI_MANIFEST_URL, KAI_CNI_MANIFEST_SHA256 (may be empty),
# KAI_POD_CIDR, KAI_DOWNLOAD_PROXY. flannel's manifest hard-codes 10.244.0.0/16: replaced by
# KAI_POD_CIDR. calico picks the pod CIDR up from kubeadm's configuration by itself.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_CNI:?KAI_CNI is required (cilium|calico|flannel)}"
: "${KAI_CNI_VERSION:?KAI_CNI_VERSION is required}"
: "${KAI_CNI_MANIFEST_URL:?KAI_CNI_MANIFEST_URL is required}"
: "${KAI_CNI_MANIFEST_SHA256?KAI_CNI_MANIFEST_SHA256 is required (may be empty)}"
: "${KAI_POD_CIDR:?KAI_POD_CIDR is required}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"

case $KAI_CNI in
  cilium | calico | flannel) ;;
  *) kai_die "KAI_CNI must be cilium, calico or flannel, not '$KAI_CNI'" ;;
esac
[[ $KAI_POD_CIDR =~ ^[0-9A-Fa-f:.]+/[0-9]+$ ]] || kai_die "KAI_POD_CIDR '$KAI_POD_CIDR' is not a CIDR"

kai_begin

manifest="$KAI_WORK/cni-$KAI_CNI.yaml"
kai_fetch_manifest "$KAI_CNI_MANIFEST_URL" "$KAI_CNI_MANIFEST_SHA256" "$manifest"

if [[ $KAI_CNI == flannel ]]; then
  default='"Network": "10.244.0.0/16"'
  content=""
  IFS= read -r -d '' content <"$manifest" || true
  if [[ $content != *"$default"* ]]; then
    # A silent no-op here would leave flannel on a CIDR kubeadm does not use.
    [[ $KAI_POD_CIDR == 10.244.0.0/16 ]] ||
      kai_die "flannel manifest has no '$default' line to set the pod CIDR $KAI_POD_CIDR in"
  else
    content=${content//"$default"/"\"Network\": \"$KAI_POD_CIDR\""}
    printf '%s' "$content" >"$manifest"
    kai_log "flannel network set to $KAI_POD_CIDR"
  fi
fi

kai_log "applying $KAI_CNI $KAI_CNI_VERSION"
kai_kubectl_apply "$manifest"
kai_done
