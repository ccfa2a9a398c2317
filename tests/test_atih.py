"""rpu_atih_monthly: the cumulative SYRIUS file to ATIH, the Syrius upload, the reconciliation.

Real PostgreSQL (a fresh database per test), a local Syrius server following the documented
two-step protocol (http.server on 127.0.0.1), the real SFTP server for the SFTP drop, the DAG
run with ``dag.test()``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import stat
import threading
import zipfile
from datetime import UTC, date, datetime
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import write_region_file
from lxml import etree
from psycopg.rows import class_row

from rpu.cli.build import register_build_commands
from rpu.config import region as region_config
from rpu.flows import atih
from rpu.formats.syrius import CodegeoTable
from rpu.formats.validation import inspect_file
from rpu.sandbox import generator
from rpu.store import extract, registry, sends
from rpu.store.loader import load_file

REPO_ROOT = Path(__file__).resolve().parent.parent
ALPHA, BRAVO, PARALLEL = generator.demo_establishments(3, seed=5)
STATUSES = {ALPHA["finess"]: "live", BRAVO["finess"]: "live", PARALLEL["finess"]: "parallel"}
USER, PASSWORD = "oru-test", "s3cret-épmsi"


# --------------------------------------------------------------------------- a Syrius server


class SyriusStub:
    """ATIH's upload as documented (rpu-format.md §4): multipart POSTs; check=1 (no file) is
    answered OK when the account and the FINESS are known; check=0 carries the zip in theFile
    and is refused (KO) unless a check=1 of the same establishment and month came first and
    the zip holds exactly rpuCount PATIENT in a SYRIUS document of that cumulative period."""

    def __init__(self, known_finess: set[str]):
        self.known_finess = set(known_finess)
        self.requests: list[dict] = []  # every POST: its fields (no password) and file name
        self.accepted: list[dict] = []  # accepted deposits: fields and PATIENT count
        self._checked: set[tuple] = set()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = stub.answer(self.path, self.headers.get("Content-Type", ""), body)
                data = answer.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/syrius/upload"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, content_type: str, body: bytes) -> tuple[int, str]:
        if path != "/syrius/upload":
            return 404, "not found"
        if not content_type.startswith("multipart/form-data"):
            return 400, "KO : multipart/form-data attendu"
        message = BytesParser(policy=policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                files[name] = (part.get_filename(), part.get_payload(decode=True))
            else:
                fields[name] = part.get_payload(decode=True).decode("utf-8")
        with self._lock:
            self.requests.append({**{k: v for k, v in fields.items() if k != "userPwd"},
                                  "file": files.get("theFile", (None,))[0]})
        if (fields.get("userId"), fields.get("userPwd")) != (USER, PASSWORD):
            return 200, "KO : identifiant ou mot de passe refusé"
        missing = {"check", "year", "period", "finess", "rpuCount", "ordre"} - fields.keys()
        if missing:
            return 200, f"KO : champs manquants {sorted(missing)}"
        if fields["finess"] not in self.known_finess:
            return 200, f"KO : FINESS {fields['finess']} inconnu de l'ATIH"
        key = (fields["finess"], fields["ordre"], fields["year"], fields["period"])
        if fields["check"] == "1":
            if "theFile" in files:
                return 200, "KO : pas de fichier au contrôle"
            with self._lock:
                self._checked.add(key)
            return 200, "OK"
        if key not in self._checked or "theFile" not in files:
            return 200, "KO : dépôt sans contrôle préalable ou sans fichier"
        try:
            with zipfile.ZipFile(io.BytesIO(files["theFile"][1])) as zipped:
                [entry] = zipped.namelist()
                root = etree.fromstring(zipped.read(entry))
        except (zipfile.BadZipFile, ValueError, etree.XMLSyntaxError) as error:
            return 200, f"KO : fichier illisible ({error})"
        year, month = int(fields["year"]), int(fields["period"])
        expected_period = (f"01/01/{year}", atih.last_day(year, month).strftime("%d/%m/%Y"))
        if root.tag != "SYRIUS" or (root.findtext("ETABLISSEMENT/DATEDEBUT"),
                                    root.findtext("ETABLISSEMENT/DATEFIN")) != expected_period:
            return 200, "KO : schéma ou période"
        count = len(root.findall("PASSAGES/PATIENT"))
        if count != int(fields["rpuCount"]):
            return 200, f"KO : rpuCount={fields['rpuCount']} mais {count} RPU dans le fichier"
        with self._lock:
            self.accepted.append({**{k: v for k, v in fields.items() if k != "userPwd"}, "patients": count,
                                  "entry": entry})
        return 200, f"OK : {count} RPU reçus"


@pytest.fixture
def syrius(monkeypatch):
    stub = SyriusStub({ALPHA["finess"], BRAVO["finess"], PARALLEL["finess"]})
    # URI-form connection: the path goes to the connection's schema.
    monkeypatch.setenv("AIRFLOW_CONN_ATIH_SYRIUS", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": stub.server.server_port, "schema": "syrius/upload",
        "login": USER, "password": PASSWORD}))
    yield stub
    stub.stop()


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def codegeo_csv(tmp_path) -> Path:
    path = tmp_path / "codegeo.csv"
    path.write_text("cp;codegeo\n67000;67000\n67100;67100\n67200;67200\n", encoding="utf-8")
    return path


def write_region(tmp_path, monkeypatch, codegeo_csv, *, delivery: str = "http") -> region_config.Region:
    establishments = [{"finess": e["finess"], "ordre": 0, "name": e["name"], "status": STATUSES[e["finess"]]}
                      for e in (ALPHA, BRAVO, PARALLEL)]
    return write_region_file(tmp_path, monkeypatch, establishments=establishments, schedule={"atih_day": 10},
                             atih={"delivery": delivery},
                             paths={"exports_dir": str(tmp_path / "exports"), "codegeo_csv": str(codegeo_csv)})


@pytest.fixture
def region(tmp_path, monkeypatch, codegeo_csv) -> region_config.Region:
    return write_region(tmp_path, monkeypatch, codegeo_csv)


def load(conn, tmp_path, establishment, start: date, end: date, *, seed: int = 1, per_day: float = 6) -> None:
    path = tmp_path / f"O{establishment['finess']}_{start:%Y%m%d}_{seed}.xml"
    generator.write_oscour_file(path, establishment["finess"], 0, start, end, visits_per_day=per_day, seed=seed)
    assert load_file(conn, path, received_at=datetime(2030, 1, 1)).status == "loaded"  # the tests' clock


def load_year(conn, tmp_path) -> None:
    """Data in 2026 (three weeks spread over the year) and January 2027, for every establishment."""
    for i, establishment in enumerate((ALPHA, BRAVO, PARALLEL)):
        load(conn, tmp_path, establishment, date(2026, 2, 3), date(2026, 2, 9), seed=10 * i + 1)
        load(conn, tmp_path, establishment, date(2026, 11, 24), date(2026, 11, 30), seed=10 * i + 2)
        load(conn, tmp_path, establishment, date(2026, 12, 25), date(2026, 12, 31), seed=10 * i + 3)
        load(conn, tmp_path, establishment, date(2027, 1, 2), date(2027, 1, 8), seed=10 * i + 4)


def atih_sends(conn) -> list[sends.Send]:
    with conn.cursor(row_factory=class_row(sends.Send)) as cursor:
        return cursor.execute("SELECT * FROM send WHERE destination = 'atih' ORDER BY id").fetchall()


def visits_in(conn, establishment, start: date, end: date) -> int:
    return extract.count_visits(conn, establishment["finess"], 0, start, end)


def read_csv(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM, for spreadsheets
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    for task in dag.tasks:
        task.retries = 0  # dag.test() would otherwise wait for the retry delays
    return dag


def states(run) -> dict:
    """State per task; a mapped task's instances under ``task_id[FINESS]``."""
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index}]": str(ti.state)
            for ti in run.get_task_instances()}


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(("today", "atih_day", "year", "month", "expected"), [
    (date(2027, 1, 12), 10, None, None, (2026, 12, False)),  # January sends December of the year before
    (date(2027, 3, 10), 10, None, None, (2027, 2, False)),
    (date(2027, 3, 9), 10, None, None, None),  # before atih_day: nothing yet
    (date(2027, 3, 2), 10, 2026, 11, (2026, 11, True)),  # a re-run, any day
    (date(2027, 3, 1), 10, 2027, 2, (2027, 2, True)),
])
def test_plan_month(today, atih_day, year, month, expected):
    plan = atih.plan_month(today, atih_day, year, month)
    assert (plan and (plan.year, plan.month, plan.forced)) == expected
    if plan:
        assert plan.start == date(plan.year, 1, 1) and plan.end == atih.last_day(plan.year, plan.month)


