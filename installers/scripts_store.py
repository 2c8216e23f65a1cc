"""The node scripts shipped inside the package (installers/scripts/), read once."""

from __future__ import annotations

from functools import cache
from pathlib import Path

SCRIPTS_DIR = Path(__file__).parent / "scripts"


@cache
def script_text(name: str) -> str:
    path = SCRIPTS_DIR / name
    if path.parent != SCRIPTS_DIR or not path.is_file():
        raise FileNotFoundError(f"no node script named {name!r} in {SCRIPTS_DIR}")
    return path.read_text()


def lib_text() -> str:
    return script_text("lib.sh")
