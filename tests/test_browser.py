"""A real browser on the demo stack, as the ARS uses it: Debian's ``chromium`` package driven by
Playwright for Python (``executable_path``; Playwright's own browser download is never used).
When chromium is missing, the test setup installs it with ``apt-get`` (root, as in CI); if it
cannot, the tests fail: they are never skipped.

The ARS (account ``ars``, a French browser) logs in, opens ``rpu_invs_replay``, fills the French
form, triggers a dry run and reads the visits day by day in the UI; tries a FINESS with a wrong
check digit and reads the French refusal (and the ORU gets no failure e-mail); cannot trigger
``rpu_ingest``. Then the ARS's HTML report is opened: no console error, every chart drawn.

Screenshots: ``var/test-artifacts/browser/`` (git-ignored), kept after the run.
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from conftest import REPO_ROOT

from rpu.sandbox.airflow_api import AirflowApi
from rpu.sandbox.demo_region import ARS_DIR, demo_establishments

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "var" / "test-artifacts" / "browser"
REPLAY = "rpu_invs_replay"


def install_chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (CI runs as root)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.fail("chromium manque et l'installation demande root : apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "chromium"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(argv)} a échoué ({done.returncode}) :\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    assert Path(CHROMIUM).exists(), "apt-get install chromium n'a pas installé /usr/bin/chromium"
    return CHROMIUM


@pytest.fixture(scope="module")
def demo(demo_stack):
    """The session's demo, running (started again if an earlier test stopped it), its first
    night done (the scenario has run every DAG once)."""
    from conftest import rpu_demo

    if rpu_demo("status", demo_stack["env"]).returncode != 0:
        again = rpu_demo("start", demo_stack["env"])
        assert again.returncode == 0, again.stdout + again.stderr
    scenario = demo_stack["state"].processes().get("scenario")
    deadline = time.monotonic() + 600
    while scenario is not None and scenario.alive() and time.monotonic() < deadline:
        time.sleep(2)
    return demo_stack


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = install_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--lang=fr-FR"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def ars(demo, browser):
    """A French browser logged in as ``ars``; its console errors are collected."""
    context = browser.new_context(locale="fr-FR", timezone_id="Europe/Paris", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    base = f"http://localhost:{demo['port']}"
    page.goto(base + "/")
    page.fill("input[name=username]", "ars")
    page.fill("input[name=password]", demo["passwords"]["ars"])
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(base + "/")
    page.wait_for_load_state("networkidle")
    try:
        yield {"page": page, "base": base, "api": AirflowApi(base, "ars", demo["passwords"]["ars"])}
    finally:
        context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def trigger_from_the_form(ars, *, finess: str, start, end, reason: str) -> str:
    """Open the DAG, click « Déclencher », fill the French form (dry run left ticked), submit;
    return the new run's id."""
    page, api = ars["page"], ars["api"]
    before = {r["dag_run_id"] for r in api.runs(REPLAY)}
    page.goto(f"{ars['base']}/dags/{REPLAY}")
    page.get_by_role("button", name="Déclencher").click()
    dialog = page.get_by_role("dialog")
    for label in ("FINESS géographique", "Premier jour à renvoyer", "Dernier jour à renvoyer",
                  "Simulation (rien n'est envoyé)", "Motif"):
        dialog.get_by_text(label).first.wait_for()  # the form's own French words (titles of the params)
    page.fill("#element_finess", finess)
    page.fill("#element_start", start.isoformat())
    page.fill("#element_end", end.isoformat())
    page.fill("#element_reason", reason)
    shot(page, f"formulaire-{finess}")
    dialog.get_by_role("button", name="Déclencher").click()
    page.get_by_text("Dag déclenché").first.wait_for()
    deadline = time.monotonic() + 30
    while not (new := [r["dag_run_id"] for r in api.runs(REPLAY) if r["dag_run_id"] not in before]):
        assert time.monotonic() < deadline, "aucune exécution créée par le formulaire"
        time.sleep(1)
    (run_id,) = new
    return run_id


def open_task(ars, run_id: str, task_id: str, expect: str):
    page = ars["page"]
    page.goto(f"{ars['base']}/dags/{REPLAY}/runs/{quote(run_id, safe='')}/tasks/{task_id}")
    page.get_by_text(expect).first.wait_for(timeout=60_000)
    return page