@pytest.mark.parametrize(("year", "month", "message"), [
    (2026, None, "ensemble"), (None, 3, "ensemble"), (2027, 3, "pas terminé"), (2026, 13, "Mois invalide"),
])
def test_plan_month_refuses(year, month, message):
    with pytest.raises(ValueError, match=message):
        atih.plan_month(date(2027, 3, 15), 10, year, month)


def test_answers_and_urls():
    assert atih.accepted("OK") and atih.accepted("OK : 12 RPU reçus") and atih.accepted("ok;ok OK")
    assert not atih.accepted("KO : FINESS inconnu") and not atih.accepted("NOK") and not atih.accepted("")
    assert atih.syrius_url("http", "127.0.0.1", "syrius/upload", 8080) == "http://127.0.0.1:8080/syrius/upload"
    assert atih.syrius_url("https", "epmsi.example.fr", "appli/upload", None) == "https://epmsi.example.fr/appli/upload"
    assert atih.syrius_url("http", "https://epmsi.example.fr", "https", None, {"endpoint": "/up"}) == \
        "https://epmsi.example.fr/up"
    assert atih.syrius_url("generic", "h", None, None, {"url": "https://x/y?z=1"}) == "https://x/y?z=1"


# --------------------------------------------------------------------------- the use case


def test_month_file_is_cumulative_anonymised_and_counted_by_month(conn, region, tmp_path, codegeo_csv):
    registry.sync(conn, region, author="test")
    load_year(conn, tmp_path)
    plan = atih.plan_month(date(2027, 1, 12), 10)
    outcome = atih.build_monthly(conn, plan, CodegeoTable.load(codegeo_csv), tmp_path / "out",
                                 now=datetime(2027, 1, 12, 6, 0, 0))
    assert outcome.errors == [] and outcome.without_data == []
    assert {(s.finess, s.year, s.month, s.kind, s.status) for s in outcome.built} == {
        (ALPHA["finess"], 2026, 12, "monthly", "built"), (BRAVO["finess"], 2026, 12, "monthly", "built")}
    send = next(s for s in outcome.built if s.finess == ALPHA["finess"])
    year_visits = visits_in(conn, ALPHA, date(2026, 1, 1), date(2026, 12, 31))
    assert send.visit_count == year_visits > 0  # January 2027 left out, all of 2026 in
    assert (send.period_start, send.period_end) == (date(2026, 1, 1), date(2026, 12, 31))
    assert send.file_name == f"{ALPHA['finess']}_020270112060000.zip"
    assert stat.S_IMODE(Path(send.local_path).stat().st_mode) == 0o600

    with zipfile.ZipFile(send.local_path) as zipped:
        [entry] = zipped.namelist()
        xml = zipped.read(entry)
    assert entry == f"{ALPHA['finess']}_020270112060000.rpu.xml"
    for forbidden in (b"<CP>", b"<COMMUNE>", b"<NAISSANCE>"):
        assert forbidden not in xml  # anonymised
    assert b"<CODEGEO>67" in xml
    report = inspect_file(io.BytesIO(xml), "syrius.xml", roots=("SYRIUS",))
    assert report.records == year_visits and report.header.root == "SYRIUS"

    months = dict(conn.execute("SELECT month, visits FROM atih_send_month WHERE send_id = %s", (send.id,)).fetchall())
    assert sorted(months) == list(range(1, 13))
    assert months[12] == visits_in(conn, ALPHA, date(2026, 12, 1), date(2026, 12, 31)) > 0
    assert months[2] > 0 and months[5] == 0 and sum(months.values()) == year_visits

    # The scheduled run again: journaled already, nothing built twice.
    again = atih.build_monthly(conn, plan, CodegeoTable.load(codegeo_csv), tmp_path / "out")
    assert again.built == [] and len(again.already_journaled) == 2


