"""Orchestration benchmarks: kai's flow machinery vs a plain paramiko floor vs Ansible (issue 6)."""
