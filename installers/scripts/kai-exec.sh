#!/usr/bin/env bash
# kai-exec.sh — the node-side bootstrap of kai's SSH runner (docs/architecture.md §4).
#
# The runner starts it as `[sudo … --] bash -c '<this file>'`; everything else arrives on stdin:
#   any lines before the first KAI-PART are skipped (a sudo password line sudo did not need)
#   KAI-PART <name> <bytes>\n<bytes>     repeated: env, lib.sh, the step script, files/<name>
#                                        (env is evaluated from memory, never written to disk)
#   KAI-RUN\n
# After KAI-RUN stdin stays open: a line KAI-CANCEL, or EOF (cancel, timeout, the controller or
# the connection dying), kills the step's whole process group (TERM, up to 5 s, KILL).
# Results: each file in $KAI_OUT_DIR as `\x1ekai-out <name> <base64>`, then `\x1ekai-exit <code>`.
# The work directory is removed whatever happens.
set -euo pipefail
umask 077
export LC_ALL=C

printf '\036kai-start\n'

_kx_work=$(mktemp -d "${TMPDIR:-/tmp}/kai.XXXXXXXXXX")
_kx_pgid=""
_kx_watcher=""
_kx_cancel_flag="$_kx_work/.cancelled"

_kx_group_alive() {
  [[ -n $_kx_pgid ]] && kill -0 -- "-$_kx_pgid" 2>/dev/null
}

# TERM the step's process group, give it up to 5 s, then KILL what is left.
_kx_kill_group() {
  _kx_group_alive || return 0
  kill -TERM -- "-$_kx_pgid" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do
    _kx_group_alive || return 0
    sleep 0.1
  done
  kill -KILL -- "-$_kx_pgid" 2>/dev/null || true
}

# Processes that left the group (setsid, double fork) still carry KAI_WORK in their environment.
# Only the step gets KAI_WORK (this shell never exports it), so the match cannot hit kai-exec itself.
_kx_kill_stragglers() {
  local f pid
  while IFS= read -r f; do
    pid=${f#/proc/}
    pid=${pid%/environ}
    kill -KILL "$pid" 2>/dev/null || true
  done < <(grep -lzxF "KAI_WORK=$_kx_work" /proc/[0-9]*/environ 2>/dev/null || true)
}

# shellcheck disable=SC2317  # called from the EXIT trap
_kx_cleanup() {
  trap - EXIT
  if [[ -n $_kx_watcher ]]; then
    kill "$_kx_watcher" 2>/dev/null || true
  fi
  if _kx_group_alive; then
    kill -KILL -- "-$_kx_pgid" 2>/dev/null || true
  fi
  case $_kx_work in
    */kai.*) rm -rf -- "$_kx_work" ;;
  esac
}
trap _kx_cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 141' PIPE

_kx_die() {
  printf 'kai-exec: %s\n' "$2" >&2
  exit "$1"
}

# --- read the frame ----------------------------------------------------------------------------
_kx_seen_part=0
_kx_script=""
while :; do
  IFS= read -r _kx_line || _kx_die 97 "stdin ended before KAI-RUN (truncated frame)"
  case $_kx_line in
    KAI-RUN)
      break
      ;;
    "KAI-PART "*)
      _kx_seen_part=1
      [[ $_kx_line =~ ^KAI-PART\ ([A-Za-z0-9._/-]+)\ ([0-9]+)$ ]] ||
        _kx_die 98 "bad part header"
      _kx_name=${BASH_REMATCH[1]}
      _kx_size=${BASH_REMATCH[2]}
      case $_kx_name in
        /* | *..* | */) _kx_die 98 "bad part name: $_kx_name" ;;
      esac
      if [[ $_kx_name == */* ]]; then
        mkdir -p -- "$_kx_work/${_kx_name%/*}"
      elif [[ $_kx_name != env && $_kx_name != lib.sh ]]; then
        [[ -z $_kx_script ]] || _kx_die 98 "more than one step script: $_kx_script, $_kx_name"
        _kx_script=$_kx_name
      fi
      if [[ $_kx_name == env ]]; then
        # kept in memory: the secrets in it never touch the disk (text, no NUL: Python checks)
        _kx_env=""
        if ((_kx_size > 0)); then
          IFS= read -r -N "$_kx_size" _kx_env || _kx_die 97 "stdin ended inside the env part"
        fi
        continue
      fi
      # GNU head -c reads no more than it needs from a pipe, so the next header stays on stdin.
      head -c "$_kx_size" >"$_kx_work/$_kx_name"
      ;;
    *)
      # Lines before the first part are padding (e.g. a sudo password line); after it, an error.
      [[ $_kx_seen_part == 0 ]] || _kx_die 98 "unexpected line in frame"
      ;;
  esac
done
[[ -n $_kx_script ]] || _kx_die 96 "no step script in frame"

mkdir -p -- "$_kx_work/files" "$_kx_work/out"
if [[ -n ${_kx_env:-} ]]; then
  set -a
  eval "$_kx_env"
  set +a
  unset _kx_env
fi

# --- run the step in its own process group, stdin from /dev/null ------------------------------
KAI_WORK=$_kx_work KAI_FILES_DIR=$_kx_work/files KAI_OUT_DIR=$_kx_work/out \
  setsid bash "$_kx_work/$_kx_script" </dev/null &
# Without job control our children are not group leaders, so setsid does not fork: $! leads the group.
_kx_pgid=$!

_kx_watch_stdin() {
  local line
  while IFS= read -r line; do
    [[ $line == KAI-CANCEL ]] && break
  done
  : >"$_kx_cancel_flag"
  _kx_kill_group
  _kx_kill_stragglers
}
_kx_watch_stdin 0<&0 &
_kx_watcher=$!

_kx_rc=0
wait "$_kx_pgid" || _kx_rc=$?

if [[ -e $_kx_cancel_flag ]]; then
  wait "$_kx_watcher" 2>/dev/null || true
else
  kill "$_kx_watcher" 2>/dev/null || true
  wait "$_kx_watcher" 2>/dev/null || true
  # The step is over: whatever it left running in its group would hold the channel open.
  _kx_kill_group
fi
_kx_watcher=""

# --- hand back the results ---------------------------------------------------------------------
shopt -s nullglob globstar dotglob
for _kx_f in "$_kx_work"/out/**; do
  [[ -f $_kx_f && ! -L $_kx_f ]] || continue
  _kx_name=${_kx_f#"$_kx_work/out/"}
  if [[ $_kx_name =~ ^[A-Za-z0-9._/-]+$ ]]; then
    printf '\036kai-out %s %s\n' "$_kx_name" "$(base64 -w0 <"$_kx_f")"
  else
    printf 'kai-exec: out file with an unsafe name skipped\n' >&2
  fi
done
printf '\036kai-exit %d\n' "$_kx_rc"
exit "$_kx_rc"
