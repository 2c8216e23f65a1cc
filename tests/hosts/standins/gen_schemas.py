"""Generate standin_schemas.py (the stand-ins' config field tables) from Kubernetes' own Go types.

    python3 tests/hosts/standins/gen_schemas.py          # rewrite standin_schemas.py
    python3 tests/hosts/standins/gen_schemas.py --check  # exit 1 if it is out of date

Input: the Go files listed in SOURCES, saved under types/ (struct and type declarations of the
upstream file at the named commit; comments may be stripped). The parser knows the subset of Go
that API types use: `type X struct { ... }`, `type X Underlying`, fields `Name Type `tags``,
embedded fields, pointers, slices, maps, package-qualified names.

How Go's encoding/json (and sigs.k8s.io/json, kubeadm's strict decoder) read a field:
  - `json:"name,..."`          -> key "name"
  - `json:"-"`                 -> not decoded at all
  - no json tag / empty name   -> key is the Go field name, exactly (the strict decoder is
                                  case-sensitive: UpgradeApplyConfiguration.SkipPhases is "SkipPhases")
  - embedded struct with `json:",inline"` (or no name) -> its fields are promoted into the parent
  - pointers are only nullability; []T is a list; map[K]V is an object with string keys.

Types with their own UnmarshalJSON are not structs to the decoder; CUSTOM says what they accept.
Not a stand-in: runs on the developer's machine only (mirror.standin_files() leaves it out).
"""

from __future__ import annotations

import argparse
import hashlib
import pprint
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TYPES = HERE / "types"
OUT = HERE / "standin_schemas.py"


@dataclass(frozen=True)
class Source:
    local: str       # file under types/
    upstream: str    # path in kubernetes/kubernetes
    commit: str      # the stored version it was read from
    package: str     # Go import path of the package
    label: str       # its short name in the tables, e.g. "kubeadm/v1beta4"


SOURCES = (
    Source("kubeadm_v1beta4_types.go", "cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go",
           "1329935739c3aa007d23cb9a4dadfee9d59ff79b", "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4",
           "kubeadm/v1beta4"),
    Source("bootstraptoken_v1_types.go", "cmd/kubeadm/app/apis/bootstraptoken/v1/types.go",
           "95f08499d652a6211121d8af35f470609217c730", "k8s.io/kubernetes/cmd/kubeadm/app/apis/bootstraptoken/v1",
           "bootstraptoken/v1"),
    Source("kubelet_v1beta1_types.go", "staging/src/k8s.io/kubelet/config/v1beta1/types.go",
           "001332b0422071acf4860769f18e34b5e9b7c1bc", "k8s.io/kubelet/config/v1beta1",
           "kubelet/v1beta1"),
    Source("kubeproxy_v1alpha1_types.go", "staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go",
           "ce3490900116b936d61ee08888436fda1f7abe49", "k8s.io/kube-proxy/config/v1alpha1",
           "kubeproxy/v1alpha1"),
    Source("componentbase_config_v1alpha1_types.go", "staging/src/k8s.io/component-base/config/v1alpha1/types.go",
           "f0032816cae31e46af116d0e13e6151cac8eb638", "k8s.io/component-base/config/v1alpha1",
           "componentbase/v1alpha1"),
    Source("componentbase_logs_api_v1_types.go", "staging/src/k8s.io/component-base/logs/api/v1/types.go",
           "791358f272316602fa9773708f5a442164414bc6", "k8s.io/component-base/logs/api/v1",
           "logs/v1"),
    Source("componentbase_tracing_api_v1_types.go", "staging/src/k8s.io/component-base/tracing/api/v1/types.go",
           "4a0608cb77f6a53af41cb4a453af104a4d4a0610", "k8s.io/component-base/tracing/api/v1",
           "tracing/v1"),
    Source("core_v1_types.go", "staging/src/k8s.io/api/core/v1/types.go (Taint, EnvVar and what they use)",
           "815c3d8f70473678341a03abc0a6fb7bab000d3c", "k8s.io/api/core/v1",
           "core/v1"),
    Source("meta_v1_types.go", "staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go (TypeMeta)",
           "(not read: the two TypeMeta fields, apiVersion and kind)", "k8s.io/apimachinery/pkg/apis/meta/v1",
           "meta/v1"),
)

# The documents kubeadm decodes: (apiVersion, kind) -> root struct.
ROOTS = {
    ("kubeadm.k8s.io/v1beta4", "InitConfiguration"): "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4.InitConfiguration",
    ("kubeadm.k8s.io/v1beta4", "ClusterConfiguration"): "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4.ClusterConfiguration",
    ("kubeadm.k8s.io/v1beta4", "JoinConfiguration"): "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4.JoinConfiguration",
    ("kubeadm.k8s.io/v1beta4", "ResetConfiguration"): "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4.ResetConfiguration",
    ("kubeadm.k8s.io/v1beta4", "UpgradeConfiguration"): "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4.UpgradeConfiguration",
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"): "k8s.io/kubelet/config/v1beta1.KubeletConfiguration",
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"): "k8s.io/kube-proxy/config/v1alpha1.KubeProxyConfiguration",
}

