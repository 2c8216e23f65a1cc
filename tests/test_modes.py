"""The mode table (installers/modes.py) is the one list of modes: prefect.yaml, the flows, the
planners, the REST API, `GET /modes`, the CLI and the docs agree with it. No Prefect server."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

import flows
from deployments import control
from deployments.api import StartRequest, create_app
from deployments.cli import main
from installers import modes
from installers.plan import PLANNERS
from installers.spec import MODES as SPEC_MODES
from installers.spec import SpecError, load_spec
from tests.spec_factory import aio, ha

ROOT = Path(__file__).resolve().parent.parent
P = "/api/v1/installation"


def test_prefect_yaml_deploys_exactly_the_table():
    deployed = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert {d["name"]: (d["entrypoint"], d["description"]) for d in deployed} == \
        {m.name: (m.flow, m.description) for m in modes.MODES}
    assert len(deployed) == len(modes.MODES)


def test_each_mode_is_the_flow_its_entrypoint_names():
    assert list(flows.MODES) == list(modes.names())
    for name, flow in flows.MODES.items():
        path, _, function = modes.get(name).flow.partition(":")
        assert flow.name == name  # the deployment is <name>/<name>: control.start looks it up so
        assert Path(inspect.getfile(flow.fn)) == ROOT / path and flow.fn.__name__ == function
        takes = inspect.signature(flow.fn).parameters
        assert (modes.NODES_PARAM in takes) == modes.get(name).takes_nodes, name
        assert (modes.LOCK_WAIT_PARAM in takes) == modes.get(name).locks_hosts, name
        assert (modes.INSTALL_PARAM in takes) == (modes.INSTALL in modes.get(name).runs), name
        for param in (modes.TARGET_PARAM, modes.MAX_UNAVAILABLE_PARAM):
            assert (param in takes) == modes.get(name).takes_target, name


def test_every_planned_mode_has_a_planner():
    assert tuple(PLANNERS) == modes.planned_names() == SPEC_MODES
    for m in modes.MODES:
        assert all(part == modes.INSTALL or modes.get(part).has_plan for part in m.runs), m.name


def test_the_install_choices_are_the_same_everywhere():
    rebuild = inspect.signature(flows.MODES["rebuild"].fn).parameters[modes.INSTALL_PARAM]
    assert typing.get_args(rebuild.annotation) == modes.install_choices()
    assert typing.get_args(StartRequest.model_fields["rebuild_mode"].annotation) == modes.install_choices()
    assert modes.install_choices() == ("auto", "all_in_one", "ha")


@pytest.mark.parametrize("data,nodes,expected", [
    (aio(), None, "all_in_one"), (ha(), None, "ha"), (ha(workers=0), [], "ha"),
    (ha(), ["worker-2"], "add_nodes")])
def test_default_mode(data, nodes, expected):
    assert modes.default_mode(load_spec(data), nodes) == expected


def test_rebuild_runs_reset_then_the_install_mode():
    spec = load_spec(ha())
    assert modes.plan_sequence("rebuild", spec) == ("reset", "ha")
    assert modes.plan_sequence("rebuild", load_spec(aio()), "auto") == ("reset", "all_in_one")
    assert modes.plan_sequence("add_nodes", spec) == ("add_nodes",)


def test_unknown_names_are_refused_naming_names_and_aliases():
    with pytest.raises(SpecError) as err:
        modes.canonical_mode("kind")
    assert "all_in_one" in err.value.problems[0] and "allinone" in err.value.problems[0]
    with pytest.raises(SpecError):
        modes.canonical_mode(None)  # type: ignore[arg-type]


class StartRecorder:
    """The wrapper's read side is real (modes, validation); start only records."""
    canonical_mode = staticmethod(control.canonical_mode)
    validate = staticmethod(control.validate)
    modes = staticmethod(control.modes)

    def __init__(self):
        self.started: list[str] = []
        self.tags: list[list[str] | None] = []

    def start(self, mode, spec, **kw):
        self.started.append(mode)
        self.tags.append(kw.get("tags"))
        return "00000000-0000-0000-0000-000000000001"

    def prefect_client(self):
        import contextlib
        return contextlib.nullcontext("prefect-client")

    def active_run_ids(self, client):
        return []


