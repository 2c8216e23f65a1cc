"""Reading a spec safely: every limit and refusal that applies before the model sees the data.

A spec arrives as a file (`kai plan`, `kai install`, …), YAML text, or a mapping (REST bodies,
flow parameters). Whatever it is, kai refuses — with one line per problem, never a traceback —
input it cannot judge safely: a path that is not a regular file (`/dev/zero`, a FIFO, a
directory: reading them never ends or blocks), a file over `MAX_SPEC_BYTES`, text that is not
UTF-8, YAML nested deeper than `MAX_DEPTH`, duplicate mapping keys (YAML would silently keep the
last one), and data that expands (YAML aliases) past `MAX_VALUES`. Contacts nothing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_SPEC_BYTES = 1 << 20      # a 200-node spec is ~30 KB
MAX_DEPTH = 32                # the spec's own tree is 6 deep (nodes[0].ssh.bastion.…[0])
MAX_VALUES = 100_000          # mappings, lists and scalars after YAML aliases are expanded
MAX_STRING_LENGTH = 1024      # any one string of the spec (the longest real ones are URLs, paths)
SHOWN_CHARS = 60              # how much of a refused value a message quotes
SHOWN_PATH_CHARS = 300        # … and of a file path (the user needs to recognise it)


class SpecError(Exception):
    """The spec is invalid; `.problems` lists every problem, one `path: message` each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid cluster spec:\n" + "\n".join(f"  {p}" for p in self.problems))


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """repr() of a value for a message: one line (escapes), at most ~SHOWN_CHARS characters.

    A refused value is echoed so the user sees what was wrong; a 1 MB value must not become
    1 MB of error output (per problem)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
    return f"{text[:limit]}… ({size})"


# --- files -------------------------------------------------------------------------------------

def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def non_regular_file_kind(path: str) -> str | None:
    """'a character device' etc. when path exists and is not a regular file; None otherwise."""
    try:
        mode = os.stat(os.path.expanduser(path)).st_mode
    except (OSError, ValueError):  # missing here (it may exist where the run happens), or NUL
        return None
    return None if stat.S_ISREG(mode) else _file_kind(mode)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit and (chunk := os.read(fd, min(1 << 16, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_spec_file(path: str | Path) -> str:
    """The text of a spec file, after refusing what cannot be a spec file.

    The file is opened non-blocking (a FIFO would block the open) and checked on the open
    descriptor (no race between the check and the read); at most MAX_SPEC_BYTES + 1 are read."""
    name = shown(str(path), SHOWN_PATH_CHARS)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SpecError([f"<file>: cannot read {name}: {reason}"]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError([f"<file>: {name} is {_file_kind(info.st_mode)}, not a regular file"])
        if info.st_size > MAX_SPEC_BYTES:
            raise SpecError([f"<file>: {name} is too large ({info.st_size} bytes; "
                             f"a spec has at most {MAX_SPEC_BYTES})"])
        data = _read_at_most(fd, MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([f"<file>: cannot read {name}: {exc.strerror or exc}"]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_SPEC_BYTES:  # it grew while we looked
        raise SpecError([f"<file>: {name} is too large (a spec has at most {MAX_SPEC_BYTES} bytes)"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"<file>: {name} is not UTF-8 text "
                         f"(byte 0x{data[exc.start]:02x} at offset {exc.start})"]) from None


# --- YAML --------------------------------------------------------------------------------------

def _path_join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if text.isidentifier() or text.replace("-", "_").isidentifier():
        return f"{path}.{text}" if path else text
    return f"{path}[{shown(text)}]"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        context = getattr(exc, "context", None)
        text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        if context:
            text += f" ({context})"
    else:
        text = str(exc)
    return "<yaml>: not valid YAML: " + " ".join(text.split())


def _check_depth(text: str) -> None:
    """Refuse deep nesting from the event stream (PyYAML's parser is iterative, its composer and
    constructor are recursive: 500 levels would end in a RecursionError)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise SpecError([f"<yaml>: line {line}: nested deeper than {MAX_DEPTH} levels"])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _duplicate_keys(root: yaml.Node) -> list[str]:
    """Every mapping key given twice, with its field path (iterative; each node once, so
    aliases cost nothing and cycles end)."""
    problems: list[tuple[int, str]] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                child = path
                if isinstance(key, yaml.ScalarNode):
                    child = _path_join(path, key.value)
                    line = key.start_mark.line + 1
                    ident = (key.tag, key.value)
                    if ident in first_line:
                        problems.append((line, f"{child}: duplicate key on line {line} (first on "
                                               f"line {first_line[ident]}); give each key once"))
                    first_line.setdefault(ident, line)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
    return [message for _, message in sorted(problems)]


def parse_yaml(text: str) -> Any:
    """One YAML document → Python data, refusing what `yaml.safe_load` would take silently."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError([f"<yaml>: too large (a spec has at most {MAX_SPEC_BYTES} bytes)"])
    try:
        _check_depth(text)
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            if (problems := _duplicate_keys(root)):
                raise SpecError(problems)
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc)]) from None
    except RecursionError:  # belt and braces: _check_depth should make this impossible
        raise SpecError([f"<yaml>: nested deeper than {MAX_DEPTH} levels"]) from None
    check_data_size(data)
    return data


# --- data (from YAML or a REST body) -----------------------------------------------------------

def check_data_size(data: Any) -> None:
    """Refuse data nested deeper than MAX_DEPTH or holding more than MAX_VALUES values.

    Iterative, with a budget: YAML aliases can make a small file expand exponentially (or
    refer to itself), and everything after this point (deepcopy, pydantic) recurses."""
    budget = MAX_VALUES
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise SpecError([f"<spec>: too large (more than {MAX_VALUES} values, "
                             f"YAML aliases expanded)"])
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise SpecError([f"<spec>: nested deeper than {MAX_DEPTH} levels"])
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)


# --- messages ----------------------------------------------------------------------------------

MAX_PROBLEM_CHARS = 500


def one_line(problem: str) -> str:
    """A problem as one bounded line: control characters escaped (a message may quote input)."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in problem)
    return text if len(text) <= MAX_PROBLEM_CHARS else text[:MAX_PROBLEM_CHARS] + "…"
