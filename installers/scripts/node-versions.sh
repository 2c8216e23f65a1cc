#!/usr/bin/env bash
# Read-only, for `health`'s drift report: the versions of the Kubernetes binaries installed on this
# node — kubeadm (the API's Node object does not carry it) and the kubelet binary on disk (the
# Node object has the running kubelet's: they differ when a package changed and the kubelet was
# not restarted). Output: $KAI_OUT_DIR/versions.env (key=value lines, "unknown" when a binary is
# missing or answers no version); the controller compares them with the spec (tasks/versions.py).
# No done-marker.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"

mkdir -p "$KAI_OUT_DIR"
{
  echo "kubeadm_version=$(kai_version_of kubeadm version -o short)"
  echo "kubelet_version=$(kai_version_of kubelet --version)"
} >"$KAI_OUT_DIR/versions.env"
kai_log "installed: $(tr '\n' ' ' <"$KAI_OUT_DIR/versions.env")"
