"""Every problem of a spec at once: pydantic's errors as `path: message` lines, then the rules.

Pydantic stops at the first structural error of a value; `collect_problems` removes each
offending value and validates again, so that one answer lists every structural problem and the
semantic rules (spec_rules.py) still run on what remains. `load_spec` (spec.py) raises them all.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from installers.spec import ClusterSpec
from installers.spec_loading import SpecError, check_data_size, one_line, parse_yaml, read_spec_file, shown
from installers.spec_rules import check_rules
_UNION_TAGS = {"node", "kube_vip", "load_balancer"}


def _clean_loc(loc: tuple) -> list:
    out: list = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "control_plane_endpoint" and part in _UNION_TAGS:
            continue  # pydantic adds the discriminator tag to the path
        out.append(part)
    return out


def format_path(loc: list | tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            text += " (key)"
        elif isinstance(part, str) and part.replace("-", "_").isidentifier() and len(part) <= 64:
            text += f".{part}" if text else part
        else:  # a mapping key given by the user: quoted, escaped, shortened
            text += f"[{shown(part)}]"
    return text or "<spec>"


def _model_at(loc: list) -> type[BaseModel] | None:
    """The model class that owns the last element of loc, to suggest field names."""
    model: Any = ClusterSpec
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        model = None
        for cand in _walk_types(ann):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
    return model


def _walk_types(ann: Any):
    yield ann
    for arg in getattr(ann, "__args__", ()) or ():
        yield from _walk_types(arg)


def _format_error(err: dict) -> str:
    loc = _clean_loc(tuple(err.get("loc", ())))
    path = format_path(loc)
    kind = err.get("type")
    if kind == "extra_forbidden":
        msg = "unknown field"
        owner = _model_at(loc)
        if owner is not None and isinstance(loc[-1], str) and len(loc[-1]) <= 64:
            close = difflib.get_close_matches(loc[-1], list(owner.model_fields), n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
    elif kind == "missing":
        msg = "required field missing"
    else:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if "input" in err and kind not in ("model_type", "dict_type", "list_type"):
            msg += f": {shown(err['input'])}" if not isinstance(err["input"], (dict, list)) else ""
    return one_line(f"{path}: {msg}")


_DROPPED = object()


def _drop(data: Any, loc: list, kind: str | None) -> bool:
    """Remove the offending value so the rest can still be checked; False if impossible.

    A missing required field removes its parent mapping instead (e.g. an incomplete
    control_plane_endpoint falls back to its default); a bad scalar in a list is removed
    from the list (after all errors were seen, so indexes stay right)."""
    if kind == "missing":
        loc = loc[:-1]
    if loc and loc[-1] == "[key]":  # a bad mapping key: remove the key (and its value)
        loc = loc[:-1]
        if len(loc) < 2 or not isinstance(loc[-1], str):
            return False
    if not loc:
        return False
    parent = data
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError):
            return True  # an ancestor was already removed for another error
        except TypeError:
            return False
    last = loc[-1]
    if isinstance(parent, dict) and isinstance(last, str) and last in parent:
        del parent[last]
        return True
    if (isinstance(parent, list) and isinstance(last, int) and last < len(parent)
            and not isinstance(parent[last], (dict, list))):
        parent[last] = _DROPPED
        return True
    return False


def _purge_dropped(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _purge_dropped(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_purge_dropped(v) for v in data if v is not _DROPPED]
    return data


def _looks_like_path(source: Any) -> bool:
    if isinstance(source, Path):
        return True
    if not isinstance(source, str) or "\n" in source or "\0" in source:
        return False
    return os.path.exists(source) or source.endswith((".yaml", ".yml", ".json"))


def _parse_source(source: Any) -> Any:
    """The spec as plain data; SpecError for anything that cannot be one (spec_loading.py)."""
    if isinstance(source, ClusterSpec):
        return source.model_dump(mode="json")
    if isinstance(source, dict):
        check_data_size(source)  # before deepcopy, which recurses
        return copy.deepcopy(source)
    if _looks_like_path(source):
        data = parse_yaml(read_spec_file(source))
    elif isinstance(source, str):
        data = parse_yaml(source)
    else:
        raise SpecError([f"<spec>: expected a path, YAML text or a mapping, got {type(source).__name__}"])
    if not isinstance(data, dict):
        raise SpecError(["<spec>: the spec must be a YAML mapping (name:, nodes:, …)"])
    return data


def collect_problems(source: Any) -> tuple[ClusterSpec | None, list[str]]:
    """(spec or None, every problem). Structural errors are dropped one by one so that the
    semantic rules still run on what remains."""
    data = _parse_source(source)
    problems: list[str] = []
    reported: set[tuple] = set()   # locations with a problem: their later "missing" is no news
    for _ in range(8):
        try:
            spec = ClusterSpec.model_validate(data, context={"skip_rules": True})
            break
        except ValidationError as exc:
            errors = exc.errors()
            for err in errors:
                loc = tuple(_clean_loc(tuple(err["loc"])))
                if err.get("type") == "missing" and loc in reported:
                    continue
                reported.add(loc)
                msg = _format_error(err)
                if msg not in problems:
                    problems.append(msg)
            dropped = [_drop(data, _clean_loc(tuple(err["loc"])), err.get("type")) for err in errors]
            if not all(dropped):
                return None, problems
            data = _purge_dropped(data)
    else:
        return None, problems
    for msg in check_rules(spec):
        msg = one_line(msg)
        if msg not in problems:
            problems.append(msg)
    return spec, problems

