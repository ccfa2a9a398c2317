"""rpu_ingest: whole runs with dag.test() against a real SFTP server, PostgreSQL and SMTP sink."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import date, datetime
from pathlib import Path

import psycopg
import pytest

from rpu.config import region as region_config
from rpu.flows.ingest import SftpInbox, run_ingest
from rpu.sandbox.generator import demo_establishments, write_oscour_file
from rpu.sandbox.local_services import postgres_airflow_connection
from rpu.store.db import migrate

REPO = Path(__file__).resolve().parent.parent
ESTABLISHMENTS = demo_establishments(20, seed=5)
END = date(2026, 11, 26)
START = date(2026, 11, 20)
OPERATOR = "oru-operateur@example.org"


@pytest.fixture
def region_file(tmp_path, monkeypatch):
    establishments = [
        {"finess": e["finess"], "ordre": 0, "name": e["name"], "legal_finess": e["legal_finess"], "status": "live",
         "it_contacts": [f"dsi-{e['finess']}@example.org"]}
        for e in ESTABLISHMENTS
    ]
    path = tmp_path / "region.toml"
    path.write_text(region_config.render(code="TEST", name="Région de test", operator_emails=[OPERATOR],
                                         ars_emails=["ars@example.org"], establishments=establishments))
    monkeypatch.setenv("RPU_REGION_CONFIG", str(path))
    return path


@pytest.fixture
def regional_db(fresh_database_url, monkeypatch):
    url = fresh_database_url()
    monkeypatch.setenv("AIRFLOW_CONN_RPU_DB", json.dumps(postgres_airflow_connection(url)))
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


@pytest.fixture(scope="module")
def ingest_dag():
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    dag = dagbag.dags["rpu_ingest"]
    for task in dag.tasks:  # a failure must show at once in a test, not after the retries' backoff
        task.retries = 0
    return dag


def run(dag):
    return dag.test(logical_date=datetime.now().astimezone())


def task_states(dag_run) -> dict:
    """State per task; a mapped task's instances under ``task_id[FINESS]``."""
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index}]": ti.state
            for ti in dag_run.get_task_instances()}


def drop(sftp_root: Path, folder: str, name: str, *, finess: str | None = None, age: int = 600, **kwargs) -> Path:
    """An establishment drops a file in its depot/ (``age`` seconds ago)."""
    depot = sftp_root / folder / "depot"
    depot.mkdir(parents=True, exist_ok=True)
    path = depot / name
    kwargs.setdefault("visits_per_day", 30)
    kwargs.setdefault("seed", int(folder[-4:]))
    write_oscour_file(path, finess or folder, 0, START, END, **kwargs)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def journal(url) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT sender, file_name, status, rule, loaded_records FROM received_file ORDER BY id").fetchall()


def test_a_night_of_twenty_establishments(airflow_db, region_file, regional_db, clean_sftp, mailbox, ingest_dag):
    root = clean_sftp.root
    for establishment in ESTABLISHMENTS:
        drop(root, establishment["finess"], f"RPU_{establishment['finess']}_20261127.xml")
    dag_run = run(ingest_dag)
    assert dag_run.state == "success", task_states(dag_run)
    # One load per establishment, named by its FINESS.
    assert task_states(dag_run) == {"sync_registry": "success", "list_files": "success",
                                    **{f"load[{e['finess']}]": "success" for e in ESTABLISHMENTS},
                                    "announce_new_data": "success", "summarize": "success", "heartbeat": "success"}
    rows = journal(regional_db)
    assert len(rows) == 20 and {r[2] for r in rows} == {"loaded"}
    for establishment in ESTABLISHMENTS:
        folder = root / establishment["finess"]
        assert list((folder / "depot").iterdir()) == []
        assert [p.name for p in (folder / "traites").iterdir()] == [f"RPU_{establishment['finess']}_20261127.xml"]
    with psycopg.connect(regional_db) as conn:
        visits = conn.execute("SELECT count(*) FROM rpu").fetchone()[0]
        registered = conn.execute("SELECT count(*) FROM establishment WHERE status = 'live'").fetchone()[0]
        changes = conn.execute("SELECT count(*), min(changed_by) FROM establishment_status_change").fetchone()
    assert visits == sum(r[4] for r in rows) > 0
    assert registered == 20 and changes[0] == 20 and "rpu_ingest" in changes[1]

    # Nothing new: the run is green, no load, the rest skipped ("nothing new" at a glance).
    dag_run = run(ingest_dag)
    assert dag_run.state == "success"
    assert task_states(dag_run) == {"sync_registry": "success", "list_files": "success", "load": "skipped",
                                    "announce_new_data": "skipped", "summarize": "skipped", "heartbeat": "success"}