def test_syrius_refuses_a_wrong_count_and_the_answer_is_journaled(conn, region, tmp_path, codegeo_csv, syrius):
    registry.sync(conn, region, author="test")
    load_year(conn, tmp_path)
    atih.build_monthly(conn, atih.MonthPlan(2026, 12, True), CodegeoTable.load(codegeo_csv), tmp_path / "out")
    conn.execute("UPDATE send SET visit_count = visit_count + 1 WHERE finess = %s", (ALPHA["finess"],))
    results = atih.deliver(conn, atih.SyriusUpload(syrius.url, USER, PASSWORD))
    by_finess = {s.finess: s for s in results}
    assert by_finess[ALPHA["finess"]].status == "failed"
    assert "rpuCount" in by_finess[ALPHA["finess"]].remote_answer and "KO" in by_finess[ALPHA["finess"]].remote_answer
    assert by_finess[BRAVO["finess"]].status == "sent"
    assert [a["finess"] for a in syrius.accepted] == [BRAVO["finess"]]
    # The check step always comes first, with every documented part.
    first = syrius.requests[0]
    assert first["check"] == "1" and first["file"] is None
    assert {"userId", "year", "period", "finess", "rpuCount", "ordre"} <= first.keys()
    assert PASSWORD not in json.dumps([s.remote_answer for s in results])


