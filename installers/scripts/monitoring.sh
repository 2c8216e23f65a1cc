#!/usr/bin/env bash
# Monitoring (spec: addons.monitoring) with the admin kubeconfig, server-side, in the order the
# projects document: metrics-server's release manifest; then kube-prometheus's release — its
# manifests/setup (the namespace and the CustomResourceDefinitions), a wait until every CRD is
# Established, then manifests/ (Prometheus, Alertmanager and the other custom objects, the
# operator, node-exporter, kube-state-metrics, Grafana). Files whose name starts with
# KAI_KUBE_PROMETHEUS_SKIP (prometheus-adapter: it would serve metrics.k8s.io beside
# metrics-server) are left out.
# Inputs: KAI_METRICS_SERVER_URL, KAI_METRICS_SERVER_SHA256 (a pin, may be empty),
# KAI_METRICS_SERVER_SUMS_URL (a mirror's .sha256, may be empty), the same three for
# KAI_KUBE_PROMETHEUS_* (a .tar.gz of the release), KAI_KUBE_PROMETHEUS_SKIP, KAI_DOWNLOAD_PROXY,
# KAI_METRICS_SERVER_INSECURE_TLS (1: metrics-server gets --kubelet-insecure-tls, added to its
# container's args after the verified download — kubeadm's kubelets serve self-signed certificates,
# which metrics-server refuses, and then never becomes Ready; 0: leave the manifest as released).
# Every file's sha256 goes to $KAI_OUT_DIR/files.sha256 (the run's report).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_METRICS_SERVER_URL:?KAI_METRICS_SERVER_URL is required}"
: "${KAI_METRICS_SERVER_SHA256?KAI_METRICS_SERVER_SHA256 is required (may be empty)}"
: "${KAI_METRICS_SERVER_SUMS_URL?KAI_METRICS_SERVER_SUMS_URL is required (may be empty)}"
: "${KAI_METRICS_SERVER_INSECURE_TLS:?KAI_METRICS_SERVER_INSECURE_TLS is required (0|1)}"
case $KAI_METRICS_SERVER_INSECURE_TLS in 0 | 1) ;; *) kai_die "KAI_METRICS_SERVER_INSECURE_TLS must be 0 or 1, not '$KAI_METRICS_SERVER_INSECURE_TLS'" ;; esac
: "${KAI_KUBE_PROMETHEUS_URL:?KAI_KUBE_PROMETHEUS_URL is required}"
: "${KAI_KUBE_PROMETHEUS_SHA256?KAI_KUBE_PROMETHEUS_SHA256 is required (may be empty)}"
: "${KAI_KUBE_PROMETHEUS_SUMS_URL?KAI_KUBE_PROMETHEUS_SUMS_URL is required (may be empty)}"
: "${KAI_KUBE_PROMETHEUS_SKIP?KAI_KUBE_PROMETHEUS_SKIP is required (may be empty)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"
: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"

CRD_WAIT=180s

# join_yaml OUT FILE...: one multi-document file, in the given order.
join_yaml() {
  local out=$1 f
  shift
  (($#)) || kai_die "no manifests to join into ${out##*/}"
  for f in "$@"; do
    printf -- '---\n'
    cat "$f"
    printf '\n'
  done >"$out"
}

# kubelet_insecure_tls FILE: add --kubelet-insecure-tls to metrics-server's container args, at the
# indentation of its first flag (every release's args start with --cert-dir or --secure-port).
kubelet_insecure_tls() {
  local file=$1
  if grep -q -- '--kubelet-insecure-tls' "$file"; then
    kai_log "metrics-server already has --kubelet-insecure-tls"
    return 0
  fi
  awk 'done != 1 && match($0, /^[[:space:]]*- --(cert-dir|secure-port)=/) {
         print; sub(/- --.*/, "- --kubelet-insecure-tls"); print; done = 1; next }
       { print }
       END { exit done == 1 ? 0 : 3 }' "$file" >"$file.new" ||
    kai_die "${KAI_METRICS_SERVER_URL##*/}: no metrics-server args (--cert-dir or --secure-port) to add --kubelet-insecure-tls to"
  mv "$file.new" "$file"
  kai_log "metrics-server: added --kubelet-insecure-tls (the kubelets' serving certificates are self-signed)"
}

kai_begin

metrics_server="$KAI_WORK/metrics-server.yaml"
kai_fetch_verified "$KAI_METRICS_SERVER_URL" "$metrics_server" "$KAI_METRICS_SERVER_SHA256" \
  "$KAI_METRICS_SERVER_SUMS_URL"
[[ $KAI_METRICS_SERVER_INSECURE_TLS == 0 ]] || kubelet_insecure_tls "$metrics_server"
archive="$KAI_WORK/kube-prometheus.tar.gz"
kai_fetch_verified "$KAI_KUBE_PROMETHEUS_URL" "$archive" "$KAI_KUBE_PROMETHEUS_SHA256" \
  "$KAI_KUBE_PROMETHEUS_SUMS_URL"
mkdir -p "$KAI_WORK/kube-prometheus"
tar -xzf "$archive" -C "$KAI_WORK/kube-prometheus" || kai_die "${KAI_KUBE_PROMETHEUS_URL##*/} is not a .tar.gz"
# the release archive holds one top directory (kube-prometheus-<version>/)
dirs=("$KAI_WORK"/kube-prometheus/*/manifests)
[[ ${#dirs[@]} == 1 && -d ${dirs[0]}/setup ]] ||
  kai_die "${KAI_KUBE_PROMETHEUS_URL##*/} has no <top>/manifests/setup directory"
manifests=${dirs[0]}

setup="$KAI_WORK/kube-prometheus-setup.yaml"
join_yaml "$setup" "$manifests"/setup/*.yaml
rest=()
for f in "$manifests"/*.yaml; do
  if [[ -n $KAI_KUBE_PROMETHEUS_SKIP && ${f##*/} == "$KAI_KUBE_PROMETHEUS_SKIP"* ]]; then
    kai_log "left out ${f##*/} (metrics-server serves metrics.k8s.io)"
    continue
  fi
  rest+=("$f")
done
stack="$KAI_WORK/kube-prometheus-stack.yaml"
join_yaml "$stack" "${rest[@]}"

kai_log "applying metrics-server"
kai_kubectl_apply "$metrics_server"
kai_log "applying kube-prometheus setup (namespace, CustomResourceDefinitions)"
kai_kubectl_apply "$setup"
# custom objects of a CRD that is not Established yet are refused ("no matches for kind")
kubectl --kubeconfig /etc/kubernetes/admin.conf wait --for condition=Established --all \
  CustomResourceDefinition --timeout="$CRD_WAIT" ||
  kai_die "the CustomResourceDefinitions were not Established within $CRD_WAIT"
kai_log "applying kube-prometheus (${#rest[@]} files)"
kai_kubectl_apply "$stack"
kai_done
