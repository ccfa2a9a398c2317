"""Replays to Santé publique France: the checks (French refusals), the DAG rpu_invs_replay through
dag.test() in dry run and for real (SFTP outbox, send journal, absence episode closed), and the
params the form refuses before any run."""

from __future__ import annotations

import json
import time as clock
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from conftest import migrated, migrated_database, write_region_file
from lxml import etree

from rpu.config import region as region_config
from rpu.flows import absence, replay
from rpu.formats.finess import with_check_digit
from rpu.sandbox.generator import demo_establishments, write_oscour_file
from rpu.store import registry
from rpu.store.loader import load_file

REPO = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Europe/Paris")
A, C = (e["finess"] for e in demo_establishments(2, seed=31))
UNKNOWN = with_check_digit("67123456")
D0 = date(2026, 3, 2)
TODAY = date(2026, 4, 1)


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def write_region(folder: Path, monkeypatch=None) -> region_config.Region:
    return write_region_file(folder, monkeypatch, ars_emails=["ars@example.org"],
                             establishments=[{"finess": A, "ordre": 0, "name": "CH de Alpha", "status": "live"},
                                             {"finess": C, "ordre": 0, "name": "Clinique Gamma", "status": "parallel"}])


def prepare(url: str, region: region_config.Region) -> str:
    """The regional database at ``url`` migrated, the region's establishments registered."""
    with psycopg.connect(migrated(url)) as conn:
        registry.sync(conn, region, author="test")
    return url


@pytest.fixture
def region(tmp_path, monkeypatch) -> region_config.Region:
    return write_region(tmp_path, monkeypatch)


@pytest.fixture
def db_url(db, region) -> str:
    return prepare(db, region)


@pytest.fixture
def conn(db_url):
    with psycopg.connect(db_url) as connection:
        yield connection


def send(conn, folder: Path, finess: str, on: date, *, start: date | None = None, end: date | None = None) -> None:
    start, end = start or on - timedelta(days=7), end or on - timedelta(days=1)
    path = folder / f"{finess}_{on:%Y%m%d}_{start:%Y%m%d}.xml"
    write_oscour_file(path, finess, 0, start, end, visits_per_day=15, seed=on.toordinal(),
                      extract=datetime.combine(on, time(3)))
    result = load_file(conn, path, sender=finess)
    assert result.status == "loaded"
    conn.execute("UPDATE received_file SET received_at = %s WHERE id = %s",
                 (datetime.combine(on, time(3, 30), TZ), result.received_file_id))
    conn.commit()


def check(conn, **overrides) -> replay.ReplayRequest:
    request = {"finess": A, "start": "2026-03-02", "end": "2026-03-05", "reason": "absence d'envoi", "today": TODAY}
    return replay.check_request(conn, **(request | overrides))


def silence_then_catch_up(conn, region, folder: Path) -> absence.Episode:
    """A silent from day 1 to day 10, back on day 11 with its usual file: days 0..3 are missing;
    then a catch-up file for them arrives on day 12."""
    notify = lambda to, subject, body: None  # noqa: E731
    send(conn, folder, A, day(0))
    for n in range(0, 12):
        if n == 11:
            send(conn, folder, A, day(11))
        absence.run_monitor(conn, region, day(n), datetime.combine(day(n), time(10), TZ), notify)
    send(conn, folder, A, day(12), start=day(0), end=day(3))
    (episode,) = absence.episodes(conn, state="replay_needed", finess=A)
    assert (episode.replay_start, episode.replay_end) == (day(0), day(3))
    return episode


@pytest.fixture
def replay_needed(conn, region, tmp_path) -> absence.Episode:
    return silence_then_catch_up(conn, region, tmp_path)


@pytest.fixture(scope="module")
def scenario_url(pg_admin_url, tmp_path_factory):
    """The same scenario, built once for the tests that only read it."""
    folder = tmp_path_factory.mktemp("replay-scenario")
    region = write_region(folder)
    with migrated_database(pg_admin_url) as url:
        with psycopg.connect(prepare(url, region)) as conn:
            silence_then_catch_up(conn, region, folder)
        yield url


@pytest.fixture
def scenario(scenario_url):
    with psycopg.connect(scenario_url) as connection:
        yield connection
        connection.rollback()


# --- the checks ----------------------------------------------------------------------------------