def test_rpu_build_syrius_command(conn, db, region, tmp_path, codegeo_csv, capsys):
    registry.sync(conn, region, author="test")
    load_year(conn, tmp_path)
    parser = argparse.ArgumentParser(prog="rpu")
    register_build_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "manual.zip"
    args = parser.parse_args(["build", "syrius", "--finess", BRAVO["finess"], "--year", "2026", "--month", "11",
                              "--codegeo", str(codegeo_csv), "--database", db, "--output", str(out)])
    assert args.func(args) == 0
    with zipfile.ZipFile(out) as zipped:
        report = inspect_file(io.BytesIO(zipped.read(zipped.namelist()[0])), "x.xml", roots=("SYRIUS",))
    assert report.records == visits_in(conn, BRAVO, date(2026, 1, 1), date(2026, 11, 30)) > 0
    assert "RPU" in capsys.readouterr().out
    assert atih_sends(conn) == []  # a manual build journals nothing


# --------------------------------------------------------------------------- the DAG


def test_dag_parses_with_params_doc_and_schedule():
    dag = _dag("rpu_atih_monthly")
    assert "Syrius" in dag.doc_md and "En cas d'échec" in dag.doc_md and "Relancer un mois" in dag.doc_md
    assert set(dag.params.keys()) == {"year", "month"} and dag.max_active_runs == 1
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 6 * * *", "Europe/Paris")
    assert {t.task_id for t in dag.tasks} == {"plan_month", "list_establishments", "build_file", "deliver",
                                                "reconcile", "heartbeat"}
    assert dag.task_dict["build_file"].pool == "rpu_db"