def test_the_ars_triggers_a_dry_run_from_the_french_form_and_reads_the_visits_per_day(ars):
    page, api = ars["page"], ars["api"]
    shot(page, "accueil-ars")
    assert page.get_by_role("link", name="Dags").count() >= 1
    live = next(e for e in demo_establishments() if e["status"] == "live" and not e["role"])
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    start, end = today - timedelta(days=7), today - timedelta(days=1)
    run_id = trigger_from_the_form(ars, finess=live["finess"], start=start, end=end,
                                   reason="essai de reprise depuis le navigateur")
    assert api.wait_for_run(REPLAY, run_id, timeout=300) == "success", api.task_states(REPLAY, run_id)
    assert api.task_states(REPLAY, run_id) == {"check_request": "success", "build_file": "success",
                                               "deliver": "skipped"}
    # The run, in the UI: succeeded.
    page.goto(f"{ars['base']}/dags/{REPLAY}/runs/{quote(run_id, safe='')}")
    page.get_by_text("Succès").first.wait_for()
    shot(page, "reprise-simulee-execution")
    # build_file's log: the visits day by day, every day of the period.
    open_task(ars, run_id, "build_file", "Reprise SIMULÉE")
    for n in range(7):
        page.get_by_text(f"{start + timedelta(days=n):%d/%m/%Y} :").first.wait_for()
    assert page.get_by_text("Simulation : rien n'a été envoyé").count() >= 1
    shot(page, "reprise-simulee-passages-par-jour")


def test_a_wrong_finess_gets_the_french_refusal_and_pages_nobody(ars, demo):
    page, api = ars["page"], ars["api"]
    live = next(e for e in demo_establishments() if e["status"] == "live" and not e["role"])
    typo = live["finess"][:-1] + str((int(live["finess"][-1]) + 1) % 10)  # a slip on the check digit
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    run_id = trigger_from_the_form(ars, finess=typo, start=today - timedelta(days=3), end=today - timedelta(days=1),
                                   reason="essai avec une faute de frappe")
    assert api.wait_for_run(REPLAY, run_id, timeout=300) == "failed"
    open_task(ars, run_id, "check_request", "Reprise refusée")
    assert page.get_by_text(f"FINESS {typo} : la clé de contrôle (dernier chiffre, algorithme de Luhn) est "
                            "fausse").count() >= 1
    shot(page, "reprise-refusee")
    time.sleep(5)  # a failure callback would have sent its e-mail by now
    subjects = [str(BytesParser(policy=policy.default).parsebytes(p.read_bytes())["Subject"])
                for p in demo["state"].mailbox.glob("*.eml")]
    assert not [s for s in subjects if "Échec" in s], subjects


def test_the_ars_cannot_trigger_rpu_ingest(ars):
    page, api = ars["page"], ars["api"]
    before = len(api.runs("rpu_ingest"))
    page.goto(f"{ars['base']}/dags/rpu_ingest")
    button = page.get_by_role("button", name="Déclencher")
    if button.count() and button.first.is_enabled():
        button.first.click()
        page.get_by_role("dialog").get_by_role("button", name="Déclencher").click()
        page.get_by_text("Accès refusé").first.wait_for()
    shot(page, "rpu-ingest-refuse-a-l-ars")
    time.sleep(2)
    assert len(api.runs("rpu_ingest")) == before
    assert api.trigger("rpu_ingest")[0] == 403


def test_the_ars_report_draws_every_chart_without_console_error(demo, browser):
    reports = sorted((demo["state"].sftp_root / ARS_DIR).glob("rapport_*.html"))
    assert reports, "rpu_ars_daily n'a livré aucun rapport"
    context = browser.new_context(locale="fr-FR", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(reports[-1].as_uri())
        page.wait_for_load_state("load")
        assert page.title().startswith("RPU ")
        charts = page.locator("svg")
        assert charts.count() >= 6
        for i in range(charts.count()):
            chart = charts.nth(i)
            chart.scroll_into_view_if_needed()
            box = chart.bounding_box()
            assert box and box["width"] > 50 and box["height"] > 50, (i, box)
            marks = chart.locator("rect, path, polyline, line, circle").count()
            assert marks > 0, f"graphique {i} vide"
        page.screenshot(path=str(ARTIFACTS / "rapport-ars.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_screenshots_are_kept_as_artifacts():
    names = {p.name for p in ARTIFACTS.glob("*.png")}
    assert {"reprise-simulee-passages-par-jour.png", "reprise-refusee.png", "rapport-ars.png"} <= names, names