def test_rejected_file_goes_to_rejetes_with_a_french_report(airflow_db, region_file, regional_db, clean_sftp,
                                                            mailbox, ingest_dag):
    root = clean_sftp.root
    finess = ESTABLISHMENTS[3]["finess"]
    drop(root, finess, "broken.xml", defects=["PERIOD_REVERSED"])
    drop(root, ESTABLISHMENTS[4]["finess"], "flags.xml", defects=["ENTREE_MISSING", "VALUE_NOT_IN_SET"])
    dag_run = run(ingest_dag)
    assert dag_run.state == "success", task_states(dag_run)
    rejected = root / finess / "rejetes"
    assert sorted(p.name for p in rejected.iterdir()) == ["broken.xml", "broken.xml.rapport.txt"]
    report = (rejected / "broken.xml.rapport.txt").read_text(encoding="utf-8")
    assert "REJETÉ" in report and "PERIOD_REVERSED" in report and "À faire" in report
    # A loaded file with anomalies gets its report too, beside it in traites/.
    processed = root / ESTABLISHMENTS[4]["finess"] / "traites"
    report = (processed / "flags.xml.rapport.txt").read_text(encoding="utf-8")
    assert "ACCEPTÉ" in report and "ENTREE_MISSING" in report and "Passage n°" in report
    statuses = {r[1]: (r[2], r[3]) for r in journal(regional_db)}
    assert statuses == {"broken.xml": ("rejected", "PERIOD_REVERSED"), "flags.xml": ("loaded", None)}


def test_a_half_uploaded_file_is_left_alone_then_taken(airflow_db, region_file, regional_db, clean_sftp, mailbox,
                                                       ingest_dag):
    root = clean_sftp.root
    finess = ESTABLISHMENTS[0]["finess"]
    drop(root, finess, "en-cours.xml.part")  # a temporary name: never taken
    fresh = drop(root, finess, "nouveau.xml", age=0)  # just written: it may still grow
    dag_run = run(ingest_dag)
    assert task_states(dag_run)["load"] == "skipped"
    assert fresh.exists() and journal(regional_db) == []
    # Unchanged since the previous listing: complete, taken.
    dag_run = run(ingest_dag)
    assert task_states(dag_run)[f"load[{finess}]"] == "success"
    assert [r[1:3] for r in journal(regional_db)] == [("nouveau.xml", "loaded")]
    assert (root / finess / "depot" / "en-cours.xml.part").exists()


def test_sender_mismatch_is_rejected_and_the_oru_told(airflow_db, region_file, regional_db, clean_sftp, mailbox,
                                                      ingest_dag):
    root = clean_sftp.root
    folder, other = ESTABLISHMENTS[5]["finess"], ESTABLISHMENTS[6]["finess"]
    drop(root, folder, "autre.xml", finess=other)
    # The two sites of one hospital (same legal FINESS) may send for each other.
    site1, site2 = ESTABLISHMENTS[0]["finess"], ESTABLISHMENTS[1]["finess"]
    assert ESTABLISHMENTS[0]["legal_finess"] == ESTABLISHMENTS[1]["legal_finess"]
    drop(root, site1, "site2.xml", finess=site2)
    (root / "999999999" / "depot").mkdir(parents=True)  # a folder nobody owns
    drop(root, "999999999", "inconnu.xml", finess=other)
    dag_run = run(ingest_dag)
    assert dag_run.state == "success", task_states(dag_run)
    statuses = {r[1]: (r[2], r[3]) for r in journal(regional_db)}
    assert statuses == {"autre.xml": ("rejected", "SENDER_MISMATCH"), "site2.xml": ("loaded", None)}
    assert "SENDER_MISMATCH" in (root / folder / "rejetes" / "autre.xml.rapport.txt").read_text(encoding="utf-8")
    assert (root / "999999999" / "depot" / "inconnu.xml").exists()  # left untouched
    # The listing tells of the unknown folder, the summary of the file from the wrong folder.
    unknown = mailbox.wait_for(lambda m: "Dépôts à vérifier" in m["Subject"] and "999999999" in m.get_content())
    mismatch = mailbox.wait_for(lambda m: "Dépôts à vérifier" in m["Subject"] and "autre.xml" in m.get_content())
    assert OPERATOR in unknown["To"] and OPERATOR in mismatch["To"]
    # The unknown folder is told once only.
    mailbox.clear()
    drop(root, folder, "suite.xml", seed=99)
    run(ingest_dag)
    time.sleep(0.5)
    assert not [m for m in mailbox.messages if "Dépôts à vérifier" in m["Subject"]]


