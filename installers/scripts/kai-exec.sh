#!/usr/bin/env bash
# kai-exec.sh — the node-side agent of kai's SSH runner (docs/architecture.md §4).
#
# The runner starts it as `[sudo … --] bash -c '<this file>'` and then sends it jobs on stdin, one
# after another, for as long as a run uses the host (one SSH session and one sudo per host and run,
# not per step: that is most of a step's cost on the node). Everything but that constant command
# line arrives on stdin:
#   any lines before the first KAI-PART are skipped (a sudo password line sudo did not need)
#   a job:  KAI-PART <name> <bytes>\n<bytes>   repeated: env, lib.sh, <script>, files/<name>
#           KAI-RUN <script>\n
#     env is evaluated in the job's own process, from memory (its secrets never touch the disk);
#     lib.sh and scripts are kept for later jobs (the runner sends each once per agent);
#     files/ go to the job's $KAI_FILES_DIR.
# While a job runs, a line KAI-CANCEL, or EOF (cancel, timeout, the controller or the connection
# dying), kills the job's whole process group (TERM, up to 5 s, KILL) and what escaped it.
# After a job: each file in $KAI_OUT_DIR as `\x1ekai-out <name> <base64>`, then
# `\x1ekai-exit <code>`: the job's report is complete. Only then the agent tidies up for the next
# job (whatever the job left in $KAI_WORK is removed: one directory serves all the agent's jobs,
# and a job that leaves nothing costs no mkdir or rm) and checks that its directory and the parts
# it keeps are intact.
# Readiness: `\x1ekai-ready` when the agent started, and again after each job once it is tidy.
# The runner sends a job's frame only after reading that line, and reads the channel between jobs
# itself: anything else there (an error of the tidying, an exit) retires the agent, so housekeeping
# never lands in a job's output and no job reaches an agent that cannot take it.
# EOF between jobs ends the agent; its directory is removed when it ends, whatever happens.
set -euo pipefail
umask 077
export LC_ALL=C

_kx_agent=$BASHPID # the agent itself, as opposed to any subshell of it
_kx_root=$(mktemp -d "${TMPDIR:-/tmp}/kai.XXXXXXXXXX")
_kx_work=$_kx_root/work
mkdir -- "$_kx_work" "$_kx_work/files" "$_kx_work/out"
_kx_jobs=0
_kx_pgid=""
_kx_watcher=""
declare -A _kx_kept=() # lib.sh and the scripts this agent keeps for later jobs (as keys)

_kx_group_alive() {
  [[ -n $_kx_pgid ]] && kill -0 -- "-$_kx_pgid" 2>/dev/null
}

