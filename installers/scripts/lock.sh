#!/usr/bin/env bash
# Take/refresh (KAI_LOCK_ACTION=hold) or release (release) this host's kai node lock, nothing
# else: the controller's lease renewal and the release at a run's end (lib.sh's node-lock block).
# Inputs: KAI_LOCK_ACTION, KAI_LOCK_RUN, KAI_LOCK_RUN_NAME, KAI_LOCK_CONTROLLER,
# KAI_LOCK_CONTROLLER_NAME, KAI_LOCK_LEASE_S.
set -euo pipefail
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"

kai_node_lock "${KAI_LOCK_ACTION:?KAI_LOCK_ACTION is required (hold or release)}"