def test_same_file_twice_and_an_older_extract(airflow_db, region_file, regional_db, clean_sftp, mailbox, ingest_dag):
    root = clean_sftp.root
    finess = ESTABLISHMENTS[7]["finess"]
    first = drop(root, finess, "nuit1.xml", extract=datetime(2026, 11, 27, 2, 30))
    content = first.read_bytes()
    run(ingest_dag)
    again = root / finess / "depot" / "nuit1-renvoi.xml"
    again.write_bytes(content)
    os.utime(again, (time.time() - 600, time.time() - 600))
    drop(root, finess, "ancien.xml", extract=datetime(2026, 11, 26, 2, 30), seed=4)
    dag_run = run(ingest_dag)
    assert dag_run.state == "success", task_states(dag_run)
    statuses = [(r[1], r[2]) for r in journal(regional_db)]
    assert statuses[0] == ("nuit1.xml", "loaded")
    assert sorted(statuses[1:]) == [("ancien.xml", "superseded"), ("nuit1-renvoi.xml", "duplicate")]
    processed = sorted(p.name for p in (root / finess / "traites").iterdir())
    assert processed == ["ancien.xml", "ancien.xml.rapport.txt", "nuit1-renvoi.xml", "nuit1-renvoi.xml.rapport.txt",
                         "nuit1.xml"]
    with psycopg.connect(regional_db) as conn:
        assert conn.execute("SELECT count(DISTINCT received_file_id) FROM rpu").fetchone()[0] == 1

    # The same name dropped again never overwrites what traites/ holds.
    drop(root, finess, "nuit1.xml", extract=datetime(2026, 11, 28, 2, 30), seed=8)
    run(ingest_dag)
    assert (root / finess / "traites" / "nuit1.1.xml").exists()


def test_a_file_that_would_empty_the_week_waits_for_the_oru(airflow_db, region_file, regional_db, clean_sftp,
                                                            mailbox, ingest_dag):
    root = clean_sftp.root
    finess = ESTABLISHMENTS[9]["finess"]
    drop(root, finess, "nuit1.xml", extract=datetime(2026, 11, 27, 2, 30))
    run(ingest_dag)
    with psycopg.connect(regional_db) as conn:
        held_before = conn.execute("SELECT count(*) FROM rpu").fetchone()[0]
    # The next night's export ran on an empty view: a valid header, no PATIENT.
    drop(root, finess, "vide.xml", extract=datetime(2026, 11, 28, 2, 30), visits_per_day=0)
    dag_run = run(ingest_dag)
    assert dag_run.state == "success", task_states(dag_run)
    assert [(r[1], r[2]) for r in journal(regional_db)] == [("nuit1.xml", "loaded"), ("vide.xml", "held")]
    with psycopg.connect(regional_db) as conn:
        assert conn.execute("SELECT count(*) FROM rpu").fetchone()[0] == held_before  # nothing wiped
    waiting = root / finess / "attente"
    assert sorted(p.name for p in waiting.iterdir()) == ["vide.xml", "vide.xml.rapport.txt"]
    report = (waiting / "vide.xml.rapport.txt").read_text(encoding="utf-8")
    assert "EN ATTENTE" in report and "rien n'a été appliqué" in report
    assert re.search(r"le 20/11 : \d+ passages détenus, 0 dans ce fichier", report)
    mail = mailbox.wait_for(lambda m: "vide.xml" in m.get_content())
    body = mail.get_content()
    assert OPERATOR in mail["To"] and "rpu files apply" in body
    assert re.search(r"20/11/2026 : \d+ passage\(s\) détenu\(s\), 0 dans ce fichier", body)