def test_a_good_request_is_accepted(scenario):
    conn = scenario
    request = check(conn, requested_by="ars.dupont", dry_run=False, reason="  absence   d'envoi ")
    assert request == replay.ReplayRequest(A, 0, day(0), day(3), "absence d'envoi", False, "ars.dupont", "CH de Alpha")
    assert replay.ReplayRequest.from_dict(request.as_dict()) == request
    assert check(conn).requested_by == "inconnu" and check(conn).dry_run is True


@pytest.mark.parametrize(("overrides", "message"), [
    ({"finess": A[:-1] + str((int(A[-1]) + 1) % 10)}, "la clé de contrôle (dernier chiffre, algorithme de Luhn) est fausse"),
    ({"finess": "12345"}, "mal formé"),
    ({"finess": UNKNOWN}, f"FINESS {UNKNOWN} inconnu du registre des établissements de la région"),
    ({"ordre": 3}, f"FINESS {A} : pas d'ORDRE 3 dans le registre (ORDRE connus : 0)"),
    ({"finess": C}, "Clinique Gamma (FINESS " + C + ") n'est pas en production (il est encore transmis par l'ancien"),
    ({"start": "2026-03-05", "end": "2026-03-02"}, "La fin (02/03/2026) est avant le début (05/03/2026)."),
    ({"end": "2026-04-01"}, "La fin (01/04/2026) doit être antérieure à aujourd'hui (01/04/2026)"),
    ({"start": "2025-03-01", "end": "2026-03-05"}, "Période de 370 jours : 366 au plus par reprise"),
    ({"start": "2026-02-30"}, "Premier jour à renvoyer : date invalide '2026-02-30'"),
    ({"reason": "abc"}, "Motif manquant ou trop court : au moins 5 caractères"),
    ({"reason": None}, "Motif manquant"),
    ({"start": "2026-03-20", "end": "2026-03-25"},
     "La base régionale n'a pas les données de CH de Alpha (FINESS " + A + ") pour : du 20/03/2026 au 25/03/2026. "
     "L'établissement doit d'abord envoyer ses fichiers pour cette période"),
])
def test_a_bad_request_is_refused_in_french(scenario, overrides, message):
    with pytest.raises(replay.ReplayRefused) as refusal:
        check(scenario, **overrides)
    assert str(refusal.value).startswith("Reprise refusée")
    assert message in str(refusal.value)


def test_every_problem_is_listed_at_once(scenario):
    with pytest.raises(replay.ReplayRefused) as refusal:
        check(scenario, finess="670000398", start="2026-03-05", end="2026-04-02", reason="")
    lines = str(refusal.value).splitlines()
    assert lines[0] == "Reprise refusée :" and len(lines) == 4


def test_days_missing_from_the_regional_database_are_named(scenario):
    # Days 0..10 are covered (day 11's file: 4..10; catch-up: 0..3); day 11 onwards is not.
    with pytest.raises(replay.ReplayRefused, match=r"pour : du 13/03/2026 au 14/03/2026\. L'établissement"):
        check(scenario, start="2026-03-10", end="2026-03-14")


def test_build_counts_the_visits_per_day_from_the_regional_database(scenario, tmp_path):
    conn = scenario
    request = check(conn)
    built = replay.build(conn, request, tmp_path / "out", datetime(2026, 4, 1, 9, 30))
    assert built.path.name == f"RPU_{A}_0_20260401093000.xml"
    assert built.path.stat().st_mode & 0o077 == 0
    expected = {d: n for d, n in conn.execute(
        "SELECT entree::date, count(*) FROM rpu WHERE finess = %s AND entree >= %s AND entree < %s GROUP BY 1",
        (A, day(0), day(4)))}
    assert built.per_day == expected and built.visits == sum(expected.values()) > 0
    root = etree.parse(str(built.path)).getroot()
    assert root.findtext("ETABLISSEMENT/DATEDEBUT") == "02/03/2026"
    assert root.findtext("ETABLISSEMENT/DATEFIN") == "05/03/2026"
    assert len(root.findall(".//PATIENT")) == built.visits
    report = "\n".join(built.report(request))
    assert "Reprise SIMULÉE" in report and "lundi     02/03/2026" in report and "rien n'a été envoyé" in report


# --- the DAG -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replay_dag():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["rpu_invs_replay"]
    for task in dag.tasks:  # a failure must show at once, not after the retries' backoff
        task.retries = 0
    return dag


def run(dag, **conf):
    return dag.test(logical_date=None, run_conf=conf)


def states(dag_run) -> dict:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


CONF = {"finess": A, "ordre": 0, "start": "2026-03-02", "end": "2026-03-05", "reason": "absence d'envoi du 03/03 au 12/03"}


