"""rpu_establishment_reports: one page per establishment, checked against the database, delivered
into its own SFTP folder and e-mailed to its IT contacts. Real PostgreSQL, SFTP and SMTP;
the DAG run whole with ``dag.test()``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import write_region_file
from lxml import html as lxml_html

from rpu.cli import main as cli
from rpu.config import region as region_config
from rpu.flows import establishment_report
from rpu.flows.templating import fr_hours
from rpu.sandbox import generator
from rpu.store import quality, registry, timeliness
from rpu.store.loader import load_file

REPO = Path(__file__).resolve().parent.parent
LIVE, PARALLEL, ONBOARDING, INACTIVE = generator.demo_establishments(4, seed=31)
STATUS = {LIVE["finess"]: "live", PARALLEL["finess"]: "parallel", ONBOARDING["finess"]: "onboarding",
          INACTIVE["finess"]: "inactive"}
REPORTED = (LIVE, PARALLEL, ONBOARDING)
RUN_DAY = date(2026, 3, 16)  # a Monday
START, END = date(2026, 1, 19), date(2026, 3, 15)  # the 8 weeks before it


def it(establishment) -> str:
    return f"dsi-{establishment['finess']}@example.org"


@pytest.fixture
def region(tmp_path, monkeypatch, db) -> region_config.Region:
    return write_region_file(
        tmp_path, monkeypatch,
        establishments=[{"finess": e["finess"], "ordre": 0, "name": e["name"], "status": STATUS[e["finess"]],
                         "it_contacts": [it(e)]} for e in (LIVE, PARALLEL, ONBOARDING, INACTIVE)],
        paths={"exports_dir": str(tmp_path / "exports")})


@pytest.fixture
def loaded(db, region, tmp_path):
    """A generated region: each establishment sends nightly 7-day files for the last three weeks
    (one of them with a refused code), plus an older week; one unreadable file."""
    with psycopg.connect(db, autocommit=True) as conn:
        registry.sync(conn, region, author="test")
        for n, establishment in enumerate((LIVE, PARALLEL, ONBOARDING, INACTIVE)):
            nights = [END - timedelta(days=d) for d in range(0, 21, 3)] + [date(2026, 2, 1)]
            for night in sorted(nights):
                path = tmp_path / f"O{establishment['finess']}_{night:%Y%m%d}.xml"
                generator.write_oscour_file(path, establishment["finess"], 0, night - timedelta(days=6), night,
                                            visits_per_day=12 + 3 * n, seed=n * 100 + night.toordinal() % 97,
                                            defects=["VALUE_NOT_IN_SET"] if establishment is LIVE else ())
                assert load_file(conn, path, sender=establishment["finess"]).status == "loaded"
        broken = tmp_path / "broken.xml"
        generator.write_oscour_file(broken, PARALLEL["finess"], 0, END - timedelta(days=6), END, defects=["NOT_XML"])
        assert load_file(conn, broken, sender=PARALLEL["finess"]).status == "rejected"
        conn.execute("UPDATE received_file SET received_at = %s", (datetime(2026, 3, 15, 3, 0, tzinfo=UTC),))
    return db


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "rpu_establishment_reports.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["rpu_establishment_reports"]
    for task in dag.tasks:
        task.retries = 0
    return dag


def test_dag_parses_with_its_doc_schedule_and_alerting():
    dag = _dag()
    assert "En cas d'échec" in dag.doc_md and "rapports/" in dag.doc_md
    assert [t.task_id for t in dag.topological_sort()] == ["plan", "build_reports", "deliver", "heartbeat"]
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 7 * * *", "Europe/Paris")
    assert all(t.on_failure_callback for t in dag.tasks)


def _page_text(page_html: str) -> str:
    return lxml_html.fromstring(page_html).text_content()


def check_page_against_database(conn, page_html: str, establishment, others) -> None:
    finess = establishment["finess"]
    tree = lxml_html.fromstring(page_html)
    # Visits per day: every day of the 8 weeks, the database's count.
    per_day = dict(conn.execute("SELECT entree::date, count(*) FROM rpu WHERE finess = %s AND entree >= %s"
                                " AND entree < %s GROUP BY 1", (finess, START, END + timedelta(days=1))).fetchall())
    cells = {date.fromisoformat(td.get("data-day")): int(td.get("data-visits")) for td in tree.xpath("//td[@data-day]")}
    assert sorted(cells) == [START + timedelta(days=i) for i in range(56)]
    assert cells == {day: per_day.get(day, 0) for day in cells}
    assert sum(cells.values()) > 0
    # Files by status, as journaled.
    files = dict(conn.execute(
        "SELECT status, count(*) FROM received_file WHERE (finess = %s OR (finess IS NULL AND sender = %s))"
        " GROUP BY status", (finess, finess)).fetchall())
    shown: dict[str, int] = {}
    for tr in tree.xpath("//tr[@data-status]"):
        shown[tr.get("data-status")] = shown.get(tr.get("data-status"), 0) + int(tr.get("data-files"))
    assert shown == files
    # FEDORU validity per field: the indicators of the regional database.
    _, indicators = quality.indicators(conn, START, END + timedelta(days=1), establishment_report.STATUSES)
    mine = indicators[(finess, 0)]
    for tr in tree.xpath("//tr[@data-field]"):
        expected = mine[tr.get("data-field")].exploitabilite
        assert (float(tr.get("data-exploitabilite")) if tr.get("data-exploitabilite") else None) == (
            pytest.approx(expected, abs=1e-6) if expected is not None else None)
    # Timeliness: the stored delays of its visits.
    overall = timeliness.summary(conn, START, END + timedelta(days=1), timezone="Europe/Paris",
                                 statuses=[STATUS[finess]], finess=finess).of((finess, 0))
    assert tree.get_element_by_id("delai-median").text_content() == fr_hours(overall.arrival_median_h)

    # Only this establishment, and nothing that identifies a patient.
    text = _page_text(page_html)
    for other in others:
        assert other["finess"] not in page_html and other["name"] not in text
    text = text.replace(establishment["name"], "").replace("Région de test", "").replace("Europe/Paris", "")
    recent = START - timedelta(days=60)  # a baby born during the period shares its birth date with a day shown
    for naissance, cp, commune in conn.execute(
            "SELECT DISTINCT naissance, cp, commune FROM rpu WHERE finess = %s", (finess,)).fetchall():
        if naissance and naissance < recent:
            assert f"{naissance:%d/%m/%Y}" not in page_html and naissance.isoformat() not in page_html
        if cp:
            assert not re.search(rf"(?<![0-9]){re.escape(cp)}(?![0-9])", text), cp
        if commune:
            assert commune.lower() not in text.lower(), commune


def test_weekly_run_writes_one_page_per_establishment_in_its_own_folder_and_mails_it(
        airflow_db, loaded, region, clean_sftp, mailbox):
    dag = _dag()
    run = dag.test(logical_date=datetime(2026, 3, 16, 6, 0, tzinfo=UTC))  # Monday 07:00 in Paris
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states

    name = f"rapport_{{}}_0_{START:%Y%m%d}_{END:%Y%m%d}.html"
    with psycopg.connect(loaded) as conn:
        for establishment in REPORTED:
            folder = clean_sftp.root / establishment["finess"] / "rapports"
            assert [p.name for p in folder.iterdir()] == [name.format(establishment["finess"])]
            page = (folder / name.format(establishment["finess"])).read_text(encoding="utf-8")
            others = [e for e in (LIVE, PARALLEL, ONBOARDING, INACTIVE) if e is not establishment]
            check_page_against_database(conn, page, establishment, others)
        assert not (clean_sftp.root / INACTIVE["finess"]).exists()  # inactive: no report

        journal = conn.execute("SELECT finess, status, remote_path, emailed_to FROM establishment_report"
                               " ORDER BY finess").fetchall()
    assert {(f, s) for f, s, _, _ in journal} == {(e["finess"], "delivered") for e in REPORTED}
    assert all(to == [it({"finess": f})] for f, _, _, to in journal)

    # Each IT contact got its own report, attached, and nobody else's.
    for establishment in REPORTED:
        [mail] = [m for m in mailbox.messages if it(establishment) in m["To"]]
        assert establishment["name"] in mail["Subject"] and "rapport" in mail["Subject"].lower()
        [attachment] = [part for part in mail.iter_attachments()]
        assert attachment.get_filename() == name.format(establishment["finess"])
        assert f"{establishment['finess']}/rapports/" in mail.get_body(("plain",)).get_content()

    # The same day again: nothing rebuilt, nothing sent twice.
    count = len(mailbox.messages)
    run = dag.test(logical_date=datetime(2026, 3, 16, 6, 30, tzinfo=UTC))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["deliver"] == "skipped", states
    assert len(mailbox.messages) == count

    # Tuesday: not a report day.
    run = dag.test(logical_date=datetime(2026, 3, 17, 6, 0, tzinfo=UTC))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["plan"] == "skipped" and states["heartbeat"] == "success"


def test_the_same_page_by_hand(loaded, region, tmp_path, capsys):
    output = tmp_path / "rapport.html"
    code = cli.main(["report", "establishment", LIVE["finess"], "--start", START.isoformat(), "--end",
                     END.isoformat(), "--output", str(output), "--database", loaded])
    assert code == 0
    assert "passages" in capsys.readouterr().out
    page = output.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<html lang="fr">' in page
    assert "<svg" in page and "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    with psycopg.connect(loaded) as conn:
        check_page_against_database(conn, page, LIVE, [PARALLEL, ONBOARDING, INACTIVE])
    assert "À corriger en priorité" in page and "VALUE_NOT_IN_SET" not in _page_text(page)  # French, not codes

    assert cli.main(["report", "establishment", "670000397", "--start", START.isoformat(), "--end",
                     END.isoformat(), "--output", str(output), "--database", loaded]) != 0


def test_settings_and_due_days(region):
    conf = establishment_report.settings(region)
    assert conf == establishment_report.Settings("weekly", 0, 1, "attachment")
    assert establishment_report.due(RUN_DAY, conf) and not establishment_report.due(RUN_DAY + timedelta(days=1), conf)
    monthly = establishment_report.Settings("monthly", day=1)
    assert establishment_report.due(date(2026, 4, 1), monthly) and not establishment_report.due(RUN_DAY, monthly)
    assert establishment_report.period_for(RUN_DAY) == (START, END)


def test_a_hostile_name_is_shown_not_run(db, tmp_path, monkeypatch):
    """The establishment's name comes from the region file: in the page it is text, escaped once
    (autoescaped template; the chart titles are SVG text)."""
    hostile = '<script>alert("rpu")</script> & Cie'
    region = write_region_file(
        tmp_path, monkeypatch,
        establishments=[{"finess": LIVE["finess"], "ordre": 0, "name": hostile, "status": "live",
                         "it_contacts": [it(LIVE)]}])
    path = tmp_path / "night.xml"
    generator.write_oscour_file(path, LIVE["finess"], 0, END - timedelta(days=6), END, visits_per_day=5, seed=7)
    with psycopg.connect(db, autocommit=True) as conn:
        registry.sync(conn, region, author="test")
        assert load_file(conn, path, sender=LIVE["finess"]).status == "loaded"
        page = establishment_report.build(conn, region, LIVE["finess"], 0, START, END).html
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#34;rpu&#34;)&lt;/script&gt; &amp; Cie" in page
    assert "&amp;lt;" not in page  # escaped once, not twice
    assert hostile in _page_text(page)


def test_the_region_s_own_page_template_is_used_for_the_region_named(loaded, region, tmp_path, monkeypatch):
    """`rpu report establishment --region FILE`: the page comes from FILE's templates/ folder when
    the ORU put its own version there, even with no RPU_REGION_CONFIG in the environment."""
    (region.path.parent / "templates").mkdir()
    (region.path.parent / "templates" / "establishment_report.html.j2").write_text(
        "<!DOCTYPE html><title>{{ title }}</title><p>Version de la région pour {{ name }}</p>\n", encoding="utf-8")
    monkeypatch.delenv("RPU_REGION_CONFIG")
    output = tmp_path / "page.html"
    assert cli.main(["report", "establishment", LIVE["finess"], "--start", START.isoformat(), "--end",
                     END.isoformat(), "--output", str(output), "--database", loaded, "--region", str(region.path)]) == 0
    assert f"Version de la région pour {LIVE['name']}" in output.read_text(encoding="utf-8")


def test_priorities_are_worded_from_their_template(loaded, region):
    """« À corriger en priorité »: the refused file, the refused code, each a French sentence
    with its figures (no rule code)."""
    with psycopg.connect(loaded) as conn:
        page = establishment_report.build(conn, region, LIVE["finess"], 0, START, END)
    items = [" ".join(li.text_content().split())
             for li in lxml_html.document_fromstring(page.html).xpath("//ol[@class='priorites']/li")]
    kinds = [item["kind"] for item in page.context["priorities"]]
    assert len(items) == len(kinds) and "code" in kinds, (kinds, items)
    code = page.context["priorities"][kinds.index("code")]["code"]
    assert f"Valeur « {code.value} » du champ {code.field} refusée pour {code.visits} passage" in items[kinds.index("code")]
    for kind, item in zip(kinds, items, strict=True):
        assert item and "{" not in item and "VALUE_NOT_IN_SET" not in item, (kind, item)
        if kind == "files":
            assert re.match(r"\d+ fichier\(s\) (refusé\(s\)|retenu\(s\) par le concentrateur)", item), item
