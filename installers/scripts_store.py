"""The node scripts shipped inside the package (installers/scripts/), read once.

`add_scripts_dir()` lets a caller add its own directory of step scripts (the benchmarks' synthetic
step); kai's own scripts always win, so nothing can shadow them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

SCRIPTS_DIR = Path(__file__).parent / "scripts"
_extra_dirs: list[Path] = []


def add_scripts_dir(path: str | Path) -> None:
    directory = Path(path).resolve()
    if directory not in _extra_dirs:
        _extra_dirs.append(directory)
        script_text.cache_clear()


@cache
def script_text(name: str) -> str:
    for directory in (SCRIPTS_DIR, *_extra_dirs):
        path = directory / name
        if path.parent == directory and path.is_file():
            return path.read_text()
    raise FileNotFoundError(f"no node script named {name!r} in {SCRIPTS_DIR}")


def lib_text() -> str:
    return script_text("lib.sh")