class _FailingInbox(SftpInbox):
    """The real SFTP inbox, whose server is stopped after a number of files have been moved."""

    def __init__(self, sftp, server, stop_after: int):
        super().__init__(sftp)
        self.server, self.stop_after, self.moves = server, stop_after, 0

    def move(self, source, target):
        super().move(source, target)
        self.moves += 1
        if self.moves == self.stop_after:
            self.server.stop()


def test_sftp_server_stopped_mid_run_loses_nothing_and_doubles_nothing(airflow_db, region_file, regional_db,
                                                                       clean_sftp, mailbox, ingest_dag):
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    root = clean_sftp.root
    for establishment in ESTABLISHMENTS[:6]:
        drop(root, establishment["finess"], "nuit.xml")
    region = region_config.load()
    hook = SFTPHook(ssh_conn_id="rpu_inbox")
    with psycopg.connect(regional_db) as conn, pytest.raises((OSError, EOFError)):
        with hook.get_managed_conn() as sftp:
            run_ingest(conn, _FailingInbox(sftp, clean_sftp, stop_after=2), region)
    loaded_before = [r for r in journal(regional_db) if r[2] == "loaded"]
    assert 2 <= len(loaded_before) <= 3  # the third may be committed and still in depot/
    clean_sftp.start()
    dag_run = run(ingest_dag)
    assert dag_run.state == "success", task_states(dag_run)
    rows = journal(regional_db)
    assert len([r for r in rows if r[2] == "loaded"]) == 6  # each file loaded exactly once
    for establishment in ESTABLISHMENTS[:6]:
        folder = root / establishment["finess"]
        assert list((folder / "depot").iterdir()) == []
        assert (folder / "traites" / "nuit.xml").exists()
    with psycopg.connect(regional_db) as conn:
        per_file = conn.execute("SELECT count(*) FROM rpu GROUP BY received_file_id").fetchall()
    assert len(per_file) == 6


def test_a_failing_task_sends_the_alert_email(airflow_db, region_file, clean_sftp, mailbox, ingest_dag, monkeypatch):
    # The regional database is unreachable: the first task fails, the ORU gets the e-mail.
    monkeypatch.setenv("AIRFLOW_CONN_RPU_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "postgres", "schema": "nope"}))
    dag_run = run(ingest_dag)
    assert dag_run.state == "failed"
    mail = mailbox.wait_for(lambda m: "Échec" in m["Subject"], timeout=30)
    assert OPERATOR in mail["To"] and "rpu_ingest" in mail["Subject"]


def test_every_dag_alerts_the_oru_on_failure():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    assert dagbag.import_errors == {}
    assert "rpu_ingest" in dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, SmtpNotifier) for c in callbacks), f"{dag_id}.{task.task_id} n'alerte personne"


def test_a_broken_folder_never_blocks_the_other_establishments(airflow_db, region_file, regional_db, clean_sftp,
                                                               mailbox, ingest_dag):
    root = clean_sftp.root
    broken, fine = ESTABLISHMENTS[8]["finess"], ESTABLISHMENTS[9]["finess"]
    drop(root, broken, "nuit.xml")
    (root / broken / "traites").write_text("un fichier à la place du dossier")  # archiving there fails
    drop(root, fine, "nuit.xml")
    dag_run = run(ingest_dag)
    states = task_states(dag_run)
    # The broken establishment's load fails alone; the other one is green and announced.
    assert states[f"load[{broken}]"] == "failed" and states[f"load[{fine}]"] == "success"
    assert states["announce_new_data"] == "success"
    assert states["summarize"] == "failed" and dag_run.state == "failed"  # the run shows it
    assert (root / fine / "traites" / "nuit.xml").exists()
    assert (root / broken / "depot" / "nuit.xml").exists()  # loaded, left for the next run to archive
    # The ORU's alert names the establishment.
    mail = mailbox.wait_for(lambda m: "Échec" in m["Subject"] and "load" in m["Subject"], timeout=30)
    assert mail["Subject"].endswith(f"rpu_ingest.load [{broken}]") and OPERATOR in mail["To"]
    mailbox.wait_for(lambda m: "Échec" in m["Subject"] and "summarize" in m["Subject"], timeout=30)

    # The file waits for its delay (not retried every 15 minutes forever)...
    dag_run = run(ingest_dag)
    assert dag_run.state == "success" and (root / broken / "depot" / "nuit.xml").exists()
    with psycopg.connect(regional_db) as conn:
        assert conn.execute("SELECT failures, error, reported_at IS NOT NULL FROM inbox_failure").fetchone() == (
            1, "NotADirectoryError", True)
        conn.execute("UPDATE inbox_failure SET next_try_at = now()")  # ... 15 minutes later
    # Repaired: the next try archives the file loaded the time before (recognised, not loaded twice).
    (root / broken / "traites").unlink()
    dag_run = run(ingest_dag)
    assert dag_run.state == "success", task_states(dag_run)
    assert (root / broken / "traites" / "nuit.xml").exists()
    assert [r[2] for r in journal(regional_db) if r[0] == broken] == ["loaded", "duplicate"]


