#!/usr/bin/env bash
# Kill every kai step still running on this host (after a cancelled or crashed run).
# A step is recognised by KAI_WORK in its environment (kai-exec gives it to the step and
# everything the step starts); our own KAI_WORK is spared. Prints how many processes were killed.
# With KAI_LOCK_RUN (the run being cleaned up after), a host whose node lock another run holds is
# left alone: the steps running there are that run's, not leftovers (lib.sh's node-lock block).
set -euo pipefail
# shellcheck source=lib.sh
KAI_LOCK_ACTION=check . "${0%/*}/lib.sh" # check: sourcing must not take the lock

if [[ -n ${KAI_LOCK_RUN:-} ]]; then
  kai_lock_read "$(kai_lock_file)"
  if [[ -n $_kai_lock_run && $_kai_lock_run != "$KAI_LOCK_RUN" ]]; then
    echo "left alone: the host is held by $(kai_lock_holder)"
    exit 0
  fi
fi

own=${KAI_WORK:?KAI_WORK is required}
victims=()
for environ in /proc/[0-9]*/environ; do
  pid=${environ#/proc/}
  pid=${pid%/environ}
  [[ $pid == "$$" ]] && continue
  # read -d '' splits the NUL-separated environment; a vanished process is skipped
  while IFS= read -r -d '' var; do
    if [[ $var == KAI_WORK=* && $var != "KAI_WORK=$own" ]]; then
      victims+=("$pid")
      break
    fi
  done <"$environ" 2>/dev/null || true
done

if ((${#victims[@]} > 0)); then
  kill -TERM "${victims[@]}" 2>/dev/null || true
  sleep 2
  kill -KILL "${victims[@]}" 2>/dev/null || true
fi
echo "killed ${#victims[@]}"
