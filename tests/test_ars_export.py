"""rpu_ars_daily: the yearly CSV/Parquet export for the ARS, its quality report, its delivery.

Real PostgreSQL (generated data from three live establishments over two weeks, plus data that must
stay out of the export), real SFTP server, and the DAG run with ``dag.test()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pendulum
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from lxml import html as lxml_html
from psycopg import sql

from rpu.config import region as region_config
from rpu.flows import ars_export, ars_report
from rpu.sandbox.generator import demo_establishments, write_oscour_file
from rpu.sandbox.local_services import create_database, database_url, drop_database, postgres_airflow_connection
from rpu.store import db as store
from rpu.store import quality, registry, sends, timeliness
from rpu.store.loader import load_file, revoke_file

EXPORT_DAY = date(2026, 3, 16)  # a Monday: the data runs from 1 January to Sunday 15 March
FIRST_DAY = EXPORT_DAY - timedelta(days=14)
ESTABLISHMENTS = demo_establishments(4, seed=7)
LIVE = ESTABLISHMENTS[:3]
ONBOARDING = ESTABLISHMENTS[3]
TRICKY_NAME = 'CH de Saint-Dié <Urgences> & "Cie"'
REGION_CODE = "GE"


def region_text(exports_dir: Path) -> str:
    establishments = [
        {"finess": e["finess"], "ordre": 0, "name": TRICKY_NAME if i == 2 else e["name"],
         "legal_finess": e["legal_finess"], "status": "live" if e in LIVE else "onboarding"}
        for i, e in enumerate(ESTABLISHMENTS)
    ]
    return region_config.render(code=REGION_CODE, name="Grand Est", operator_emails=["oru@example.org"],
                                ars_emails=["ars@example.org"], establishments=establishments,
                                paths={"exports_dir": str(exports_dir)})


def load(conn: psycopg.Connection, path: Path, sender: str):
    conn.autocommit = False
    try:
        result = load_file(conn, path, sender=sender)
        conn.commit()
    finally:
        conn.autocommit = True
    return result


@pytest.fixture(scope="module")
def template(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory):
    """A database loaded once; each test works on its own copy (CREATE DATABASE ... TEMPLATE)."""
    tmp = tmp_path_factory.mktemp("ars-data")
    name = f"rpu_ars_tpl_{secrets.token_hex(4)}"
    url = create_database(pg_admin_url, name)
    region = region_config.parse(tomllib.loads(region_text(tmp / "exports")), tmp / "region.toml")
    loaded = 0
    with psycopg.connect(url, autocommit=True) as conn:
        store.migrate(conn)
        registry.sync(conn, region, author="test")
        for i, e in enumerate(LIVE):
            path = tmp / f"live{i}.xml"
            write_oscour_file(path, e["finess"], 0, FIRST_DAY, EXPORT_DAY - timedelta(days=1),
                              visits_per_day=30, seed=i)
            result = load(conn, path, e["finess"])
            assert result.status == "loaded"
            loaded += result.loaded_records
        # Out of the export: last year, the export day itself, an establishment in onboarding.
        outside = [
            (LIVE[0], date(2025, 12, 29), date(2025, 12, 31)),
            (LIVE[1], EXPORT_DAY, EXPORT_DAY),
            (ONBOARDING, EXPORT_DAY - timedelta(days=5), EXPORT_DAY - timedelta(days=1)),
        ]
        for i, (e, start, end) in enumerate(outside):
            path = tmp / f"outside{i}.xml"
            write_oscour_file(path, e["finess"], 0, start, end, visits_per_day=20, seed=10 + i)
            assert load(conn, path, e["finess"]).status == "loaded"
        # The intake journal: one duplicate (establishment 0), one rejected file (establishment 2).
        assert load(conn, tmp / "live0.xml", LIVE[0]["finess"]).status == "duplicate"
        bad = tmp / "bad.xml"
        write_oscour_file(bad, LIVE[2]["finess"], 0, FIRST_DAY, FIRST_DAY, visits_per_day=5,
                          defects=["FINESS_CHECK_DIGIT"])
        assert load(conn, bad, LIVE[2]["finess"]).status == "rejected"
        conn.execute("UPDATE received_file SET received_at = %s",
                     (datetime(2026, 3, 15, 3, 0, tzinfo=pendulum.timezone("Europe/Paris")),))
    yield {"name": name, "url": url, "visits": loaded}
    drop_database(pg_admin_url, name)


@pytest.fixture
def db(pg_admin_url: str, template: dict):
    name = f"rpu_ars_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                     sql.Identifier(template["name"])))
    yield database_url(pg_admin_url, name)
    drop_database(pg_admin_url, name)


@pytest.fixture
def region(tmp_path: Path) -> region_config.Region:
    path = tmp_path / "region.toml"
    path.write_text(region_text(tmp_path / "exports"), encoding="utf-8")
    return region_config.load(path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the files ---------------------------------------------------------------------------------------

def test_export_builds_csv_parquet_report_owner_only_and_journals_them(db, region, template):
    with psycopg.connect(db, autocommit=True) as conn:
        outcome = ars_export.export_daily(conn, region, EXPORT_DAY, batch_rows=400)
        expected = template["visits"]
        assert outcome.built and outcome.visit_count == expected
        assert [s.file_name for s in outcome.sends] == [
            "rpu_GE_2026_20260316.csv", "rpu_GE_2026_20260316.parquet", "rapport_GE_20260316.html",
            "delais_GE_2026_20260316.csv"]
        for send in outcome.sends:
            assert (send.destination, send.kind, send.status) == ("ars", "daily", "built")
            assert (send.period_start, send.period_end, send.year) == (date(2026, 1, 1), date(2026, 3, 15), 2026)
            assert send.visit_count == expected
            path = Path(send.local_path)
            assert path.parent.parent == ars_export.export_dir(region)
            assert mode(path) == 0o600 and mode(path.parent) == 0o700
            assert sends.file_sha256(path)[0] == send.sha256
        assert not list(ars_export.export_dir(region).rglob("*.part"))
        csv_path, parquet_path, _, delays_path = (Path(s.local_path) for s in outcome.sends)

        # CSV: a French spreadsheet's CSV, one line per visit of the year of the live establishments.
        assert csv_path.read_bytes().startswith(b"\xef\xbb\xbffiness;ordre;code_postal;")
        frame = pd.read_csv(csv_path, sep=";", encoding="utf-8-sig", dtype=str, keep_default_na=False)
        assert len(frame) == expected
        assert tuple(frame.columns) == ars_export.COLUMNS
        assert set(frame["finess"]) == {e["finess"] for e in LIVE}
        assert frame["date_entree"].str.fullmatch(r"\d\d/\d\d/2026 \d\d:\d\d").all()
        entries = pd.to_datetime(frame["date_entree"], format="%d/%m/%Y %H:%M")
        assert entries.min() >= pd.Timestamp(FIRST_DAY) and entries.max() < pd.Timestamp(EXPORT_DAY)
        filled = frame["date_naissance"][frame["date_naissance"] != ""]
        assert filled.str.fullmatch(r"\d\d/\d\d/\d{4}").all()
        several = frame["diagnostics_associes"][frame["diagnostics_associes"].str.contains(",")]
        assert len(several) > 0 and several.str.fullmatch(r"[A-Z0-9+*]+(,[A-Z0-9+*]+)+").all()

        # Parquet: the same rows, typed, in row groups of batch_rows.
        table = pq.read_table(parquet_path)
        assert table.num_rows == expected
        assert pq.ParquetFile(parquet_path).metadata.num_row_groups == -(-expected // 400)
        assert table.schema.field("ordre").type == pa.int16()
        assert table.schema.field("date_entree").type == pa.timestamp("us")
        assert table.schema.field("date_naissance").type == pa.date32()
        assert table.schema.field("diagnostics_associes").type == pa.list_(pa.string())
        assert table.schema.metadata[b"period_end"] == b"2026-03-15"
        assert table.column("finess").to_pylist() == frame["finess"].tolist()  # same rows, same order
        lengths = pc.list_value_length(table.column("diagnostics_associes"))
        assert pc.sum(pc.greater(lengths, 1)).as_py() == len(several)

        # The companion file: timeliness per establishment and day, the same visits.
        delays = pd.read_csv(delays_path, sep=";", encoding="utf-8-sig", dtype=str, keep_default_na=False)
        assert tuple(delays.columns) == timeliness.COMPANION_COLUMNS
        assert delays["rpu"].astype(int).sum() == expected and set(delays["finess"]) == {e["finess"] for e in LIVE}


def test_a_second_run_of_the_day_rebuilds_nothing_and_force_replaces_what_was_not_sent(db, region):
    with psycopg.connect(db, autocommit=True) as conn:
        first = ars_export.export_daily(conn, region, EXPORT_DAY)
        conn.execute("UPDATE send SET status = 'sent' WHERE id = %s", (first.sends[0].id,))
        mtimes = [Path(s.local_path).stat().st_mtime_ns for s in first.sends]

        again = ars_export.export_daily(conn, region, EXPORT_DAY)
        assert not again.built and [s.id for s in again.sends] == [s.id for s in first.sends]
        assert [Path(s.local_path).stat().st_mtime_ns for s in first.sends] == mtimes

        forced = ars_export.export_daily(conn, region, EXPORT_DAY, force=True)
        assert forced.built and forced.cancelled == [s.id for s in first.sends[1:]]
        statuses = dict(conn.execute("SELECT id, status FROM send WHERE destination = 'ars'").fetchall())
        assert statuses[first.sends[0].id] == "sent"  # a delivered file stays delivered
        assert [statuses[s.id] for s in forced.sends] == ["built"] * 4
        assert Path(first.sends[0].local_path).exists()  # kept: the journal still describes it

        # Delivered (or cancelled) more than 7 days ago: the local copies go, the journal stays.
        conn.execute("UPDATE send SET created_at = now() - interval '8 days' WHERE status IN ('sent', 'cancelled')")
        assert sends.purge_local_copies(conn, "ars", within=ars_export.export_dir(region)) == 4
        assert not any(Path(s.local_path).exists() for s in first.sends)
        assert all(Path(s.local_path).exists() for s in forced.sends)


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralised(fresh_database_url, region, tmp_path):
    url = fresh_database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        store.migrate(conn)
        registry.sync(conn, region, author="test")
        insert(conn, LIVE[0]["finess"], entree=datetime(2026, 2, 1, 10), motif='=HYPERLINK("http://x","clic")',
               commune="-2+3", cp="@SUM(1)", da=["S00"])
        outcome = ars_export.export_daily(conn, region, EXPORT_DAY, tmp_path / "out")
    frame = pd.read_csv(outcome.sends[0].local_path, sep=";", encoding="utf-8-sig", dtype=str)
    row = frame.iloc[0]
    assert row["motif"] == "'=HYPERLINK(\"http://x\",\"clic\")"
    assert (row["commune"], row["code_postal"], row["diagnostics_associes"]) == ("'-2+3", "'@SUM(1)", "S00")
    # The Parquet file keeps the values as received.
    assert pq.read_table(outcome.sends[1].local_path).column("motif").to_pylist() == ['=HYPERLINK("http://x","clic")']


def test_an_export_with_no_visit_still_gives_a_header_an_empty_parquet_and_a_report(db, region):
    with psycopg.connect(db, autocommit=True) as conn:
        outcome = ars_export.export_daily(conn, region, date(2025, 6, 1))  # nothing before June 2025
    csv_path, parquet_path, html_path, _ = (Path(s.local_path) for s in outcome.sends)
    assert outcome.visit_count == 0
    assert csv_path.read_bytes() == b"\xef\xbb\xbf" + ";".join(ars_export.COLUMNS).encode() + b"\n"
    assert pq.read_table(parquet_path).num_rows == 0
    assert lxml_html.parse(str(html_path)).getroot().get_element_by_id("qualite") is not None


# --- the indicators, against a hand computation --------------------------------------------------------

def insert(conn, finess: str, **values) -> None:
    row = {"received_file_id": 0, "record_no": 1, "finess": finess, "ordre": 0} | values
    columns = sql.SQL(", ").join(map(sql.Identifier, row))
    conn.execute(sql.SQL("INSERT INTO rpu ({}) VALUES ({})").format(
        columns, sql.SQL(", ").join(sql.Placeholder() * len(row))), list(row.values()))


def test_fedoru_indicators_match_a_hand_computation(fresh_database_url, region):
    url = fresh_database_url()
    a, b = LIVE[0]["finess"], LIVE[1]["finess"]
    day = datetime(2026, 2, 10, 10, 0)
    with psycopg.connect(url, autocommit=True) as conn:
        store.migrate(conn)
        registry.sync(conn, region, author="test")
        # Five visits of establishment a, each chosen for what it puts in the denominators.
        insert(conn, a, entree=day, naissance=date(1992, 5, 1), sexe="M", mode_entree="8", provenance="5",
               gravite="2", dp="S934", sortie=day + timedelta(hours=2), mode_sortie="6", destination="1",
               orient="MED", cp="67000")  # 1: all valid
        insert(conn, a, entree=day, sexe="F", mode_entree="6", provenance="5", gravite="P",
               sortie=day - timedelta(minutes=5), mode_sortie="7", orient="XYZ",
               cp="6700")  # 2: no DP, no DESTINATION, ORIENT invalid, PROVENANCE incoherent, SORTIE < ENTREE
        insert(conn, a, entree=day, naissance=date(1890, 1, 1), sexe="I", provenance="9", gravite="Z",
               sortie=day + timedelta(hours=80), mode_sortie="8", orient="FUGUE")  # 3: out of the DP denominator
        insert(conn, a, entree=day, naissance=date(2026, 3, 1), sexe="X", mode_sortie="8",
               dp="ABC")  # 4: DP filled but not CIM-10, born after ENTREE, no SORTIE
        insert(conn, a, entree=day, naissance=date(1946, 1, 1), sexe="F", mode_entree="7", provenance="1",
               gravite="4", dp="I214", sortie=day + timedelta(hours=72), mode_sortie="6", destination="6",
               orient="REA")  # 5: DESTINATION 6 after a mutation: filled, not valid; stay of exactly 72 h
        # Establishment b: nobody transferred, so DESTINATION and ORIENT have no denominator.
        insert(conn, b, entree=day, mode_sortie="8", dp="J069", gravite="1")
        # Outside the period or the scope: never counted.
        insert(conn, a, entree=datetime(2025, 12, 31, 23, 59), dp="S934")
        insert(conn, ONBOARDING["finess"], entree=day, dp="S934")

        visits, indicators = quality.indicators(conn, date(2026, 1, 1), EXPORT_DAY)
        stays = quality.length_of_stay(conn, date(2026, 1, 1), EXPORT_DAY)
        ages = quality.age_pyramid(conn, date(2026, 1, 1), EXPORT_DAY)
        ccmu = quality.ccmu(conn, date(2026, 1, 1), EXPORT_DAY)

    def counts(key, name):
        i = indicators[key][name]
        return (i.denominator, i.filled, i.valid)

    ka, kb = (a, 0), (b, 0)
    assert visits == {ka: 5, kb: 1, None: 6}
    assert counts(ka, "DP") == (4, 3, 2)  # visits 1, 2, 4, 5 (3 left by FUGUE); filled 1, 4, 5; valid 1, 5
    assert indicators[ka]["DP"].exhaustivite == 0.75 and indicators[ka]["DP"].exploitabilite == 0.5
    assert counts(ka, "DESTINATION") == (3, 2, 1)  # MODE_SORTIE 6/7: visits 1, 2, 5; filled 1, 5; valid 1
    assert counts(ka, "ORIENT") == (3, 3, 2)  # filled 1, 2, 5; valid 1 (MED), 5 (REA)
    assert counts(ka, "SORTIE") == (5, 4, 2)  # 2 h and exactly 72 h valid; -5 min and 80 h not
    assert counts(ka, "NAISSANCE") == (5, 4, 2)  # 1890 (136 years) and after ENTREE are not valid
    assert counts(ka, "PROVENANCE") == (5, 4, 2)  # 5 after 6 is incoherent, 9 is not a code
    assert counts(ka, "SEXE") == (5, 5, 4)  # X is not a code
    assert counts(ka, "GRAVITE") == (5, 4, 3)
    assert counts(ka, "CP") == (5, 2, 1)
    assert counts(ka, "MODE_SORTIE") == (5, 5, 5)
    assert counts(kb, "DESTINATION") == (0, 0, 0) and indicators[kb]["DESTINATION"].exhaustivite is None
    assert counts(None, "DP") == (5, 4, 3)  # the region: a's and b's
    assert counts(None, "DESTINATION") == (3, 2, 1)

    assert stays[ka].with_sortie == 4 and stays[ka].kept == 2  # 2 h and 72 h
    assert stays[ka].bins == (0, 0, 1, 0, 0, 0, 0, 0, 1)  # 120 min opens the 2–4 h class
    assert stays[ka].median_minutes == pytest.approx((120 + 72 * 60) / 2)
    assert stays[kb].with_sortie == 0 and stays[kb].median_minutes is None
    assert ages == {("M", 3): 1, ("F", 8): 1, ("F", None): 1, ("I", None): 3}
    assert ccmu[None] == {"2": 1, "P": 1, "?": 1, "": 1, "4": 1, "1": 1}
    assert ccmu[ka] == {"2": 1, "P": 1, "?": 1, "": 1, "4": 1}


# --- the report -------------------------------------------------------------------------------------------

def test_report_is_self_contained_french_html_with_every_section(db, region, template):
    with psycopg.connect(db, autocommit=True) as conn:
        outcome = ars_export.export_daily(conn, region, EXPORT_DAY)
    text = Path(outcome.sends[2].local_path).read_text(encoding="utf-8")
    doc = lxml_html.document_fromstring(text)
    assert doc.get("lang") == "fr"
    for section in ("activite", "qualite", "ccmu", "ages", "durees", "fichiers", "delais"):
        assert doc.get_element_by_id(section).tag == "section"
    assert not doc.xpath("//script | //iframe | //link | //img")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)  # nothing fetched from outside
    # Region chart, one small chart per live establishment, CCMU, pyramid, stays, timeliness.
    assert len(doc.xpath("//svg")) == 1 + len(LIVE) + 3 + 1
    assert "RPU" in doc.findtext(".//h1") and "16/03/2026" in doc.findtext(".//h1")

    # Names are escaped text, never markup.
    assert TRICKY_NAME in doc.text_content()
    assert not doc.xpath("//urgences")
    # The onboarding establishment is named as excluded, and has no row.
    rows = doc.xpath("(//section[@id='qualite']//table)[1]/tbody/tr")
    assert len(rows) == 1 + len(LIVE)
    assert ONBOARDING["finess"] not in "".join(r.text_content() for r in rows)
    assert ONBOARDING["finess"] in doc.text_content()

    # Region row: total visits, coloured cells (the generated data is complete: green).
    region_row = rows[0]
    assert region_row.xpath("td")[1].text_content().replace("\u202f", "") == str(template["visits"])
    assert region_row.xpath("td")[2].get("class") == "ok"
    assert all(td.get("class") in ("ok", "moyen", "faible", "na") for td in region_row.xpath("td")[2:])

    # Files received: the duplicate counted for establishment 0, the rejected file for establishment 2.
    files = {tr.xpath("td")[0].text_content(): [td.text_content() for td in tr.xpath("td")[1:]]
             for tr in doc.xpath("//section[@id='fichiers']//tbody/tr")}
    by_finess = {next(f for f in (e["finess"] for e in LIVE) if f in name): cells for name, cells in files.items()}
    # received, loaded, duplicate, superseded, held, rejected, revoked, loading, rejected visits, last received
    assert by_finess[LIVE[0]["finess"]][:8] == ["3", "2", "1", "0", "0", "0", "0", "0"]
    assert by_finess[LIVE[2]["finess"]][:8] == ["2", "1", "0", "0", "0", "1", "0", "0"]
    assert by_finess[LIVE[2]["finess"]][9] == "15/03/2026 03:00"


def report_of(outcome) -> lxml_html.HtmlElement:
    return lxml_html.document_fromstring(Path(outcome.sends[2].local_path).read_text(encoding="utf-8"))


def test_report_charts_are_matplotlib_svg_inline_with_french_text(db, region):
    with psycopg.connect(db, autocommit=True) as conn:
        doc = report_of(ars_export.export_daily(conn, region, EXPORT_DAY))
    charts = doc.xpath("//svg")
    assert charts
    for chart in charts:  # drawn by matplotlib (its figure group), inline, titled for screen readers
        assert chart.xpath("./g[substring-after(@id, '-') = 'figure_1']/g[contains(@id, '-axes_')]")
        assert chart[0].tag == "title" and chart[0].text.strip()
        assert chart.getparent().tag in ("section", "figure")
    ids = doc.xpath("//@id")  # several charts on one page: no id twice, every reference resolves
    assert len(ids) == len(set(ids))
    references = {ref.split("#", 1)[1].rstrip(")") for ref in doc.xpath("//svg//@*[contains(., '#')]")
                  if ref.startswith(("#", "url(#"))}
    assert references and references <= set(ids)
    texts = {section: " ".join(doc.get_element_by_id(section).xpath(".//svg//text/text()"))
             for section in ("activite", "ccmu", "ages", "durees")}
    assert "jour sans aucun RPU" in texts["activite"]  # the legend, as text (svg.fonttype none)
    assert "non renseignée" in texts["ccmu"] and "CCMU P" in texts["ccmu"]
    assert {"Hommes", "Femmes", "100 ans et +"} <= set(doc.get_element_by_id("ages").xpath(".//svg//text/text()"))
    assert "48–72 h" in texts["durees"]


def test_a_script_in_an_establishment_name_stays_text(db, region):
    script = '<script>alert("rpu")</script>'
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE establishment SET name = %s WHERE finess = %s", (script, LIVE[1]["finess"]))
        outcome = ars_export.export_daily(conn, region, EXPORT_DAY)
    text = Path(outcome.sends[2].local_path).read_text(encoding="utf-8")
    assert "<script" not in text and "&lt;script&gt;" in text
    doc = lxml_html.document_fromstring(text)
    assert not doc.xpath("//script")
    assert script in doc.get_element_by_id("qualite").text_content()
    assert any(script in title for title in doc.xpath("//svg/title/text()"))  # the chart's title too


def test_days_before_an_establishment_s_first_file_are_not_a_break_in_its_flow(db, region):
    """LIVE[1] and LIVE[2] sent their first file from FIRST_DAY: the six weeks of the window before
    it are not days without RPU, and their mean is over the two weeks they sent. A day without RPU
    after it (LIVE[1], 10 March) is one. LIVE[0] sent a file in December: its weeks without any
    RPU in the window are a real break."""
    gap = date(2026, 3, 10)
    with psycopg.connect(db, autocommit=True) as conn:
        # Behind the loader's back: the timeliness of these 33 visits must go too, or the export's
        # delays section would still count them (1 262 RPU against 1 229 rows in the CSV).
        for table in ("rpu", "visit_timeliness"):
            conn.execute(sql.SQL("DELETE FROM {} WHERE finess = %s AND entree::date = %s").format(sql.Identifier(table)),
                         (LIVE[1]["finess"], gap))
        period = ars_export.ExportPeriod(EXPORT_DAY)
        paris_midnight = datetime(2026, 1, 19, tzinfo=pendulum.timezone("Europe/Paris"))
        data = ars_report.collect(conn, start=period.start, end=period.end, window_start=period.window_start,
                                  files_since=paris_midnight, files_until=paris_midnight + timedelta(weeks=9),
                                  statuses=("live",))
        outcome = ars_export.export_daily(conn, region, EXPORT_DAY)
        sent = dict(conn.execute("SELECT finess::text, count(*) FROM rpu WHERE entree >= %s AND entree < %s"
                                 " GROUP BY finess", (FIRST_DAY, EXPORT_DAY)).fetchall())
    _region, lines = ars_report.activity(data)
    by_finess = {next(e["finess"] for e in LIVE if e["finess"] in line.label): line for line in lines}
    fresh, gapped, older = by_finess[LIVE[2]["finess"]], by_finess[LIVE[1]["finess"]], by_finess[LIVE[0]["finess"]]
    assert fresh.first_day == gapped.first_day == FIRST_DAY and older.first_day == date(2025, 12, 29)
    assert fresh.missing_days == [] and gapped.missing_days == [gap]
    assert older.missing_days == [period.window_start + timedelta(days=i) for i in range(42)]
    assert fresh.mean == pytest.approx(sent[LIVE[2]["finess"]] / 14)  # not over the 56 days of the window
    assert gapped.mean == pytest.approx(sent[LIVE[1]["finess"]] / 14)

    doc = report_of(outcome)
    figures = {next(e["finess"] for e in LIVE if e["finess"] in f.findtext("figcaption")): f
               for f in doc.xpath("//section[@id='activite']//figure")}
    red_dots = {finess: len(f.xpath(".//g[contains(@id, 'jours-sans-rpu')]//use")) for finess, f in figures.items()}
    assert red_dots == {LIVE[2]["finess"]: 0, LIVE[1]["finess"]: 1, LIVE[0]["finess"]: 42}
    caption = " ".join(figures[LIVE[2]["finess"]].findtext("figcaption").split())
    assert f"moyenne {round(fresh.mean)} RPU/jour" in caption and "premier fichier à partir du 02/03/2026" in caption
    assert "sans RPU" not in caption


def delays_totals(doc: lxml_html.HtmlElement) -> dict[str, int]:
    """The RPU column of the delays section: {label: count}, the region under "Région"."""
    return {tr.xpath("td")[0].text_content(): int(tr.xpath("td")[1].text_content().replace("\u202f", ""))
            for tr in doc.xpath("//section[@id='delais']//tbody/tr")}


def test_the_delays_section_counts_the_csv_s_visits_of_its_weeks_even_after_revocations(db, region, template,
                                                                                         tmp_path):
    """The ARS reads the delays section and the CSV. Over the same ENTREE days and statuses they
    count the same visits, also after the ORU revoked files: a newer extract of 10/03 (LIVE[1]),
    whose day is back to the first file, and the only file of 20/02 (LIVE[2]), whose day is
    emptied (before the fix the revoked visits stayed counted in the delays). The legitimate
    difference is the period: the section covers the 8 weeks of the window, the CSV the year
    (a file of 10/01 is in the CSV only), which its caption says."""
    with psycopg.connect(db, autocommit=True) as conn:
        revoked = []
        for name, e, day, seed in (("newer.xml", LIVE[1], date(2026, 3, 10), 21), ("alone.xml", LIVE[2], date(2026, 2, 20), 22)):
            write_oscour_file(tmp_path / name, e["finess"], 0, day, day, visits_per_day=25, seed=seed,
                              extract=datetime(2026, 3, 16, 4, 0))
            result = load(conn, tmp_path / name, e["finess"])
            assert result.status == "loaded" and result.loaded_records > 0
            revoked.append(result.received_file_id)
        write_oscour_file(tmp_path / "january.xml", LIVE[0]["finess"], 0, date(2026, 1, 10), date(2026, 1, 10),
                          visits_per_day=12, seed=23)
        january = load(conn, tmp_path / "january.xml", LIVE[0]["finess"]).loaded_records
        for file_id in revoked:
            revoke_file(conn, file_id, by="oru", reason="fichier envoyé par erreur")
        outcome = ars_export.export_daily(conn, region, EXPORT_DAY)
    period = ars_export.ExportPeriod(EXPORT_DAY)
    frame = pd.read_csv(outcome.sends[0].local_path, sep=";", encoding="utf-8-sig", dtype=str, keep_default_na=False)
    entries = pd.to_datetime(frame["date_entree"], format="%d/%m/%Y %H:%M")
    in_window = frame[entries >= pd.Timestamp(period.window_start)]
    doc = report_of(outcome)
    totals = delays_totals(doc)
    assert totals["Région"] == len(in_window) == template["visits"]  # 1 262: the revoked days are as loaded
    for e in LIVE:
        [count] = [v for label, v in totals.items() if e["finess"] in label]
        assert count == (in_window["finess"] == e["finess"]).sum()
    assert len(frame) == totals["Région"] + january and january > 0  # the year, not the window
    caption = " ".join(doc.get_element_by_id("delais-perimetre").text_content().split())
    assert "entre le 19/01/2026 et le 15/03/2026" in caption and "du 01/01/2026 au 15/03/2026" in caption
    assert "ce sont exactement les lignes du fichier rpu_*.csv" in caption


# --- the DAG -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ars_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(Path(__file__).resolve().parent.parent / "dags" / "rpu_ars_daily.py"))
    assert not dagbag.import_errors
    dag = dagbag.dags["rpu_ars_daily"]
    for task in dag.tasks:
        task.retries = 0  # dag.test() would otherwise wait for the retry delay
    return dag


def test_dag_is_daily_paris_time_one_run_at_a_time(ars_dag):
    assert ars_dag.timetable.expression == "0 6 * * *"
    assert getattr(ars_dag.timetable.timezone, "name", ars_dag.timetable.timezone) == "Europe/Paris"
    assert ars_dag.catchup is False and ars_dag.max_active_runs == 1
    assert {"rpu", "ars"} <= set(ars_dag.tags)
    assert "En cas d'échec" in ars_dag.doc_md
    assert ars_dag.task_dict["export"].downstream_task_ids == {"deliver", "heartbeat"}


@pytest.fixture
def dag_env(db, region, monkeypatch, clean_sftp, mailbox):
    monkeypatch.setenv("RPU_REGION_CONFIG", str(region.path))
    monkeypatch.setenv("AIRFLOW_CONN_RPU_DB", json.dumps(postgres_airflow_connection(db)))
    return db


def ars_sends(url: str) -> list[sends.Send]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.class_row(sends.Send)) as cursor:
        return cursor.execute("SELECT * FROM send WHERE destination = 'ars' ORDER BY id").fetchall()


def paris(day: date, hour: int):
    return pendulum.datetime(day.year, day.month, day.day, hour, tz="Europe/Paris")


def test_dag_run_delivers_the_four_files_to_the_ars_sftp(ars_dag, dag_env, clean_sftp, template):
    run = ars_dag.test(logical_date=paris(EXPORT_DAY, 6))
    assert run.state == "success"
    journal = ars_sends(dag_env)
    assert [(s.file_name, s.status, s.attempts) for s in journal] == [
        ("rpu_GE_2026_20260316.csv", "sent", 1), ("rpu_GE_2026_20260316.parquet", "sent", 1),
        ("rapport_GE_20260316.html", "sent", 1), ("delais_GE_2026_20260316.csv", "sent", 1)]
    assert sorted(p.name for p in clean_sftp.root.iterdir()) == sorted(s.file_name for s in journal)  # no .part
    for send in journal:
        assert hashlib.sha256((clean_sftp.root / send.file_name).read_bytes()).hexdigest() == send.sha256
    assert pq.read_metadata(clean_sftp.root / "rpu_GE_2026_20260316.parquet").num_rows == template["visits"]


def test_dag_with_the_ars_server_down_fails_then_the_next_run_delivers_the_same_files(
        ars_dag, dag_env, clean_sftp, mailbox):
    clean_sftp.stop()
    run = ars_dag.test(logical_date=paris(EXPORT_DAY, 6))
    assert run.state == "failed"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"export": "success", "deliver": "failed",
                                                                         "heartbeat": "upstream_failed"}
    failed = ars_sends(dag_env)
    assert [(s.status, s.attempts) for s in failed] == [("failed", 1)] * 4
    assert all("injoignable" in s.remote_answer for s in failed)
    assert not list(clean_sftp.root.iterdir())
    assert any("rpu_ars_daily.deliver" in m.message["Subject"] for m in mailbox.received)  # the ORU is told
    built_files = {s.local_path: (os.stat(s.local_path).st_mtime_ns, s.sha256) for s in failed}

    clean_sftp.start()
    run = ars_dag.test(logical_date=paris(EXPORT_DAY, 9))  # a later run of the same day
    assert run.state == "success"
    delivered = ars_sends(dag_env)
    assert [s.id for s in delivered] == [s.id for s in failed]  # no new send: nothing rebuilt
    assert [(s.status, s.attempts) for s in delivered] == [("sent", 2)] * 4
    assert {s.local_path: (os.stat(s.local_path).st_mtime_ns, s.sha256) for s in delivered} == built_files
    assert sorted(p.name for p in clean_sftp.root.iterdir()) == sorted(s.file_name for s in delivered)
