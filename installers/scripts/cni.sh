#!/usr/bin/env bash
# Apply the CNI (cilium, calico or flannel) with the admin kubeconfig, server-side.
# A manifest CNI (KAI_CNI_SOURCE=manifest: calico, flannel): KAI_CNI_MANIFEST_URL, checked
# against KAI_CNI_MANIFEST_SHA256 (a pin, may be empty) and the sums at KAI_CNI_MANIFEST_SUMS_URL
# (a mirror's .sha256, may be empty). flannel's manifest hard-codes 10.244.0.0/16: replaced by
# KAI_POD_CIDR. calico picks the pod CIDR up from kubeadm's configuration by itself.
# A chart CNI (KAI_CNI_SOURCE=chart: cilium, the way the Cilium project publishes it): helm from
# KAI_HELM_URL (checked against KAI_HELM_SHA256_<arch> and the published KAI_HELM_SUMS_URL)
# renders the chart KAI_CNI_CHART_URL (checked against KAI_CNI_CHART_SHA256 and the digest in the
# repository's KAI_CNI_CHART_INDEX_URL) with $KAI_FILES_DIR/values.yaml; the result is applied.
# Every file's sha256 goes to $KAI_OUT_DIR/files.sha256 (the run's report).
# Also: KAI_CNI_VERSION, KAI_POD_CIDR, KAI_DOWNLOAD_PROXY.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_CNI:?KAI_CNI is required (cilium|calico|flannel)}"
: "${KAI_CNI_VERSION:?KAI_CNI_VERSION is required}"
: "${KAI_CNI_SOURCE:?KAI_CNI_SOURCE is required (manifest|chart)}"
: "${KAI_POD_CIDR:?KAI_POD_CIDR is required}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"
: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"

case $KAI_CNI in
  cilium | calico | flannel) ;;
  *) kai_die "KAI_CNI must be cilium, calico or flannel, not '$KAI_CNI'" ;;
esac
case $KAI_CNI_SOURCE in
  manifest)
    : "${KAI_CNI_MANIFEST_URL:?KAI_CNI_MANIFEST_URL is required}"
    : "${KAI_CNI_MANIFEST_SHA256?KAI_CNI_MANIFEST_SHA256 is required (may be empty)}"
    : "${KAI_CNI_MANIFEST_SUMS_URL?KAI_CNI_MANIFEST_SUMS_URL is required (may be empty)}"
    ;;
  chart)
    : "${KAI_CNI_CHART:?KAI_CNI_CHART is required}"
    : "${KAI_CNI_CHART_URL:?KAI_CNI_CHART_URL is required}"
    : "${KAI_CNI_CHART_SHA256?KAI_CNI_CHART_SHA256 is required (may be empty)}"
    : "${KAI_CNI_CHART_INDEX_URL:?KAI_CNI_CHART_INDEX_URL is required}"
    : "${KAI_HELM_URL:?KAI_HELM_URL is required}"
    : "${KAI_HELM_SUMS_URL:?KAI_HELM_SUMS_URL is required}"
    [[ -f ${KAI_FILES_DIR:-}/values.yaml ]] || kai_die "values.yaml (the chart values) was not sent"
    ;;
  *) kai_die "KAI_CNI_SOURCE must be manifest or chart, not '$KAI_CNI_SOURCE'" ;;
esac
[[ $KAI_POD_CIDR =~ ^[0-9A-Fa-f:.]+/[0-9]+$ ]] || kai_die "KAI_POD_CIDR '$KAI_POD_CIDR' is not a CIDR"

# render_chart MANIFEST: a pinned, verified helm renders the pinned, verified chart.
render_chart() {
  local manifest=$1 arch helm_pin archive chart
  arch=$(kai_arch)
  helm_pin="KAI_HELM_SHA256_$arch"
  archive="$KAI_WORK/helm.tar.gz"
  kai_fetch_verified "$(kai_url "$KAI_HELM_URL")" "$archive" "${!helm_pin:-}" "$(kai_url "$KAI_HELM_SUMS_URL")"
  tar -xzf "$archive" -C "$KAI_WORK" "linux-$arch/helm" || kai_die "${KAI_HELM_URL##*/} holds no linux-$arch/helm"
  chart="$KAI_WORK/${KAI_CNI_CHART_URL##*/}"
  kai_fetch_verified "$KAI_CNI_CHART_URL" "$chart" "$KAI_CNI_CHART_SHA256" "$KAI_CNI_CHART_INDEX_URL"
  # helm's caches and config in the step's work directory: nothing left behind, no $HOME needed
  HELM_CACHE_HOME="$KAI_WORK/helm/cache" HELM_CONFIG_HOME="$KAI_WORK/helm/config" \
    HELM_DATA_HOME="$KAI_WORK/helm/data" \
    "$KAI_WORK/linux-$arch/helm" template "$KAI_CNI_CHART" "$chart" --namespace kube-system \
    --values "$KAI_FILES_DIR/values.yaml" >"$manifest" ||
    kai_die "helm template of ${KAI_CNI_CHART_URL##*/} failed (its error is above)"
  kai_report_file "$manifest" "$KAI_CNI_CHART-$KAI_CNI_VERSION-rendered.yaml" "helm template" rendered
}

kai_begin

manifest="$KAI_WORK/cni-$KAI_CNI.yaml"
if [[ $KAI_CNI_SOURCE == chart ]]; then
  render_chart "$manifest"
else
  kai_fetch_verified "$KAI_CNI_MANIFEST_URL" "$manifest" "$KAI_CNI_MANIFEST_SHA256" "$KAI_CNI_MANIFEST_SUMS_URL"
fi

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
