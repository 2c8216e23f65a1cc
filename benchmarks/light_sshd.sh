#!/bin/sh
# sshd for the benchmark's light hosts, started by tests/hosts/light.py inside the host's network
# namespace (`ip netns exec` gives it a private mount namespace). Light hosts are the machine
# itself, so every SSH session would run root's ~/.bashrc — here it runs `pyenv init`, which
# forks a dozen processes and serialises on pyenv's rehash lock: seconds per command with 50
# concurrent sessions, and step timeouts at 50 hosts. A clean host has no such .bashrc; mask it
# with an empty file, in this namespace only.
set -e
for rc in /root/.bashrc /root/.profile; do
  if [ -f "$rc" ]; then
    mount --bind /dev/null "$rc"
  fi
done
exec /usr/sbin/sshd "$@"