def test_the_replay_dag_dry_run_then_for_real(airflow_db, replay_needed, conn, clean_sftp, replay_dag, region):
    spool = region.outbox_dir("invs") / "reprises"
    dag_run = run(replay_dag, **CONF)  # dry_run defaults to true
    assert dag_run.state == "success", states(dag_run)
    assert states(dag_run) == {"check_request": "success", "build_file": "success", "deliver": "skipped"}
    assert conn.execute("SELECT count(*) FROM send").fetchone() == (0,)
    assert list(clean_sftp.root.iterdir()) == []
    assert not spool.exists() or not list(spool.iterdir())

    dag_run = run(replay_dag, **CONF, dry_run=False)
    assert dag_run.state == "success", states(dag_run)
    row = conn.execute("SELECT id, destination, kind, finess, ordre, period_start, period_end, status, requested_by,"
                       " reason, visit_count, file_name FROM send").fetchone()
    send_id, *fields, visit_count, name = row
    assert fields == ["invs", "replay", A, 0, day(0), day(3), "sent", "dag_test", CONF["reason"]]
    delivered = clean_sftp.root / name
    assert delivered.is_file() and name.startswith(f"RPU_{A}_0_")
    assert len(etree.parse(str(delivered)).getroot().findall(".//PATIENT")) == visit_count > 0
    assert (spool / name).is_file()  # kept for the journal
    (episode,) = absence.episodes(conn, finess=A)
    conn.commit()
    assert (episode.state, episode.replay_send_id) == ("replayed", send_id) and episode.closed_at is not None


def test_the_replay_dag_with_the_server_down_journals_the_failed_attempt(airflow_db, replay_needed, conn, clean_sftp,
                                                                         replay_dag):
    from rpu.store import sends

    clean_sftp.stop()
    try:
        dag_run = run(replay_dag, **CONF, dry_run=False)
    finally:
        clean_sftp.start()
    assert dag_run.state == "failed"
    assert states(dag_run) == {"check_request": "success", "build_file": "success", "deliver": "failed"}
    (send_id, status, attempts, answer), = conn.execute(
        "SELECT id, status, attempts, remote_answer FROM send").fetchall()
    conn.commit()
    assert (status, attempts) == ("failed", 1)
    assert answer.startswith("serveur SFTP invs_outbox injoignable : ")
    assert list(clean_sftp.root.iterdir()) == []
    assert absence.episodes(conn, finess=A)[0].state == "replay_needed"

    # The server is back: the same file goes (a Clear of deliver), and the episode is closed.
    def session():
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        return SFTPHook(ssh_conn_id="invs_outbox", conn_retry_attempts=1).get_managed_conn()

    send, closed = replay.deliver(conn, send_id, session, "", datetime.now(TZ))
    assert (send.status, send.attempts) == ("sent", 2)
    assert [row[0] for row in closed] == [replay_needed.id]
    assert [p.name for p in clean_sftp.root.iterdir()] == [send.file_name]
    assert sends.attempt(conn, send, lambda s: pytest.fail("sent twice")) is None