# Types that decode themselves (UnmarshalJSON) or are Go built-ins -> the leaf the checker knows.
CUSTOM = {
    "k8s.io/apimachinery/pkg/apis/meta/v1.Duration": "duration",   # a string like "4m0s"
    "k8s.io/apimachinery/pkg/apis/meta/v1.Time": "time",           # an RFC 3339 string
    "k8s.io/apimachinery/pkg/api/resource.Quantity": "quantity",   # "100Mi" or a number
    "k8s.io/apimachinery/pkg/api/resource.QuantityValue": "quantity",
    "k8s.io/kubernetes/cmd/kubeadm/app/apis/bootstraptoken/v1.BootstrapTokenString": "str",  # "abcdef.0123…"
    "time.Duration": "int",   # plain encoding/json: an int64 of nanoseconds
}
BUILTIN = {"string": "str", "bool": "bool", "int": "int", "int8": "int", "int16": "int", "int32": "int",
           "int64": "int", "uint": "int", "uint8": "int", "uint16": "int", "uint32": "int", "uint64": "int",
           "float32": "float", "float64": "float"}
# Free-form Go types: any value decodes (none is reachable from ROOTS today; listed so a new
# field of such a type becomes "any" on purpose, not by accident).
FREE_FORM = {"k8s.io/apimachinery/pkg/runtime.RawExtension", "interface{}", "any"}


class GoParseError(Exception):
    pass


_STRUCT = re.compile(r"^type\s+(\w+)\s+struct\s*\{\s*$")
_NAMED = re.compile(r"^type\s+(\w+)\s+(\S.*?)\s*$")
_FIELD = re.compile(r"^(?:(\w+)\s+)?([^\s`]+)\s*(?:`([^`]*)`)?\s*$")
_IMPORT = re.compile(r'^\s*(?:(\w+)\s+)?"([^"]+)"\s*$')


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*$", "", line) for line in text.splitlines())


@dataclass
class GoPackage:
    path: str
    imports: dict[str, str]                              # alias -> import path
    structs: dict[str, list[tuple[str | None, str, str]]]  # name -> [(field name | None, type, tag)]
    named: dict[str, str]                                # name -> underlying type expression


def parse_go(text: str, package_path: str) -> GoPackage:
    lines = strip_comments(text).splitlines()
    pkg = GoPackage(package_path, {}, {}, {})
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("import"):
            block = [line[len("import"):].strip()]
            if block[0].startswith("("):
                block = []
                i += 1
                while lines[i].strip() != ")":
                    block.append(lines[i])
                    i += 1
            for b in block:
                m = _IMPORT.match(b)
                if m:
                    path = m[2]
                    pkg.imports[m[1] or path.rsplit("/", 1)[-1]] = path
        elif m := _STRUCT.match(line):
            name, fields = m[1], []
            i += 1
            while lines[i].strip() != "}":
                f = lines[i].strip()
                if f:
                    fm = _FIELD.match(f)
                    if not fm:
                        raise GoParseError(f"{package_path}.{name}: cannot parse field line {f!r}")
                    fields.append((fm[1], fm[2], fm[3] or ""))
                i += 1
            pkg.structs[name] = fields
        elif (m := _NAMED.match(line)) and not line.startswith("type ("):
            pkg.named[m[1]] = m[2]
        i += 1
    return pkg


def json_tag(tag: str) -> tuple[str | None, bool, bool]:
    """-> (name or None, inline, skip)."""
    m = re.search(r'json:"([^"]*)"', tag)
    if not m:
        return None, False, False
    parts = m[1].split(",")
    if parts[0] == "-" and len(parts) == 1:
        return None, False, True
    return (parts[0] or None), "inline" in parts[1:], False


