#!/usr/bin/env bash
# Benchmark-only step script: the synthetic plan's work on every host, run through kai-exec.sh
# like any node script. No done-marker: light hosts share the machine's filesystem, and a marker
# would turn every later run into a no-op.
set -euo pipefail
# shellcheck source=../../installers/scripts/lib.sh
. "${0%/*}/lib.sh"
: "${KAI_BENCH_SLEEP:?KAI_BENCH_SLEEP is required}"
sleep "$KAI_BENCH_SLEEP"
kai_log "bench-step ${KAI_STEP} slept ${KAI_BENCH_SLEEP}s"
