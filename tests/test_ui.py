"""The two UIs in a real browser (headless Chromium from Debian's packages, driven by Playwright).

Uses the servers and the two finished comparisons of tests/server_stack.py. On a failure the
page's screenshot and HTML, and the server logs, are kept in $AUSYNTH_TEST_ARTIFACTS (default:
<temp dir>/ausynth-test-artifacts/<test name>/).
"""

from __future__ import annotations

import os
import re

import pytest

from server_stack import ARTIFACTS, Stack, shared_stack

CHROMIUM = os.environ.get("AUSYNTH_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

pytestmark = [pytest.mark.servers, pytest.mark.slow]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000  # the UIs are slow to render on a loaded 2-core machine


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def stack(request, tmp_path_factory) -> Stack:
    return shared_stack(request, tmp_path_factory)


@pytest.fixture
def page(browser, request, stack):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        keep = ARTIFACTS / request.node.name
        keep.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(keep / "page.png"), full_page=True)
            (keep / "page.html").write_text(page.content())
        finally:
            stack.keep_logs(request.node.name)
            print(f"screenshot, page and server logs kept in {keep}")
    page.close()


def test_prefect_ui_shows_the_completed_flow_run(stack, page):
    run = stack.finished_comparisons()[0]
    assert run["state_type"] == "COMPLETED"
    page.goto(f"{stack.prefect_ui}/runs")
    link = page.get_by_role("link", name=run["name"], exact=True).first
    link.click()
    page.wait_for_url(re.compile(rf".*/runs/flow-run/{run['id']}.*"))
    page.get_by_text("Completed").first.wait_for()
    page.get_by_text("ausynth-compare").first.wait_for()
    page.get_by_text("train-supervised-seed0").first.wait_for()  # a task run's log line


def test_mlflow_ui_shows_the_comparison_with_its_child_runs(stack, page):
    assert all(r["state_type"] == "COMPLETED" for r in stack.finished_comparisons())
    experiment = stack.mlflow("GET", "experiments/get-by-name", params={"experiment_name": "ausynth-toy"})
    experiment_id = experiment["experiment"]["experiment_id"]
    parents = stack.mlflow("POST", "runs/search", json={
        "experiment_ids": [experiment_id], "filter": "tags.`ausynth.kind` = 'comparison'"})["runs"]
    parent_id = parents[0]["info"]["run_id"]

    page.goto(f"{stack.mlflow_url}/#/experiments")  # the experiment list
    page.get_by_role("link", name="ausynth-toy", exact=True).first.click()
    page.wait_for_url(re.compile(rf".*#/experiments/{experiment_id}\b.*"))
    page.goto(f"{stack.mlflow_url}/#/experiments/{experiment_id}/runs")  # its 'Training runs' table
    parent_link = page.locator(f'a[href$="/runs/{parent_id}"]').first
    parent_link.wait_for()
    assert parent_link.inner_text().strip() == "toy-quick-comparison"
    row = page.get_by_role("row").filter(has=parent_link)
    row.locator('[col-id="attributes.`Run Name`"]').get_by_role("button").first.click()  # expand the children
    for child in ("supervised-seed0", "upsample-seed0"):
        page.get_by_role("link", name=child, exact=True).first.wait_for()