def test_dag_january_run_then_month_reruns(airflow_db, conn, region, tmp_path, syrius, mailbox):
    registry.sync(conn, region, author="test")
    load_year(conn, tmp_path)
    dag = _dag("rpu_atih_monthly")

    # Before atih_day: nothing to do.
    run = dag.test(logical_date=datetime(2027, 1, 5, 5, 0, tzinfo=UTC))
    assert run.state == "success" and states(run)["plan_month"] == "skipped"
    assert atih_sends(conn) == [] and syrius.requests == []

    # The January run sends December of the year before: 1 Jan → 31 Dec 2026, live only.
    run = dag.test(logical_date=datetime(2027, 1, 12, 5, 0, tzinfo=UTC))
    assert run.state == "success", states(run)
    december = atih_sends(conn)
    assert {(s.finess, s.year, s.month, s.status) for s in december} == {
        (ALPHA["finess"], 2026, 12, "sent"), (BRAVO["finess"], 2026, 12, "sent")}
    for accepted in syrius.accepted:
        establishment = ALPHA if accepted["finess"] == ALPHA["finess"] else BRAVO
        assert (accepted["year"], accepted["period"]) == ("2026", "12")
        assert accepted["patients"] == visits_in(conn, establishment, date(2026, 1, 1), date(2026, 12, 31))
    assert [r["check"] for r in syrius.requests] == ["1", "0", "1", "0"]
    assert all("OK" in s.remote_answer for s in december)

    mail = mailbox.wait_for(lambda m: "ATIH 12/2026" in str(m["Subject"]))
    attachments = {part.get_filename(): part.get_content() for part in mail.iter_attachments()}
    assert set(attachments) == {"atih_rapprochement_2026-12.csv", "atih_vue_annuelle_2026.csv"}
    exports = tmp_path / "exports" / "rapprochement_atih"
    rows = read_csv(exports / "atih_rapprochement_2026-12.csv")
    assert rows[0][:5] == ["annee", "mois", "finess", "ordre", "etablissement"]
    alpha = next(r for r in rows[1:] if r[2] == ALPHA["finess"])
    alpha_december = visits_in(conn, ALPHA, date(2026, 12, 1), date(2026, 12, 31))
    assert alpha[5] == "1" and alpha[8] == "envoyé" and alpha[10] == str(alpha_december) and "OK" in alpha[12]
    year = read_csv(exports / "atih_vue_annuelle_2026.csv")
    header = year[0]
    alpha_year = next(r for r in year[1:] if r[0] == ALPHA["finess"])
    assert alpha_year[header.index("décembre fichiers")] == "1"
    assert alpha_year[header.index("décembre RPU")] == str(alpha_december)
    assert alpha_year[header.index("novembre fichiers")] == "0"
    assert year[-1][0] == "RÉGION"

    # The same scheduled day again: nothing twice.
    run = dag.test(logical_date=datetime(2027, 1, 12, 6, 0, tzinfo=UTC))
    assert run.state == "success" and states(run)["deliver"] == "skipped" and len(atih_sends(conn)) == 2

    # A past month re-run (November), then December again: new sends, the latest is shown.
    run = dag.test(logical_date=datetime(2027, 1, 13, 9, 0, tzinfo=UTC), run_conf={"year": 2026, "month": 11})
    assert run.state == "success", states(run)
    november = [s for s in atih_sends(conn) if s.month == 11]
    assert len(november) == 2 and all(s.status == "sent" for s in november)
    assert {s.visit_count for s in november if s.finess == BRAVO["finess"]} == {
        visits_in(conn, BRAVO, date(2026, 1, 1), date(2026, 11, 30))}
    run = dag.test(logical_date=datetime(2027, 1, 13, 10, 0, tzinfo=UTC), run_conf={"year": 2026, "month": 12})
    assert run.state == "success", states(run)
    rows = read_csv(exports / "atih_rapprochement_2026-12.csv")
    latest_december = max(s.id for s in atih_sends(conn) if s.finess == ALPHA["finess"] and s.month == 12)
    alpha = next(r for r in rows[1:] if r[2] == ALPHA["finess"] and r[1] == "12")
    assert alpha[5] == "2" and alpha[6] == str(latest_december)
    assert {r[1] for r in rows[1:]} == {"11", "12"}
    year = read_csv(exports / "atih_vue_annuelle_2026.csv")
    alpha_year = next(r for r in year[1:] if r[0] == ALPHA["finess"])
    assert alpha_year[year[0].index("décembre fichiers")] == "2"
    assert alpha_year[year[0].index("novembre fichiers")] == "1"

    # A month that is not over is refused before anything is built.
    run = dag.test(logical_date=datetime(2027, 1, 14, 9, 0, tzinfo=UTC), run_conf={"year": 2027, "month": 1})
    assert run.state == "failed" and states(run)["plan_month"] == "failed"
    assert not [s for s in atih_sends(conn) if s.year == 2027]


