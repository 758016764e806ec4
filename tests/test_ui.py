"""The two UIs in a real browser (headless Chromium from Debian's packages, driven by Playwright).

Uses the servers and the two finished comparisons of tests/server_stack.py. On a failure the
page's screenshot and HTML, and the server logs, are kept in $AUSYNTH_TEST_ARTIFACTS (default:
<temp dir>/ausynth-test-artifacts/<test name>/).
"""

from __future__ import annotations

import os
import re

import pytest

from server_stack import ARTIFACTS, TINY_PARAMS, Stack, shared_stack

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


def dismiss_tips(page) -> None:
    """Close the feature tips MLflow's UI opens on a first visit, as a user would: they are modal,
    so until closed the page's links are hidden from the accessibility tree and take no clicks."""
    page.add_locator_handler(page.get_by_role("dialog").get_by_role("button", name="Got it"),
                             lambda button: button.click())


@pytest.fixture
def stack(request, tmp_path_factory) -> Stack:
    return shared_stack(request, tmp_path_factory)


@pytest.fixture
def page(browser, request, stack):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    dismiss_tips(page)
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
    assert run["name"] == "toy-quick: supervised, upsample x seeds 0"  # what runs, not random words
    page.goto(f"{stack.prefect_ui}/runs")
    page.locator(f'a[href$="/runs/flow-run/{run["id"]}"]').first.click()  # both runs have that name
    page.wait_for_url(re.compile(rf".*/runs/flow-run/{run['id']}.*"))
    page.get_by_text("Completed").first.wait_for()
    page.get_by_text("ausynth-compare").first.wait_for()
    page.get_by_text("Subflow Runs", exact=True).first.click()  # the DAG runs as a subflow on the chosen task runner
    page.get_by_role("link", name=run["name"], exact=True).first.click()
    page.get_by_text("Logs", exact=True).first.click()
    page.get_by_text("train-supervised-seed0").first.wait_for()  # a task run's log line


def test_a_run_submitted_from_the_form_shows_its_table_and_links_to_mlflow(stack, page):
    stack.finished_comparisons()  # the two triggered runs first, so the form's run has the machine to itself
    deployment = stack.deployments()["compare"]
    # the tiny sizes saved as the deployment's defaults, as a user would; the seed is typed into the form
    stack.api("PATCH", f"/deployments/{deployment['id']}",
              {"parameters": {k: v for k, v in TINY_PARAMS.items() if k != "seeds"}})
    page.goto(f"{stack.prefect_ui}/deployments/deployment/{deployment['id']}/run")
    page.get_by_text("a built-in config, or the path of a YAML file").first.wait_for()  # descriptions shown
    page.get_by_role("button", name="Add item").first.click()  # seeds
    page.locator(".schema-form-property-array input[type=number]").first.fill("1")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run")) as sent:
        page.get_by_role("button", name="Submit").click()
    response = sent.value  # the UI only shows 'Something went wrong' when this fails: keep the server's answer
    assert response.ok, f"the form's create_flow_run answered {response.status}: {response.text()[:2000]}"
    page.wait_for_url(re.compile(rf".*/deployments/deployment/{deployment['id']}(\?.*)?$"))  # back on the deployment

    (submitted,) = stack.flow_runs_of(deployment["id"], seeds=[1])  # exactly one run from one submission
    run = stack.wait_for_flow_run(submitted["id"])
    assert run["state_type"] == "COMPLETED"
    assert run["name"] == "toy-quick: supervised, upsample x seeds 1"
    page.goto(f"{stack.prefect_ui}/deployments/deployment/{deployment['id']}?tab=Runs")
    page.locator(f'a[href$="/runs/flow-run/{run["id"]}"]').first.click()
    page.wait_for_url(re.compile(rf".*/runs/flow-run/{run['id']}.*"))
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("comparison", exact=True).last.click()  # the markdown artifact: the table and a link
    page.get_by_text("Best by F1 %").first.wait_for()
    page.get_by_role("cell", name="upsample").first.wait_for()
    link = page.get_by_role("link", name=re.compile("MLflow parent run"))
    assert link.get_attribute("href").startswith(f"{stack.mlflow_url}/#/experiments/")
    with page.context.expect_page() as opened:
        link.click()
    mlflow_page = opened.value
    dismiss_tips(mlflow_page)
    mlflow_page.set_default_timeout(TIMEOUT_MS)
    mlflow_page.get_by_text("Best by F1 %").first.wait_for()  # the run's description: the same table
    for child in ("supervised-seed1", "upsample-seed1"):
        mlflow_page.get_by_role("link", name=child, exact=True).first.wait_for()
    mlflow_page.get_by_role("tab", name="Artifacts").click()
    for chart in ("strategies.png", "per_output_f1.png"):  # the strategies side by side, and per AU
        mlflow_page.get_by_text(chart, exact=True).first.click()
        mlflow_page.locator(f"img[alt='{chart}']").first.wait_for()
    mlflow_page.close()


def test_mlflow_ui_shows_the_comparison_with_its_child_runs(stack, page):
    assert all(r["state_type"] == "COMPLETED" for r in stack.finished_comparisons())
    experiment = stack.mlflow("GET", "experiments/get-by-name", params={"experiment_name": "ausynth-toy"})
    experiment_id = experiment["experiment"]["experiment_id"]
    parents = stack.mlflow("POST", "runs/search", json={  # the parent run of the first triggered flow run
        "experiment_ids": [experiment_id], "filter": f"tags.`prefect.flow_run_id` = '{stack.flow_run_ids[0]}'"})["runs"]
    parent_id = parents[0]["info"]["run_id"]

    page.goto(f"{stack.mlflow_url}/#/experiments")  # the experiment list
    page.get_by_role("link", name="ausynth-toy", exact=True).first.click()
    page.wait_for_url(re.compile(rf".*#/experiments/{experiment_id}\b.*"))
    page.get_by_role("link", name="Training runs").first.click()  # its runs table: it opens on Overview
    page.wait_for_url(re.compile(rf".*#/experiments/{experiment_id}/runs\b.*"))
    parent_link = page.locator(f'a[href$="/runs/{parent_id}"]').first
    parent_link.wait_for()
    name = parents[0]["info"]["run_name"]  # <time>-<config>-<id>, as its output folder
    assert re.fullmatch(r"\d{8}T\d{6}Z-toy-quick-[0-9a-f]{6}", name)
    assert parent_link.inner_text().strip() == name
    row = page.get_by_role("row").filter(has=parent_link)
    row.locator('[col-id="attributes.`Run Name`"]').get_by_role("button").first.click()  # expand the children
    for child in ("supervised-seed0", "upsample-seed0"):
        page.get_by_role("link", name=child, exact=True).first.wait_for()