def test_known_bytes_from_the_wrong_folder_are_a_sender_mismatch(airflow_db, region_file, regional_db, clean_sftp,
                                                                 mailbox, ingest_dag):
    root = clean_sftp.root
    owner, other = ESTABLISHMENTS[10]["finess"], ESTABLISHMENTS[11]["finess"]
    content = drop(root, owner, "nuit.xml").read_bytes()
    run(ingest_dag)
    stolen = root / other / "depot" / "copie.xml"
    stolen.parent.mkdir(parents=True, exist_ok=True)
    stolen.write_bytes(content)
    os.utime(stolen, (time.time() - 600, time.time() - 600))
    run(ingest_dag)
    statuses = {(r[0], r[1]): (r[2], r[3]) for r in journal(regional_db)}
    assert statuses[(other, "copie.xml")] == ("rejected", "SENDER_MISMATCH")
    assert (root / other / "rejetes" / "copie.xml").exists()


def test_an_unknown_folder_is_told_again_when_the_email_failed(region_file, regional_db, clean_sftp):
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    (clean_sftp.root / "123456789" / "depot").mkdir(parents=True)
    told = []

    def failing(to, subject, body):
        raise ConnectionRefusedError("SMTP injoignable")

    region = region_config.load()
    with psycopg.connect(regional_db) as conn, SFTPHook(ssh_conn_id="rpu_inbox").get_managed_conn() as sftp:
        with pytest.raises(ConnectionRefusedError):
            run_ingest(conn, SftpInbox(sftp), region, notify=failing)
        run_ingest(conn, SftpInbox(sftp), region, notify=lambda to, subject, body: told.append(body))
        run_ingest(conn, SftpInbox(sftp), region, notify=lambda to, subject, body: told.append(body))
    assert len(told) == 1 and "123456789" in told[0]


# --- a hostile or careless account (issue: hostile and broken input) ---------------------------


def _inbox_run(regional_db, inbox_class=SftpInbox, **kwargs) -> tuple:
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    told = []
    region = region_config.load()
    with psycopg.connect(regional_db) as conn, SFTPHook(ssh_conn_id="rpu_inbox").get_managed_conn() as sftp:
        summary = run_ingest(conn, inbox_class(sftp, **kwargs), region,
                             notify=lambda to, subject, body: told.append(body))
    return summary, told


