#!/usr/bin/env bash
# Apply local-path-provisioner and kai's default StorageClass (storageclass.yaml).
# Inputs: KAI_LOCAL_PATH_URL, KAI_LOCAL_PATH_SHA256 (may be empty), KAI_DOWNLOAD_PROXY.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_LOCAL_PATH_URL:?KAI_LOCAL_PATH_URL is required}"
: "${KAI_LOCAL_PATH_SHA256?KAI_LOCAL_PATH_SHA256 is required (may be empty)}"
: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
: "${KAI_WORK:?KAI_WORK is required (set by kai-exec.sh)}"

[[ -f $KAI_FILES_DIR/storageclass.yaml ]] || kai_die "input file storageclass.yaml is missing"

kai_begin

manifest="$KAI_WORK/local-path-storage.yaml"
kai_fetch_manifest "$KAI_LOCAL_PATH_URL" "$KAI_LOCAL_PATH_SHA256" "$manifest"
kai_log "applying local-path-provisioner"
kai_kubectl_apply "$manifest"
kai_log "applying the default StorageClass"
kai_kubectl_apply "$KAI_FILES_DIR/storageclass.yaml"
kai_done
