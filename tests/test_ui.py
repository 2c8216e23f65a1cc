"""The Prefect UI of `kai serve` in headless Chromium (Debian's `chromium`): the kai deployments are
listed, and a deployment's run page shows the typed parameter form built from the ClusterSpec.
Screenshots go to $KAI_TEST_ARTIFACTS (default /tmp/kai-test-artifacts)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from deployments.control import mode_names
from tests.support.e2e_server import kai_server  # noqa: F401

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(os.environ.get("KAI_TEST_ARTIFACTS", "/tmp/kai-test-artifacts"))
BUDGET_MS = "20000"  # virtual time for the single-page app to load its data
UI_PAGE_SIZE = 10  # the deployments page's default "Items per page"


def chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed (apt-get install chromium; `make deps` does it)")
    with tempfile.TemporaryDirectory(prefix="kai-chromium-") as profile:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
             f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}", *args, url],
            capture_output=True, text=True, timeout=120)


def visible_text(dom: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.fixture(scope="module")
def deployment_ids(kai_server):  # noqa: F811
    with httpx.Client(base_url=kai_server.prefect_api_url, timeout=30) as c:
        return {m: c.get(f"/deployments/name/{m}/{m}").json()["id"] for m in mode_names()}


def test_ui_lists_the_kai_deployments(kai_server, deployment_ids):  # noqa: F811
    # the UI lists UI_PAGE_SIZE deployments a page, A to Z; kai has more modes than that
    pages = -(-len(mode_names()) // UI_PAGE_SIZE)
    listed: list[str] = []
    for page in range(1, pages + 1):
        text = visible_text(chromium(f"{kai_server.ui_url}/deployments?page={page}", "--dump-dom").stdout)
        assert "Can't connect to Server API" not in text, text[:500]
        assert f"{len(mode_names())} Deployments" in text and f"Page {page} of {pages}" in text, text[:1500]
        listed += [m for m in mode_names() if f" {m} {m} " in text]
    assert sorted(listed) == sorted(mode_names()), f"the deployments pages list {listed}"


def test_ui_run_page_shows_the_spec_form(kai_server, deployment_ids):  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url = f"{kai_server.ui_url}/deployments/deployment/{deployment_ids['all_in_one']}/run"
    text = visible_text(chromium(url, "--dump-dom").stdout)
    assert "Create Flow Run for Deployment: all_in_one" in text, text[:500]
    for label in ("Parameters spec", "Nodes", "Pod Cidr", "cilium calico flannel",
                  "Private Key Secret", "lock_wait_s"):
        assert label in text, f"{label!r} not on the run page: {text[:1500]}"
    shot = ARTIFACTS / "ui-all_in_one-run.png"
    shot.unlink(missing_ok=True)
    result = chromium(url, f"--screenshot={shot}", "--window-size=1400,1600", "--hide-scrollbars")
    assert shot.exists() and shot.stat().st_size > 10_000, result.stderr[-2000:]
    print(f"\nscreenshot: {shot}")