def test_a_planted_link_never_makes_us_write_elsewhere(region_file, regional_db, clean_sftp):
    root = clean_sftp.root
    attacker, victim = ESTABLISHMENTS[10]["finess"], ESTABLISHMENTS[11]["finess"]
    target = drop(root, victim, "nuit.xml")
    victim_bytes = target.read_bytes()
    drop(root, attacker, "nuit.xml", defects=["VALUE_NOT_IN_SET"])  # a report will be written beside it
    (root / attacker / "traites").mkdir()
    # Links named as our report, its temporary name and the archived file, to the victim's upload.
    for name in ("nuit.xml", "nuit.xml.rapport.txt", "nuit.xml.rapport.txt.part"):
        os.symlink(target, root / attacker / "traites" / name)
    os.symlink(root / victim / "depot", root / attacker / "depot" / "lien")
    squatter = ESTABLISHMENTS[9]["finess"]  # its depot/ itself a link to the victim's
    (root / squatter).mkdir(exist_ok=True)
    os.symlink(root / victim / "depot", root / squatter / "depot")
    summary, told = _inbox_run(regional_db)
    assert not target.exists()  # taken by its own load, intact:
    archived = root / victim / "traites" / "nuit.xml"
    assert archived.read_bytes() == victim_bytes
    assert {r[0]: r[2] for r in journal(regional_db)} == {attacker: "loaded", victim: "loaded"}
    assert not any(p.is_symlink() for p in (root / attacker).rglob("*"))
    assert not (root / squatter / "depot").exists() and (root / victim / "depot").is_dir()
    assert sorted(p.name for p in (root / attacker / "traites").iterdir()) == ["nuit.xml", "nuit.xml.rapport.txt"]
    assert "Liens symboliques" in told[0] and f"{attacker}/traites/nuit.xml.rapport.txt.part" in told[0]


def test_archive_folders_are_swept_for_links_once_a_day(region_file, regional_db, clean_sftp):
    # traites/, rejetes/ and attente/ grow by a file and its report a night: they are swept for
    # links at the first listing, then once a day; the establishment's folder and its depot/ at
    # every listing. Meanwhile a link there is never written through.
    root = clean_sftp.root
    finess = ESTABLISHMENTS[13]["finess"]
    drop(root, finess, "lundi.xml")
    _inbox_run(regional_db)
    secret = root / "secret.txt"
    secret.write_text("à ne pas écraser")
    os.symlink(secret, root / finess / "traites" / "mardi.xml")  # the archive name of the next file
    os.symlink(secret, root / finess / "traites" / "mardi.xml.rapport.txt")
    os.symlink(root / finess / "traites", root / finess / "depot" / "lien")
    drop(root, finess, "mardi.xml", defects=["VALUE_NOT_IN_SET"], seed=8)  # a report is written too
    _summary, told = _inbox_run(regional_db)
    assert secret.read_text() == "à ne pas écraser"
    traites = root / finess / "traites"
    assert sorted(p.name for p in traites.iterdir() if not p.is_symlink()) == [
        "lundi.xml", "mardi.1.xml", "mardi.1.xml.rapport.txt"]
    assert (traites / "mardi.xml").is_symlink()  # not swept again within the day
    assert not (root / finess / "depot" / "lien").exists()  # depot/: at every listing
    assert f"{finess}/depot/lien" in told[0] and "traites/mardi.xml" not in told[0]
    with psycopg.connect(regional_db) as conn:
        conn.execute("UPDATE inbox_sweep SET swept_at = swept_at - interval '1 day'")
    _summary, told = _inbox_run(regional_db)  # a day later: nothing to load, the archives swept
    assert not any(p.is_symlink() for p in traites.iterdir())
    assert f"{finess}/traites/mardi.xml.rapport.txt" in told[0] and secret.read_text() == "à ne pas écraser"
    assert [r[2] for r in journal(regional_db)] == ["loaded", "loaded"]


def test_a_file_uploaded_again_during_its_load_stays_for_the_next_run(region_file, regional_db, clean_sftp):
    root = clean_sftp.root
    finess = ESTABLISHMENTS[12]["finess"]
    path = drop(root, finess, "nuit.xml", extract=datetime(2026, 11, 27, 2, 30))
    newer = root / "newer.xml"
    write_oscour_file(newer, finess, 0, START, END, visits_per_day=30, seed=77, extract=datetime(2026, 11, 27, 3, 0))

    class ReuploadingInbox(SftpInbox):
        def second_channel(self):
            return ReuploadingInbox(super().second_channel().sftp, self.base)

        def download(self, remote, local):
            super().download(remote, local)
            path.write_bytes(newer.read_bytes())  # the establishment sends a corrected version meanwhile
            os.utime(path, (time.time() - 700, time.time() - 700))

    summary, _ = _inbox_run(regional_db, ReuploadingInbox)
    assert summary.changed == [f"{finess}/depot/nuit.xml"]
    assert path.read_bytes() == newer.read_bytes()  # not archived: the new bytes were never loaded
    _inbox_run(regional_db)
    assert [r[2] for r in journal(regional_db)] == ["loaded", "loaded"]
    assert (root / finess / "traites" / "nuit.xml").read_bytes() == newer.read_bytes()


