"""Property-based API tests (schemathesis) from the served OpenAPI document: no request it can
generate — valid or not — may produce a 5xx.

Status, logs, cancel and modes go over real HTTP to `kai serve`. Start requests go to the same API
app in-process, with a wrapper whose `start` validates and then starts nothing: generated specs
carry arbitrary IP addresses, and no test may ever connect to one.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from deployments import control
from deployments.api import create_app
from tests.support.e2e_server import kai_server  # noqa: F401

pytestmark = pytest.mark.e2e
LIMITS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True)


class StartsNothing:
    """The real wrapper, except that start only validates."""
    canonical_mode = staticmethod(control.canonical_mode)
    validate = staticmethod(control.validate)
    modes = staticmethod(control.modes)

    def start(self, mode, spec, *, nodes=None, lock_wait_s=None, rebuild_mode="auto", tags=None,
              to=None, max_unavailable=None, force=False, renew=False, snapshot=None, confirm=False):
        control.validate(mode, spec, nodes, rebuild_mode, to, max_unavailable, force, renew, snapshot,
                         confirm)
        return str(uuid.uuid4())

    def check_hosts(self, spec, mode=None, secrets=None):
        """Validates as the real one does, then contacts no host."""
        mode, _ = control.validate(mode or "preflight", spec)
        return mode, []


def _document(kai_server) -> dict:  # noqa: F811
    return httpx.get(kai_server.api_url + "/openapi.json", timeout=30).json()


@pytest.fixture(scope="module")
def start_app(kai_server):  # noqa: F811
    from fastapi.testclient import TestClient
    return TestClient(create_app(kai_server.token, ctl=StartsNothing()))


def operations(schema) -> list:
    ops = [result.ok() for result in schema.get_all_operations()]
    assert ops, "no operation in the OpenAPI document"
    return ops


def fuzz(operation, check) -> None:
    """Hypothesis over one operation's generated cases (schemathesis' pytest plugin does not
    support pytest 9 yet, so the strategy is driven directly)."""
    @given(case=operation.as_strategy())
    @LIMITS
    def run(case):
        check(case)

    run()


def test_served_api_never_answers_5xx(kai_server):  # noqa: F811
    # not fuzzed against the real server: start and hosts/check would contact the generated
    # addresses (in-process, below); a generated schedule could run against any address, a
    # generated webhook could send alerts to any URL
    schema = (schemathesis.openapi.from_dict(_document(kai_server))
              .exclude(path_regex=r"/start$|/hosts/check$|/alerts$")
              .exclude(method="POST", path_regex=r"/schedules$"))
    ops = operations(schema)
    assert {op.path for op in ops} >= {"/api/v1/installation/modes", "/healthz",
                                       "/api/v1/installation/{installation_id}/logs"}

    def check(case):
        response = case.call(base_url=kai_server.api_url, headers=kai_server.headers())
        assert response.status_code < 500, (case.method, case.path, response.text[:500])

    for op in ops:
        fuzz(op, check)


def test_start_never_answers_5xx(kai_server, start_app):  # noqa: F811
    schema = schemathesis.openapi.from_dict(_document(kai_server)).include(path_regex=r"/start$")
    [op] = operations(schema)
    seen: set[int] = set()

    def check(case):
        path = case.path.replace("{mode}", str(case.path_parameters["mode"]))
        response = start_app.post(path, json=case.body, headers=kai_server.headers())
        seen.add(response.status_code)
        assert response.status_code in (202, 400, 422), (path, case.body, response.text[:500])

    fuzz(op, check)
    assert 422 in seen or 400 in seen


def test_hosts_check_never_answers_5xx(kai_server, start_app):  # noqa: F811
    schema = schemathesis.openapi.from_dict(_document(kai_server)).include(path_regex=r"/hosts/check$")
    [op] = operations(schema)

    def check(case):
        response = start_app.post(case.path, json=case.body, headers=kai_server.headers())
        assert response.status_code in (200, 400, 422), (case.body, response.text[:500])

    fuzz(op, check)
