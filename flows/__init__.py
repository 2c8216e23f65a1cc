"""One Prefect flow per mode: `flows/<mode>.py`, function `<mode>` (the table: installers/modes.py).

MODES is what `kai serve` deploys; `GET /modes` and the REST API read the table itself, so they
need not import the flows.
"""

import importlib

from installers import modes


def flow_of(mode: str):
    """The Prefect flow of a mode, loaded from its entrypoint in the mode table."""
    path, _, name = modes.get(mode).flow.partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


MODES = {name: flow_of(name) for name in modes.names()}