def test_dag_unknown_finess_is_refused_and_reported(airflow_db, conn, region, tmp_path, syrius, mailbox):
    registry.sync(conn, region, author="test")
    load_year(conn, tmp_path)
    syrius.known_finess.discard(BRAVO["finess"])
    run = _dag("rpu_atih_monthly").test(logical_date=datetime(2027, 2, 11, 5, 0, tzinfo=UTC))
    assert run.state == "failed"
    assert states(run) == {"plan_month": "success", "list_establishments": "success",
                           f"build_file[{ALPHA['finess']}]": "success", f"build_file[{BRAVO['finess']}]": "success",
                           "deliver": "failed", "reconcile": "failed", "heartbeat": "upstream_failed"}
    by_finess = {s.finess: s for s in atih_sends(conn)}
    assert (by_finess[ALPHA["finess"]].status, by_finess[ALPHA["finess"]].month) == ("sent", 1)
    bravo = by_finess[BRAVO["finess"]]
    assert bravo.status == "failed" and "inconnu" in bravo.remote_answer and bravo.sent_at is None
    # Refused at the check: the file itself was never posted.
    assert [r["check"] for r in syrius.requests if r["finess"] == BRAVO["finess"]] == ["1"]
    # The reconciliation still went to the ORU, with ATIH's answer.
    mail = mailbox.wait_for(lambda m: "ATIH 01/2027" in str(m["Subject"]))
    assert "non accepté" in str(mail["Subject"]) and "inconnu" in mail.get_body().get_content()


def test_dag_sftp_drop(airflow_db, conn, tmp_path, monkeypatch, codegeo_csv, clean_sftp, mailbox):
    region = write_region(tmp_path, monkeypatch, codegeo_csv, delivery="sftp")
    monkeypatch.setenv("AIRFLOW_CONN_ATIH_SYRIUS", json.dumps(
        {**clean_sftp.airflow_connection(), "extra": {**clean_sftp.airflow_connection()["extra"], "path": "atih"}}))
    registry.sync(conn, region, author="test")
    load_year(conn, tmp_path)
    run = _dag("rpu_atih_monthly").test(logical_date=datetime(2027, 1, 12, 5, 0, tzinfo=UTC))
    assert run.state == "success", states(run)
    sent = atih_sends(conn)
    assert {s.status for s in sent} == {"sent"} and len(sent) == 2
    assert sorted(p.name for p in (clean_sftp.root / "atih").iterdir()) == sorted(s.file_name for s in sent)

    # A week after their delivery, the local zips go (the next day's run builds nothing new); the journal stays.
    assert all(Path(s.local_path).exists() for s in sent)
    conn.execute("UPDATE send SET sent_at = now() - interval '8 days'")
    run = _dag("rpu_atih_monthly").test(logical_date=datetime(2027, 1, 13, 5, 0, tzinfo=UTC))
    assert states(run)["deliver"] == "skipped", states(run)
    assert not any(Path(s.local_path).exists() for s in sent)
    assert [(s.id, s.status) for s in atih_sends(conn)] == [(s.id, "sent") for s in sent]


