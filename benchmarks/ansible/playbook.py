"""Writes the Ansible side of the benchmark: inventory, ansible.cfg (from ansible.cfg.tmpl), playbook."""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).parent
MODULES = ("command", "raw")


def write_inventory(path: Path, hosts: list[tuple[str, str]], key_file: str) -> None:
    lines = ["[bench]"]
    lines += [f"{name} ansible_host={address}" for name, address in hosts]
    lines += ["", "[bench:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={key_file}"]
    path.write_text("\n".join(lines) + "\n")


def write_config(path: Path, *, inventory: Path, forks: int, strategy: str, known_hosts: str,
                 workdir: Path, control_dir: Path) -> None:
    text = (HERE / "ansible.cfg.tmpl").read_text().format(
        inventory=inventory, forks=forks, strategy=strategy, known_hosts=known_hosts,
        workdir=workdir, control_dir=control_dir)
    path.write_text(text)


def write_playbook(path: Path, steps: int, duration: float, module: str) -> None:
    """`steps` tasks, each `sleep duration` on every host through `module` (command or raw)."""
    if module not in MODULES:
        raise ValueError(f"module: must be one of {MODULES}, got {module!r}")
    tasks = [{"name": f"step-{i:02d}", f"ansible.builtin.{module}": f"sleep {duration:g}"}
             for i in range(1, steps + 1)]
    play = [{"name": "bench", "hosts": "bench", "gather_facts": False, "tasks": tasks}]
    path.write_text(yaml.safe_dump(play, sort_keys=False))