def test_a_refused_request_is_an_answer_to_the_ars_not_an_incident(airflow_db, conn, replay_needed, replay_dag,
                                                                    region, mailbox, capsys):
    dag_run = run(replay_dag, **(CONF | {"finess": UNKNOWN}))
    assert dag_run.state == "failed"
    assert states(dag_run) == {"check_request": "failed", "build_file": "upstream_failed", "deliver": "upstream_failed"}
    # The task's log (printed by dag.test()) holds the French refusal, as the ARS will read it.
    assert (f"RequestRefused: Reprise refusée : FINESS {UNKNOWN} inconnu du registre des établissements"
            in capsys.readouterr().out)
    dag_run = run(replay_dag, **(CONF | {"start": "2026-03-06", "end": "2026-03-05"}))
    assert dag_run.state == "failed" and states(dag_run)["check_request"] == "failed"
    assert "La fin (05/03/2026) est avant le début (06/03/2026)." in capsys.readouterr().out
    assert conn.execute("SELECT count(*) FROM send").fetchone() == (0,)
    # No failure e-mail: a refusal is not an incident.
    clock.sleep(1)
    assert [str(m.message["Subject"]) for m in mailbox.received] == []
    # The ORU reads them once, one line each, in its daily digest.
    rows = conn.execute("SELECT requested_by, finess, period_start, refusal FROM replay_refusal ORDER BY id").fetchall()
    assert [(by, finess, start) for by, finess, start, _ in rows] == [("dag_test", UNKNOWN, "2026-03-02"),
                                                                      ("dag_test", A, "2026-03-06")]
    sent = []
    now = datetime.combine(TODAY, time(10, 5), TZ)
    text = absence.send_oru_digest(conn, region, TODAY, now, lambda to, subject, body: sent.append(body),
                                   refusals=replay.refusals_digest)
    assert sent == [text]
    assert "Reprises refusées (réponses à l'ARS dans Airflow, pas des incidents) : 2" in text
    assert f"dag_test : FINESS {UNKNOWN}, 2026-03-02 → 2026-03-05 : FINESS {UNKNOWN} inconnu du registre" in text
    assert "FINESS " + A + ", 2026-03-06 → 2026-03-05 : La fin (05/03/2026) est avant le début" in text
    assert text.index("Reprises refusées") < text.index("Journal des exécutions")
    assert "Reprises refusées" not in absence.digest_text(conn, region, TODAY + timedelta(days=1), [])
    assert absence.send_oru_digest(conn, region, TODAY + timedelta(days=1), now + timedelta(days=1),
                                   lambda to, subject, body: sent.append(body), refusals=replay.refusals_digest) is not None
    assert "Reprises refusées" not in sent[-1]  # listed once


def test_a_database_outage_during_a_replay_still_alerts_the_oru(airflow_db, replay_dag, region, mailbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RPU_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "postgres", "schema": "nope"}))
    dag_run = run(replay_dag, **CONF)
    assert dag_run.state == "failed" and states(dag_run)["check_request"] == "failed"
    mail = mailbox.wait_for(lambda m: "Échec" in m["Subject"], timeout=30)
    assert mail["Subject"] == "[RPU TST] Échec : rpu_invs_replay.check_request"
    assert "oru@example.org" in mail["To"]
    body = mail.get_body(("html",)).get_content()
    assert "déclenchée par dag_test" in body and "Cause : OperationalError" in body
    assert "Message envoyé automatiquement par le concentrateur RPU (TST)" in body


@pytest.mark.parametrize("conf", [
    CONF | {"finess": "67078069"},            # 8 characters
    CONF | {"finess": "6707806911"},          # 10
    CONF | {"finess": "67O780691"},           # a letter O for a zero
    {k: v for k, v in CONF.items() if k != "reason"},
    CONF | {"reason": "abc"},
    CONF | {"start": "2026-02-30"},
    CONF | {"end": "05/03/2026"},
    CONF | {"dry_run": "non"},
    {k: v for k, v in CONF.items() if k != "finess"},
])
def test_the_form_refuses_bad_params_before_any_run(airflow_db, replay_dag, conf):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        run(replay_dag, **conf)


def test_a_daily_file_carrying_the_catch_up_file_also_closes_the_episode(conn, tmp_path, replay_needed):
    from rpu.store import sends

    path = tmp_path / "daily.xml"
    path.write_text("<OSCOUR/>")
    daily = sends.record_built(conn, destination="invs", kind="daily", path=path, visit_count=1, finess=A, ordre=0,
                               period_start=day(0), period_end=day(11))
    assert absence.close_replayed(conn, datetime.now(TZ)) == []  # built, not delivered yet
    sends.attempt(conn, daily, lambda send: "déposé")
    conn.commit()
    ((episode_id, *_, send_id),) = absence.close_replayed(conn, datetime.now(TZ))
    assert (episode_id, send_id) == (replay_needed.id, daily.id)
    assert absence.episodes(conn, finess=A)[0].state == "replayed"


def test_a_refusal_that_cannot_be_journaled_is_still_answered(conn):
    conn.execute("ALTER TABLE replay_refusal RENAME TO replay_refusal_away")
    conn.commit()
    try:
        assert replay.record_refusal(conn, "Reprise refusée : essai", requested_by="ars", run_id="r",
                                     params={"finess": A}) is None
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is still usable
    finally:
        conn.rollback()
        conn.execute("ALTER TABLE replay_refusal_away RENAME TO replay_refusal")
        conn.commit()
    assert replay.record_refusal(conn, "Reprise refusée : essai", requested_by=None, run_id=None,
                                 params={"finess": A, "ordre": 0}) is not None
    assert conn.execute("SELECT requested_by, finess, ordre, period_start FROM replay_refusal").fetchall() == [
        ("inconnu", A, "0", None)]