class Generator:
    def __init__(self, packages: dict[str, GoPackage]):
        self.packages = packages
        self.structs: dict[str, dict] = {}   # qualified name -> {json key: schema}
        self.any_reasons: dict[str, str] = {}

    def qualify(self, pkg: GoPackage, type_name: str) -> str:
        if "." in type_name:
            alias, name = type_name.split(".", 1)
            if alias not in pkg.imports:
                raise GoParseError(f"{pkg.path}: unknown package alias {alias!r} in {type_name}")
            return f"{pkg.imports[alias]}.{name}"
        if type_name in BUILTIN or type_name in FREE_FORM:
            return type_name
        return f"{pkg.path}.{type_name}"

    def lookup(self, qualified: str) -> tuple[GoPackage, str]:
        path, _, name = qualified.rpartition(".")
        pkg = self.packages.get(path)
        if pkg is None or (name not in pkg.structs and name not in pkg.named):
            raise GoParseError(f"type {qualified} is not in the saved Go files (add it to types/)")
        return pkg, name

    def schema(self, pkg: GoPackage, expr: str):
        expr = expr.strip()
        if expr.startswith("*"):
            return self.schema(pkg, expr[1:])
        if expr.startswith("[]"):
            return ["list", self.schema(pkg, expr[2:])]
        if expr.startswith("map["):
            depth, j = 0, 3
            for j in range(3, len(expr)):
                depth += {"[": 1, "]": -1}.get(expr[j], 0)
                if depth == 0:
                    break
            return ["map", self.schema(pkg, expr[j + 1:])]
        q = self.qualify(pkg, expr)
        if q in BUILTIN:
            return BUILTIN[q]
        if q in CUSTOM:
            return CUSTOM[q]
        if q in FREE_FORM:
            return "any"
        tpkg, name = self.lookup(q)
        if name in tpkg.structs:
            self.struct(q)
            return ["ref", q]
        return self.schema(tpkg, tpkg.named[name])

    def fields_of(self, qualified: str) -> dict:
        pkg, name = self.lookup(qualified)
        out: dict = {}
        for fname, ftype, tag in pkg.structs[name]:
            key, inline, skip = json_tag(tag)
            if skip:
                continue
            embedded = fname is None
            if embedded and (inline or key is None):
                base = ftype.lstrip("*")
                q = self.qualify(pkg, base)
                if q in CUSTOM or q in BUILTIN:
                    raise GoParseError(f"{qualified}: cannot inline {ftype}")
                out.update(self.fields_of(q))
                continue
            if key is None:   # no json name: the Go field name (an embedded type's own name)
                key = fname or ftype.lstrip("*").rsplit(".", 1)[-1]
            out[key] = self.schema(pkg, ftype)
        return out

    def struct(self, qualified: str) -> None:
        if qualified in self.structs:
            return
        self.structs[qualified] = {}  # recursion guard
        self.structs[qualified] = self.fields_of(qualified)


def load_packages(types_dir: Path = TYPES) -> dict[str, GoPackage]:
    return {s.package: parse_go((types_dir / s.local).read_text(), s.package) for s in SOURCES}


def short_names(structs: dict[str, dict]) -> dict[str, str]:
    """Qualified Go names -> "<package label>.<Type>", e.g. "kubeadm/v1beta4.InitConfiguration"."""
    labels = {s.package: s.label for s in SOURCES}
    out = {}
    for q in structs:
        path, _, name = q.rpartition(".")
        out[q] = f"{labels[path]}.{name}"
    if len(set(out.values())) != len(out):
        raise GoParseError("short struct names collide; lengthen them")
    return out


def render(types_dir: Path = TYPES) -> str:
    gen = Generator(load_packages(types_dir))
    for root in ROOTS.values():
        gen.struct(root)
    names = short_names(gen.structs)

    def rename(s):
        if isinstance(s, list):
            return [s[0], names[s[1]]] if s[0] == "ref" else [s[0], rename(s[1])]
        return s

    structs = {names[q]: {k: rename(v) for k, v in f.items()} for q, f in sorted(gen.structs.items())}
    roots = {k: names[v] for k, v in ROOTS.items()}
    n_fields = sum(len(f) for f in structs.values())
    head = ["# GENERATED by tests/hosts/standins/gen_schemas.py -- do not edit; regenerate instead.",
            "# The stand-ins' strict config checks (standin_config.py) read these tables.",
            "# Source: the Go types of kubernetes/kubernetes, read at these commits:"]
    for s in SOURCES:
        digest = hashlib.sha256((types_dir / s.local).read_bytes()).hexdigest()[:12]
        head.append(f"#   {s.upstream} @ {s.commit}  (types/{s.local} sha256:{digest})")
    head += [f"# {len(structs)} structs, {n_fields} fields.",
             "# A schema is a leaf (str int float bool duration time quantity any) or [\"list\", s],",
             "# [\"map\", s] (string keys), [\"ref\", struct name].",
             '"""Generated field tables of the kubeadm, kubelet and kube-proxy config types."""', "",
             f"ROOTS = {pprint.pformat(roots, width=110)}", "",
             f"STRUCTS = {pprint.pformat(structs, width=110)}", ""]
    return "\n".join(head)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gen_schemas.py")
    p.add_argument("--check", action="store_true", help="fail if standin_schemas.py is out of date")
    a = p.parse_args(argv)
    text = render()
    if a.check:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
