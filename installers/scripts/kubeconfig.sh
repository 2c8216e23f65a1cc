#!/usr/bin/env bash
# Hand the cluster's admin kubeconfig back to the controller ($KAI_OUT_DIR/admin.conf, never
# printed). Read-only step: no done marker.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_OUT_DIR:?KAI_OUT_DIR is required (set by kai-exec.sh)}"

[[ -f /etc/kubernetes/admin.conf ]] || kai_die "/etc/kubernetes/admin.conf is missing: this node is not an initialised control plane"
mkdir -p "$KAI_OUT_DIR"
kai_install_file /etc/kubernetes/admin.conf "$KAI_OUT_DIR/admin.conf" 0600
kai_log "admin.conf collected"
