#!/usr/bin/env bash
# Rewrite only kai's block in /etc/hosts (remove_nodes: the remaining nodes no longer list the
# removed ones); everything outside the block stays. Idempotent by comparison: no done marker.
# Inputs: file hosts (the block, rendered by kai).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
[[ -f $KAI_FILES_DIR/hosts ]] || kai_die "input file hosts is missing"

kai_write_hosts_block "$KAI_FILES_DIR/hosts"
