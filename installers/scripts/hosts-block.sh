#!/usr/bin/env bash
# Rewrite only kai's block in /etc/hosts (remove_nodes: the remaining nodes no longer list the
# removed ones); everything outside the block stays. Idempotent by comparison: no done marker.
# Inputs: file hosts (the block, rendered by kai).
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

: "${KAI_FILES_DIR:?KAI_FILES_DIR is required (set by kai-exec.sh)}"
[[ -f $KAI_FILES_DIR/hosts ]] || kai_die "input file hosts is missing"

tmp=$(kai_tmp_for /etc/hosts)
kai_render_hosts /etc/hosts "$KAI_FILES_DIR/hosts" >"$tmp"
if [[ -f /etc/hosts ]] && cmp -s "$tmp" /etc/hosts; then
  rm -f "$tmp"
  kai_log "/etc/hosts: kai block up to date"
  exit 0
fi
chmod 0644 "$tmp"
# /etc/hosts is a bind mount in some containers: rename fails there, rewrite it in place.
if ! mv -f "$tmp" /etc/hosts 2>/dev/null; then
  cat "$tmp" >/etc/hosts
  rm -f "$tmp"
fi
kai_log "/etc/hosts: kai block rewritten"