def test_a_stalled_upload_that_resumes_is_taken_again(region_file, regional_db, clean_sftp):
    root = clean_sftp.root
    finess = ESTABLISHMENTS[13]["finess"]
    whole = root / "whole.xml"
    write_oscour_file(whole, finess, 0, START, END, visits_per_day=30, seed=5)
    data = whole.read_bytes()
    depot = root / finess / "depot"
    depot.mkdir(parents=True)
    stalled = depot / "nuit.xml"
    stalled.write_bytes(data[: len(data) // 2])
    os.utime(stalled, (time.time() - 700, time.time() - 700))  # unchanged for longer than the window
    _inbox_run(regional_db)
    rejected = root / finess / "rejetes" / "nuit.xml"
    assert rejected.exists() and [r[3] for r in journal(regional_db)] == ["TRUNCATED"]
    with open(rejected, "ab") as stream:  # the client was still writing: it finishes, in rejetes/
        stream.write(data[len(data) // 2:])
    summary, _ = _inbox_run(regional_db)
    assert summary.resumed == [f"{finess}/rejetes/nuit.xml"]
    assert stalled.read_bytes() == data and not (root / finess / "rejetes" / "nuit.xml.rapport.txt").exists()
    os.utime(stalled, (time.time() - 700, time.time() - 700))
    _inbox_run(regional_db)
    assert [r[2] for r in journal(regional_db)] == ["rejected", "loaded"]


def test_names_from_outside_cannot_forge_lines(region_file, regional_db, clean_sftp):
    root = clean_sftp.root
    folder, other = ESTABLISHMENTS[14]["finess"], ESTABLISHMENTS[15]["finess"]
    drop(root, folder, "a\nSENDER_MISMATCH faux : tout va bien.xml", finess=other)
    _summary, told = _inbox_run(regional_db)
    assert "'a\\nSENDER_MISMATCH faux : tout va bien.xml'" in told[0]
    assert not any(line.startswith("SENDER_MISMATCH faux") for line in told[0].splitlines())


def test_a_file_over_the_size_limit_is_refused_unread(region_file, regional_db, clean_sftp):
    text = region_file.read_text()
    region_file.write_text(text + "\n[intake]\nmax_file_mb = 1\n")
    root = clean_sftp.root
    finess = ESTABLISHMENTS[16]["finess"]
    drop(root, finess, "gros.xml", visits_per_day=600)
    _inbox_run(regional_db)
    assert [(r[2], r[3]) for r in journal(regional_db)] == [("rejected", "FILE_TOO_LARGE")]
    report = (root / finess / "rejetes" / "gros.xml.rapport.txt").read_text(encoding="utf-8")
    assert "taille maximale" in report and "1 Mo au plus" in report


def test_downloads_go_over_a_channel_with_a_wide_window(region_file, clean_sftp, tmp_path):
    """paramiko's default window (2 MiB) made each download wait on window adjustments: files
    come over a channel of their own that lets the server send 64 MiB ahead, and arrive whole."""
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    from rpu.flows.inbox import DOWNLOAD_WINDOW

    finess = ESTABLISHMENTS[13]["finess"]
    sent = drop(clean_sftp.root, finess, "nuit.xml")
    with SFTPHook(ssh_conn_id="rpu_inbox").get_managed_conn() as sftp:
        inbox = SftpInbox(sftp)
        for copy in ("a.xml", "b.xml"):  # the channel is opened once, then reused
            inbox.download(f"{finess}/depot/nuit.xml", tmp_path / copy)
        channel = inbox._downloads.get_channel()
        assert channel is not sftp.get_channel() and channel.in_window_size == DOWNLOAD_WINDOW
        ahead = inbox.second_channel()
        assert ahead.sftp.get_channel().in_window_size == DOWNLOAD_WINDOW
        ahead.download(f"{finess}/depot/nuit.xml", tmp_path / "c.xml")
        ahead.close()
    assert all((tmp_path / copy).read_bytes() == sent.read_bytes() for copy in ("a.xml", "b.xml", "c.xml"))