def test_every_name_get_modes_advertises_is_accepted_by_start():
    recorder = StartRecorder()
    client = TestClient(create_app("t0ken", ctl=recorder))
    h = {"Authorization": "Bearer t0ken"}
    answer = client.get(f"{P}/modes", headers=h).json()
    advertised = list(answer["modes"].values())
    # the old object keyed by mode, under the old service's names where it had them
    assert list(answer["modes"]) == [modes.listed_name(m) for m in modes.MODES]
    assert {"all_in_one", "ha_secure"} <= set(answer["modes"])
    assert [m["mode"] for m in advertised] == list(modes.names())
    assert [m["name"] for m in answer["mode_list"]] == list(modes.names())  # kai's list
    pairs = [(m["name"], m["mode"]) for m in advertised] + \
            [(m["mode"], m["mode"]) for m in advertised] + \
            [(alias, m["mode"]) for m in advertised for alias in m["aliases"]]
    assert {"allinone", "ha-secure", "add-nodes", "all-in-one", "ha_secure"} <= {a for a, _ in pairs}
    for name, canonical in pairs:
        r = client.post(f"{P}/{name}/start", headers=h, json={"spec": aio()})
        assert r.status_code == 202, (name, r.text)
        assert r.json()["kai_mode"] == canonical and recorder.started[-1] == canonical
        # the name it answers to: the old service's for its names, kai's for kai's
        reported = "ha_secure" if name in ("ha_secure", "ha-secure") else canonical
        assert r.json()["mode"] == reported, (name, r.json()["mode"])
        assert recorder.tags[-1] == ([f"reported-mode:{reported}"] if reported != canonical else None)
    assert client.post(f"{P}/kind/start", headers=h, json={"spec": aio()}).status_code == 400


@pytest.mark.parametrize("requested, reported", [
    ("ha_secure", "ha_secure"), ("ha-secure", "ha_secure"), ("ha", "ha"), ("all_in_one", "all_in_one"),
    ("all-in-one", "all_in_one"), ("allinone", "all_in_one"), ("add-nodes", "add_nodes"), ("upgrade", "upgrade")])
def test_a_run_answers_to_the_old_name_it_was_started_under(requested, reported):
    assert modes.reported_name(requested) == reported
    with pytest.raises(SpecError):
        modes.reported_name("kind")


def test_a_modes_old_name_is_one_of_its_aliases():
    for m in modes.MODES:
        assert m.old_name is None or m.old_name in m.aliases, m.name
        assert m.estimated_time and m.features and m.requirements, m.name


@pytest.mark.parametrize("name", [n for n in modes.accepted_names()
                                  if modes.get(modes.canonical_mode(n)).has_plan])
def test_kai_plan_accepts_every_planned_name(capsys, name):
    spec = ROOT / "examples" / ("all-in-one.yaml" if modes.canonical_mode(name) != "ha" else "ha.yaml")
    argv = ["plan", str(spec), "--mode", name]
    if modes.get(modes.canonical_mode(name)).takes_nodes:
        argv = ["plan", str(ROOT / "examples" / "ha.yaml"), "--mode", name, "--nodes", "worker-2"]
    if modes.get(modes.canonical_mode(name)).takes_target:
        argv += ["--to", "1.37"]
    if modes.get(modes.canonical_mode(name)).takes_snapshot:
        argv += ["--snapshot", f"{yaml.safe_load(spec.read_text())['name']}-20261201T213000Z-rev9.db"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(f"kai plan: mode {modes.canonical_mode(name)}, ")


@pytest.mark.parametrize("argv", [["init"], ["hosts", "check", "s.yaml"], ["install", "s.yaml"]],
                         ids=lambda argv: argv[0])
def test_every_cli_mode_option_takes_the_aliases_of_its_modes(argv):
    from deployments.cli import build_parser

    parser = build_parser()
    option = next(a for a in parser._subparsers._group_actions[0].choices[argv[0]]._actions
                  if a.dest == "mode")
    offered = set(option.choices) if option.choices else set(modes.accepted_names())
    for mode in modes.MODES:
        if mode.name in offered:
            for alias in mode.aliases:
                assert parser.parse_args([*argv, "--mode", alias]).mode == alias  # canonicalised later
                assert modes.canonical_mode(alias) == mode.name


def test_kai_plan_defaults_to_add_nodes_when_nodes_are_named(capsys):
    assert main(["plan", str(ROOT / "examples" / "ha.yaml"), "--nodes", "worker-2"]) == 0
    assert capsys.readouterr().out.startswith("kai plan: mode add_nodes, ")


def test_the_docs_modes_table_is_the_table():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert "\n".join(modes.overview_rows()) in doc