# TERM the job's process group, give it up to 5 s, then KILL what is left.
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
# Only the job gets KAI_WORK (this shell never exports it), so the match cannot hit the agent.
_kx_kill_stragglers() {
  local f pid
  while IFS= read -r f; do
    pid=${f#/proc/}
    pid=${pid%/environ}
    kill -KILL "$pid" 2>/dev/null || true
  done < <(grep -lzxF "KAI_WORK=$_kx_work" /proc/[0-9]*/environ 2>/dev/null || true)
}

# A subshell of the agent (the stdin watcher, a job before its exec) that receives a signal in
# the instant between its fork and its reset of the traps runs the agent's traps: the TERM that
# ends the watcher after a short job did, and removed the live agent's directory (found with
# strace under CPU load). Only the agent itself cleans up.
# shellcheck disable=SC2317  # called from the EXIT trap
_kx_cleanup() {
  trap - EXIT
  [[ $BASHPID == "$_kx_agent" ]] || return 0
  if [[ -n $_kx_watcher ]]; then
    kill -KILL "$_kx_watcher" 2>/dev/null || true
  fi
  if _kx_group_alive; then
    kill -KILL -- "-$_kx_pgid" 2>/dev/null || true
  fi
  case $_kx_root in
    */kai.*) rm -rf -- "$_kx_root" ;;
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

# --- read one job's frame; EOF before it began sets _kx_eof (the runner is done with us) -------
# (called as a plain statement, never in a condition: errexit must stay in force inside)
_kx_read_job() {
  local line name size in_frame=0
  _kx_env=""
  _kx_script=""
  while :; do
    if ! IFS= read -r line; then
      if [[ $in_frame == 0 && -z $line ]]; then
        _kx_eof=1
        return 0
      fi
      _kx_die 97 "stdin ended before KAI-RUN (truncated frame)"
    fi
    case $line in
      "KAI-PART "*)
        if [[ $in_frame == 0 ]]; then
          in_frame=1
          _kx_jobs=$((_kx_jobs + 1))
        fi
        [[ $line =~ ^KAI-PART\ ([A-Za-z0-9._/-]+)\ ([0-9]+)$ ]] || _kx_die 98 "bad part header"
        name=${BASH_REMATCH[1]}
        size=${BASH_REMATCH[2]}
        case $name in
          env)
            # kept in memory: the secrets in it never touch the disk (text, no NUL: Python checks)
            _kx_env=""
            if ((size > 0)); then
              IFS= read -r -N "$size" _kx_env || _kx_die 97 "stdin ended inside the env part"
            fi
            continue
            ;;
          *..* | */) _kx_die 98 "bad part name: $name" ;;
          files/*/*) mkdir -p -- "$_kx_work/${name%/*}" ;;
          files/*) ;;
          */*) _kx_die 98 "bad part name: $name" ;;
        esac
        # lib.sh and scripts live beside each other in the agent's directory (scripts source
        # "${0%/*}/lib.sh"); GNU head -c reads no more than it needs from a pipe.
        if [[ $name == files/* ]]; then
          head -c "$size" >"$_kx_work/$name"
        else
          head -c "$size" >"$_kx_root/$name"
          _kx_kept[$name]=1
        fi
        ;;
      "KAI-RUN "*)
        [[ $in_frame == 1 ]] || _kx_die 98 "KAI-RUN without parts"
        _kx_script=${line#KAI-RUN }
        [[ $_kx_script =~ ^[A-Za-z0-9._-]+$ && $_kx_script != lib.sh && -f $_kx_root/$_kx_script ]] ||
          _kx_die 96 "no step script '$_kx_script' in frame"
        return 0
        ;;
      KAI-CANCEL)
        # a cancel that crossed the end of the job it was meant for
        [[ $in_frame == 0 ]] || _kx_die 98 "unexpected line in frame"
        ;;
      *)
        # Lines before the first job are padding (e.g. a sudo password line); later, an error.
        [[ $_kx_jobs == 0 && $in_frame == 0 ]] || _kx_die 98 "unexpected line in frame"
        ;;
    esac
  done
}

_kx_watch_stdin() {
  local line
  while IFS= read -r line; do
    [[ $line == KAI-CANCEL ]] && break
  done
  : >"$_kx_root/cancelled.$_kx_jobs"
  _kx_kill_group
  _kx_kill_stragglers
}

# --- run it in its own process group, stdin from /dev/null, stderr merged into stdout ----------
# (one stream keeps the job's lines in order, and all of them before its kai-exit marker)
_kx_run_job() {
  printf '\036kai-start\n'
  set -m # job control: the background job leads its own process group (no setsid to exec)
  (
    if [[ -n $_kx_env ]]; then
      set -a
      eval "$_kx_env"
      set +a
    fi
    export KAI_WORK=$_kx_work KAI_FILES_DIR=$_kx_work/files KAI_OUT_DIR=$_kx_work/out
    exec bash "$_kx_root/$_kx_script"
  ) </dev/null 2>&1 &
  _kx_pgid=$!
  set +m
  _kx_env=""

  _kx_watch_stdin 0<&0 &
  _kx_watcher=$!

  local rc=0
  wait "$_kx_pgid" || rc=$?

  if [[ -e $_kx_root/cancelled.$_kx_jobs ]]; then
    wait "$_kx_watcher" 2>/dev/null || true
  else
    # KILL, not TERM: a signal the subshell could trap might reach it before it reset the
    # agent's traps (see _kx_cleanup); it holds nothing to clean up.
    kill -KILL "$_kx_watcher" 2>/dev/null || true
    wait "$_kx_watcher" 2>/dev/null || true
    # The job is over: whatever it left running in its group must not outlive it.
    _kx_kill_group
  fi
  _kx_watcher=""
  _kx_pgid=""

  # --- hand back the results -------------------------------------------------------------------
  local f name
  shopt -s nullglob globstar dotglob
  for f in "$_kx_work"/out/**; do
    [[ -f $f && ! -L $f ]] || continue
    name=${f#"$_kx_work/out/"}
    if [[ $name =~ ^[A-Za-z0-9._/-]+$ ]]; then
      printf '\036kai-out %s %s\n' "$name" "$(base64 -w0 <"$f")"
    else
      printf 'kai-exec: out file with an unsafe name skipped\n'
    fi
  done
  shopt -u nullglob globstar dotglob
  printf '\036kai-exit %d\n' "$rc"
}

# Between jobs: tidy up, check what the next job relies on, and say so. Whatever fails here is
# reported on stderr before any readiness line, which makes the runner retire this agent.
_kx_get_ready() {
  _kx_empty_work || _kx_die 95 "could not empty $_kx_work for the next job"
  local name
  for name in "${!_kx_kept[@]}"; do
    [[ -f $_kx_root/$name ]] || _kx_die 95 "kept part $name vanished from $_kx_root"
  done
  printf '\036kai-ready\n'
}

# Leave $KAI_WORK as the next job expects it: nothing but empty files/ and out/.
_kx_empty_work() {
  local w=$_kx_work
  shopt -s nullglob dotglob
  local left=("$w"/* "$w"/files/* "$w"/out/*) # everything there is
  shopt -u nullglob dotglob
  if ((${#left[@]} == 2)) && [[ ${left[0]} == "$w/files" && ${left[1]} == "$w/out" &&
    -d $w/files && ! -L $w/files && -d $w/out && ! -L $w/out ]]; then
    return 0
  fi
  # (called in a condition, where errexit is off: each failure is returned explicitly)
  rm -rf -- "$w" || return 1
  mkdir -- "$w" "$w/files" "$w/out" || return 1
}

_kx_eof=0
printf '\036kai-ready\n'
while :; do
  _kx_read_job
  [[ $_kx_eof == 0 ]] || break
  _kx_run_job
  _kx_get_ready
done
exit 0
