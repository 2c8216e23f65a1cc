#!/usr/bin/python3
"""helm stand-in: `helm template NAME CHART --namespace NS --values FILE` and `helm version --short`.

The test mirror serves it as helm's release archive (linux-amd64/helm: this module and
standin_common.py in a Python zip application). CHART is a chart archive (.tgz: <name>/Chart.yaml,
values.yaml, values.schema.json, templates/*.yaml). Rendering is the honest subset kai's charts
need: `{{ .Values.a.b }}`, `{{ .Release.Name }}`, `{{ .Release.Namespace }}`, `{{ .Chart.Version }}`;
any other action fails. Values are checked like helm checks a chart's values.schema.json (the
stand-in chart's schema forbids unknown keys): a key it does not know, or a value of the wrong
type, fails loudly. Unknown flags fail (argparse, exit 2).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

import yaml  # noqa: E402

from standin_common import Fail, run_main  # noqa: E402

HELM_VERSION = "3.19.0"
ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
TYPES = {"object": dict, "string": str, "boolean": bool, "integer": int, "array": list}


def parse(argv):
    p = argparse.ArgumentParser(prog="helm", allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("template", allow_abbrev=False)
    t.add_argument("name")
    t.add_argument("chart")
    t.add_argument("--namespace", "-n", required=True)
    t.add_argument("--values", "-f", action="append", default=[])
    v = sub.add_parser("version", allow_abbrev=False)
    v.add_argument("--short", action="store_true", required=True)
    return p.parse_args(argv)


def read_chart(path: str) -> dict[str, bytes]:
    try:
        with tarfile.open(path, "r:gz") as tar:
            files = {}
            for m in tar.getmembers():
                if m.isfile():
                    files[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]
    except (OSError, tarfile.TarError) as e:
        raise Fail(f'failed to load chart "{path}": {e}') from e
    tops = {n.split("/", 1)[0] for n in files}
    if len(tops) != 1 or f"{next(iter(tops))}/Chart.yaml" not in files:
        raise Fail(f"{path}: Chart.yaml file is missing")
    return {n.split("/", 1)[1]: data for n, data in files.items()}


def check_schema(value, schema: dict, path: str) -> None:
    want = schema.get("type")
    if want and (not isinstance(value, TYPES[want]) or (want == "integer" and isinstance(value, bool))):
        raise Fail(f"values don't meet the specifications of the schema(s) in the following chart(s):\n"
                   f"- {path}: Invalid type. Expected: {want}, given: {type(value).__name__}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key, sub in value.items():
            if key not in props and schema.get("additionalProperties") is False:
                raise Fail(f"values don't meet the specifications of the schema(s) in the following "
                           f"chart(s):\n- {path}: Additional property {key} is not allowed")
            if key in props:
                check_schema(sub, props[key], f"{path}.{key}")


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(text: str, ctx: dict, where: str) -> str:
    def action(m: re.Match) -> str:
        expr = m.group(1)
        if not re.fullmatch(r"\.[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*", expr):
            raise Fail(f"template: {where}: the stand-in renders only .Values/.Release/.Chart "
                       f"fields, not {expr!r}")
        cur = ctx
        for part in expr[1:].split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise Fail(f"template: {where}: executing: nil pointer evaluating {expr}")
            cur = cur[part]
        if isinstance(cur, (dict, list)):
            raise Fail(f"template: {where}: {expr} is not a scalar")
        return str(cur).lower() if isinstance(cur, bool) else str(cur)

    return ACTION.sub(action, text)


def template(a) -> int:
    files = read_chart(a.chart)
    chart = yaml.safe_load(files["Chart.yaml"])
    values = yaml.safe_load(files.get("values.yaml", b"")) or {}
    schema = yaml.safe_load(files["values.schema.json"]) if "values.schema.json" in files else None
    for f in a.values:
        try:
            with open(f) as fh:
                given = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as e:
            raise Fail(f"failed to parse {f}: {e}") from e
        if not isinstance(given, dict):
            raise Fail(f"failed to parse {f}: not a map of values")
        values = merge(values, given)
    if schema is not None:
        check_schema(values, schema, chart["name"])
    ctx = {"Values": values, "Release": {"Name": a.name, "Namespace": a.namespace},
           "Chart": {"Name": chart["name"], "Version": chart["version"]}}
    out = io.StringIO()
    for name in sorted(n for n in files if n.startswith("templates/") and n.endswith(".yaml")):
        text = render(files[name].decode(), ctx, f"{chart['name']}/{name}")
        out.write(f"---\n# Source: {chart['name']}/{name}\n{text.rstrip()}\n")
    sys.stdout.write(out.getvalue())
    return 0


def main(argv) -> int:
    a = parse(argv)
    if a.command == "version":
        print(f"v{HELM_VERSION}+g0000000")
        return 0
    return template(a)


if __name__ == "__main__":
    sys.exit(run_main("helm", main))
