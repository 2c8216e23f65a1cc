"""One Prefect flow per mode. MODES is what the control surface serves and `GET /modes` lists."""

from flows.add_nodes import add_nodes
from flows.all_in_one import all_in_one
from flows.ha import ha
from flows.health import health
from flows.preflight import preflight
from flows.rebuild import rebuild
from flows.reset import reset

MODES = {
    "all_in_one": all_in_one,
    "ha": ha,
    "add_nodes": add_nodes,
    "reset": reset,
    "rebuild": rebuild,
    "preflight": preflight,
    "health": health,
}
