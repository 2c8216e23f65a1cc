"""The step-kind table (installers/step_kinds.py) is the one list of kinds: the spec, the plan's
jobs and policies, the tasks (and their docstrings) and the docs agree with it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from installers import plan as plan_module
from installers import step_kinds
from installers.plan import DEFAULT_POLICIES, build_plan
from installers.scripts_store import script_text
from installers.spec import POLLING_STEP_KINDS, STEP_KINDS, ClusterSpec, load_spec
from tests.spec_factory import aio, ha

ROOT = Path(__file__).resolve().parent.parent
KINDS = step_kinds.STEP_KINDS


def test_the_spec_and_the_plan_take_the_kinds_from_the_table():
    assert STEP_KINDS == step_kinds.names()
    steps = ClusterSpec.model_json_schema()["properties"]["steps"]  # the spec's `steps:` keys
    assert tuple(steps["propertyNames"]["enum"]) == step_kinds.names()
    assert set(DEFAULT_POLICIES) == set(step_kinds.names())
    assert POLLING_STEP_KINDS == ("verify", "health", "verify_removal")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_the_task_exists_and_its_docstring_names_its_script(kind):
    module = importlib.import_module(kind.task_module)
    assert (ROOT / kind.task.partition(":")[0]).is_file()
    wrapper = getattr(module, kind.task_function)
    assert wrapper.task.name == kind.task_function  # a @step_task: the Prefect task run's name
    if kind.script:
        script_text(kind.script)  # the node script exists
        assert f"`{kind.script}`" in (wrapper.__doc__ or ""), f"{kind.task}: docstring must name {kind.script}"
        if kind.task_function != kind.name:  # e.g. facts runs task preflight: say so where one looks
            assert f"`{kind.name}`" in wrapper.__doc__
        # the job builder is in the planner module of the mode that runs the kind
        assert callable(getattr(importlib.import_module(kind.job_module), kind.job, None)), \
            f"{kind.job_module} has no {kind.job}"
    else:
        assert "controller" in (module.__doc__ or "")


def _builders_defined_in(module) -> set[str]:
    """The public `*_job` functions a module defines (not those it imports from another)."""
    return {name for name, value in vars(module).items()
            if name.endswith("_job") and not name.startswith("_") and callable(value)
            and getattr(value, "__module__", None) == module.__name__}


@pytest.mark.parametrize("module", sorted({k.job_module for k in KINDS} | {"installers.plan_model"}))
def test_every_job_builder_of_a_planner_is_its_kinds(module):
    """Each planner module defines exactly the job builders of the kinds the table puts there
    (plan_model, the planners' shared helpers, defines none: job_hash is not a builder)."""
    defined = _builders_defined_in(importlib.import_module(module)) - {"job_hash", "host_job"}
    assert defined == {k.job for k in KINDS if k.job and k.job_module == module}


def test_the_day2_modes_jobs_are_in_their_planners():
    assert {k.job_module for k in KINDS if k.job} == {
        "installers.plan", "installers.plan_upgrade", "installers.remove_plan", "installers.certs_plan",
        "installers.restore_plan"}
    assert step_kinds.get("drain").job_module == "installers.plan_upgrade"
    assert step_kinds.get("remove_drain").job_module == "installers.remove_plan"
    assert step_kinds.get("certs_renew").job_module == "installers.certs_plan"
    assert not hasattr(plan_module, "remove_drain_job") and not hasattr(plan_module, "drain_job")
    assert not hasattr(plan_module, "certs_renew_job")


def plans():
    yield build_plan(load_spec(aio()), "all_in_one")
    yield build_plan(load_spec(ha()), "ha")
    yield build_plan(load_spec(ha()), "add_nodes", nodes=["cp-3", "worker-2"])
    yield build_plan(load_spec(ha()), "reset")
    yield build_plan(load_spec(ha()), "preflight")
    yield build_plan(load_spec(ha()), "health")


@pytest.mark.parametrize("plan", list(plans()), ids=lambda p: p.mode)
def test_each_jobs_script_is_its_steps_kinds(plan):
    for step in plan.steps():
        kind = step_kinds.get(step.kind)
        assert step.policy == kind.policy
        assert {job.script for job in step.jobs} <= ({kind.script} if kind.script else set()), step.name
        assert bool(step.jobs) == bool(kind.script), step.name


def test_a_controller_kind_has_no_script():
    with pytest.raises(ValueError, match="controller"):
        step_kinds.script_of("verify")


def test_the_docs_where_is_x_table_is_the_table():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert "\n".join(step_kinds.where_is_x_rows()) in doc