def test_reconciliation_csv_is_owner_only_even_over_a_leftover_part_file(tmp_path):
    target = tmp_path / "atih_rapprochement_2026-03.csv"
    leftover = tmp_path / f".{target.name}.part"
    leftover.write_text("interrompu")
    leftover.chmod(0o644)
    atih._csv(target, ["finess", "ordre"], [["670780691", 0]])
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"\xef\xbb\xbffiness;ordre\r\n670780691;0\r\n"
    assert not leftover.exists()


def test_year_view_totals_and_summary_e_mail_from_the_journal(conn, region, tmp_path, codegeo_csv, syrius):
    """November then December sent, December rebuilt for both and refused for ALPHA: the year
    view counts the files ATIH accepted and the RPU of the latest; the e-mail says what failed."""
    registry.sync(conn, region, author="test")
    load_year(conn, tmp_path)
    codegeo = CodegeoTable.load(codegeo_csv)
    for month in (11, 12):
        atih.build_monthly(conn, atih.MonthPlan(2026, month, True), codegeo, tmp_path / "out")
    atih.deliver(conn, atih.SyriusUpload(syrius.url, USER, PASSWORD))
    atih.build_monthly(conn, atih.MonthPlan(2026, 12, True), codegeo, tmp_path / "out")
    conn.execute("UPDATE send SET visit_count = visit_count + 1 WHERE finess = %s AND status = 'built'",
                 (ALPHA["finess"],))
    atih.deliver(conn, atih.SyriusUpload(syrius.url, USER, PASSWORD))
    plan = atih.MonthPlan(2026, 12, False)
    reconciliation = atih.write_reconciliation(conn, plan, tmp_path / "rapprochement")

    year = read_csv(reconciliation.year_csv)
    header, body = year[0], {row[0]: row for row in year[1:]}
    assert header[:5] == ["finess", "ordre", "etablissement", "janvier fichiers", "janvier RPU"] and len(header) == 27
    assert set(body) == {ALPHA["finess"], BRAVO["finess"], "RÉGION"}  # PARALLEL is not sent to ATIH
    december = {e["finess"]: visits_in(conn, e, date(2026, 12, 1), date(2026, 12, 31)) for e in (ALPHA, BRAVO)}
    for finess, files in ((ALPHA["finess"], "1"), (BRAVO["finess"], "2")):  # ALPHA's rebuild was refused
        assert body[finess][header.index("décembre fichiers")] == files
        assert body[finess][header.index("décembre RPU")] == str(december[finess])
        assert body[finess][header.index("mai fichiers")] == "0"
    region_row = body["RÉGION"]
    assert region_row[:3] == ["RÉGION", "", "total"]
    assert region_row[3:] == [str(sum(int(body[f][i]) for f in (ALPHA["finess"], BRAVO["finess"])))
                              for i in range(3, 27)]  # totals, whole numbers
    assert region_row[header.index("décembre fichiers")] == "3"

    subject, text = atih.summary_text(plan, reconciliation.rows, region.name)
    assert subject == "[RPU] ATIH 12/2026 : 1 fichier(s) accepté(s), 1 non accepté(s)"
    assert text.startswith("Envoi mensuel à l'ATIH (Syrius) Région de test — fichiers cumulés du 01/01/2026 au "
                           "31/12/2026.\n")
    alpha = next(line for line in text.splitlines() if line.startswith(f"- {ALPHA['finess']}/0 "))
    assert " : en échec, " in alpha and "KO : rpuCount=" in alpha
    assert f"{december[ALPHA['finess']]} RPU du mois" in alpha
    assert "Fichiers non acceptés" in text and text.endswith("aux exécutions suivantes.\n")

    subject, text = atih.summary_text(atih.MonthPlan(2026, 10, False), reconciliation.rows)
    assert subject == "[RPU] ATIH 10/2026 : 0 fichier(s) accepté(s)"
    assert "Envoi mensuel à l'ATIH (Syrius) — " in text and "- aucun fichier pour ce mois." in text
    assert "non accepté" not in text
