"""Absence monitoring, day by day on a simulated calendar, with real files in a real PostgreSQL.

Each "day" an establishment sends, a real OSCOUR file (J-7..J-1) is generated, loaded, and its
journal row dated that night; then the monitor judges the day with a clock of that day.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from rpu.config import region as region_config
from rpu.flows import absence
from rpu.sandbox.generator import demo_establishments, write_oscour_file
from rpu.sandbox.local_services import postgres_airflow_connection
from rpu.store import registry
from rpu.store.db import migrate
from rpu.store.loader import load_file

REPO = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Europe/Paris")
A, B, C = (e["finess"] for e in demo_establishments(3, seed=11))
D0 = date(2026, 3, 2)  # a Monday
ARS = "ars-veille@example.org"
OPERATOR = "oru@example.org"
AIRFLOW = "https://airflow.example.org"


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def contacts(finess: str) -> dict:
    return {"it_contacts": [f"dsi-{finess}@example.org"], "ars_contacts": [f"ars-dt-{finess}@example.org"]}


@pytest.fixture
def region(tmp_path, monkeypatch) -> region_config.Region:
    path = tmp_path / "region.toml"
    path.write_text(region_config.render(
        code="TST", name="Région de test", operator_emails=[OPERATOR], ars_emails=[ARS], airflow_url=AIRFLOW,
        establishments=[
            {"finess": A, "ordre": 0, "name": "CH de Alpha", "status": "live", **contacts(A)},
            {"finess": B, "ordre": 0, "name": "CH de Bêta", "status": "live", **contacts(B)},
            {"finess": C, "ordre": 0, "name": "Clinique Gamma", "status": "parallel", **contacts(C)},
        ]))
    monkeypatch.setenv("RPU_REGION_CONFIG", str(path))
    return region_config.load(path)


@pytest.fixture
def db_url(fresh_database_url, region, monkeypatch) -> str:
    url = fresh_database_url()
    monkeypatch.setenv("AIRFLOW_CONN_RPU_DB", json.dumps(postgres_airflow_connection(url)))
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    with psycopg.connect(url) as conn:
        registry.sync(conn, region, author="test")
    return url


@pytest.fixture
def conn(db_url):
    with psycopg.connect(db_url) as connection:
        yield connection


class Calendar:
    """Establishments sending files on chosen days, and the monitor judging each day."""

    def __init__(self, conn, region, folder: Path):
        self.conn, self.region, self.folder = conn, region, folder
        self.mails: list[tuple[list[str], str, str]] = []
        self.it_mails: list[tuple[list[str], str, str]] = []

    def send(self, finess: str, on: date, *, start: date | None = None, end: date | None = None,
             visits: float = 20, hour: int = 3, **kwargs) -> int:
        start = start or on - timedelta(days=7)
        end = end or on - timedelta(days=1)
        path = self.folder / f"{finess}_{on:%Y%m%d}_{start:%Y%m%d}_{end:%Y%m%d}_{hour}.xml"
        write_oscour_file(path, finess, 0, start, end, visits_per_day=visits, seed=on.toordinal() + hour,
                          extract=datetime.combine(on, time(hour, 0)), **kwargs)
        result = load_file(self.conn, path, sender=finess)
        self.conn.execute("UPDATE received_file SET received_at = %s WHERE id = %s",
                          (datetime.combine(on, time(hour, 30), TZ), result.received_file_id))
        self.conn.commit()
        return result.received_file_id

    def notify(self, to, subject, body) -> None:
        self.mails.append((list(to), subject, body))

    def monitor(self, on: date) -> absence.MonitorResult:
        return absence.run_monitor(self.conn, self.region, on, datetime.combine(on, time(10, 0), TZ), self.notify)

    def take_mails(self) -> list[tuple[list[str], str, str]]:
        """The mails to the ARS and the ORU; the establishments' own copies are kept apart."""
        mails, self.mails = self.mails, []
        self.it_mails += [m for m in mails if all(a.startswith("dsi-") for a in m[0])]
        return [m for m in mails if not all(a.startswith("dsi-") for a in m[0])]


@pytest.fixture
def calendar(conn, region, tmp_path) -> Calendar:
    return Calendar(conn, region, tmp_path)


def episodes_of(conn, finess: str) -> list[absence.Episode]:
    return absence.episodes(conn, finess=finess)


def silent(result: absence.MonitorResult) -> dict[str, int]:
    """FINESS -> days missing, for the establishments silent on the judged day."""
    return {establishment.finess: episode.days_missing for establishment, episode in result.silent}


def test_a_three_day_silence_heals_by_itself(calendar, conn):
    # B and C send every day; A falls silent on days 2, 3 and 4 and sends again on day 5.
    for n in range(6):
        for finess in (B, C) + ((A,) if n not in (2, 3, 4) else ()):
            calendar.send(finess, day(n))
        result = calendar.monitor(day(n))
        mails = calendar.take_mails()
        if n in (0, 1):
            assert result.silent == [] and mails == []
        elif n in (2, 3, 4):
            (to, subject, body), = mails
            assert [w.finess for w, _ in result.silent] == [A]
            assert subject == f"[RPU TST] Veille du {day(n):%d/%m/%Y} : 1 établissement sans fichier"
            assert to == [ARS, f"ars-dt-{A}@example.org"]
            (it_to, _, it_body), = calendar.it_mails[-1:]
            assert it_to == [f"dsi-{A}@example.org"] and B not in it_body
            missing = "04/03/2026" if n == 2 else f"du 04/03/2026 au {day(n):%d/%m/%Y}"
            assert (f"CH de Alpha (FINESS {A}, ORDRE 0, en production) : dernier fichier chargé le 03/03/2026 ; "
                    f"{n - 1} jour{'s' if n > 2 else ''} sans fichier ({missing}).") in body
            assert "Que faire" in body and "<FINESS>/depot/" in body
            assert "se rattrape seule (chaque fichier renvoie les 7 derniers jours)" in body and "Passages perdus" not in body
            # The same day again: nothing counted twice, nothing sent twice.
            again = calendar.monitor(day(n))
            assert calendar.take_mails() == []
            assert again.silent[0][1].days_missing == n - 1
        else:
            assert result.silent == [] and [w.finess for w, _ in result.healed] == [A]
            (to, subject, body), = mails
            assert "ABSENCES RÉSORBÉES" in body and "envois repris le 07/03/2026" in body
            assert result.replay_needed == []

    (episode,) = episodes_of(conn, A)
    assert (episode.state, episode.first_missing_day, episode.last_missing_day, episode.days_missing) == (
        "healed", day(2), day(4), 3)
    assert episode.resumed_on == day(5) and episode.closed_at is not None and episode.replay_start is None
    assert conn.execute("SELECT count(*), count(alerted_at) FROM absence_day").fetchone() == (3, 3)
    assert episodes_of(conn, B) == [] and episodes_of(conn, C) == []
    calendar.monitor(day(5))
    assert calendar.take_mails() == []  # healed said once


def test_a_ten_day_silence_ends_in_a_replay_of_the_uncovered_days(calendar, conn):
    calendar.send(A, day(0))
    calendar.monitor(day(0))
    calendar.take_mails()  # B and C, never sending here
    for n in range(1, 11):
        if n in (5, 6):
            continue  # the monitor did not run these two days: caught up on day 7
        result = calendar.monitor(day(n))
        (_, _, body), = calendar.take_mails()
        assert silent(result)[A] == n
        if n == 7:
            assert ("Passages perdus pour Santé publique France même si l'établissement renvoie son fichier dès "
                    "demain : le 02/03/2026 (1 jour)") in body
        elif n > 7:
            assert f"dès demain : du 02/03/2026 au {day(n - 7):%d/%m/%Y} ({n - 6} jours)" in body
        else:
            assert "Passages perdus" not in body.split(f"FINESS {A}")[1].split("  - ")[0]
    # Day 11: A sends its usual file (days 4..10): the visits of days 0..3 will never come back.
    calendar.send(A, day(11))
    result = calendar.monitor(day(11))
    assert A not in silent(result) and result.healed == []
    ((establishment, episode),) = result.replay_needed
    assert (episode.state, episode.replay_start, episode.replay_end) == ("replay_needed", day(0), day(3))
    assert (episode.first_missing_day, episode.days_missing, episode.resumed_on) == (day(1), 10, day(11))
    mails = calendar.take_mails()
    (to, subject, body), = [m for m in mails if "Reprise nécessaire" in m[1]]
    assert subject == f"[RPU TST] Reprise nécessaire : CH de Alpha (FINESS {A}) du 02/03/2026 au 05/03/2026"
    assert to == [ARS, f"ars-dt-{A}@example.org", f"dsi-{A}@example.org"]
    assert f"FINESS : {A}" in body and "du 02/03/2026 au 05/03/2026" in body
    assert f"{AIRFLOW}/dags/rpu_invs_replay" in body
    assert '"start": "2026-03-02", "end": "2026-03-05"' in body
    assert "dry_run" in body
    # Said once; the episode waits for its replay.
    calendar.monitor(day(11))
    calendar.send(A, day(12))
    calendar.monitor(day(12))
    assert [m for m in calendar.take_mails() if "Reprise" in m[1]] == []
    (episode,) = episodes_of(conn, A)
    assert episode.state == "replay_needed" and episode.end_notified_at is not None


def test_a_nine_day_silence_names_the_last_day_loaded_and_every_lost_day(calendar, conn):
    """Last file loaded on day 0, nothing on days 1 to 9: on day 9 the alert says the file of
    day 0 was the last, and the visits of days 0, 1 and 2 are lost even if a file comes on day 10
    (it carries days 3 to 9)."""
    calendar.send(A, day(0))
    calendar.monitor(day(0))
    calendar.take_mails()
    for n in range(1, 10):
        calendar.monitor(day(n))
        (_, subject, body), = calendar.take_mails()
    assert subject == "[RPU TST] Veille du 11/03/2026 : 3 établissements sans fichier"
    lines = body.splitlines()
    line, lost = next((x, lines[i + 1]) for i, x in enumerate(lines) if f"FINESS {A}" in x)
    assert line == (f"  - CH de Alpha (FINESS {A}, ORDRE 0, en production) : dernier fichier chargé le 02/03/2026 ; "
                    "9 jours sans fichier (du 03/03/2026 au 11/03/2026).")
    assert lost.startswith("    Passages perdus pour Santé publique France même si l'établissement renvoie son fichier "
                           "dès demain : du 02/03/2026 au 04/03/2026 (3 jours), hors de la fenêtre glissante de 7 jours.")
    # The file of day 10 brings days 3..9 back: the replay asked for is exactly the days named.
    calendar.send(A, day(10))
    ((_, episode),) = calendar.monitor(day(10)).replay_needed
    assert (episode.replay_start, episode.replay_end) == (day(0), day(2))
    assert absence.lost_days(episode) == [day(0), day(1), day(2)]


def test_a_short_silence_whose_files_come_back_incomplete_needs_a_replay(calendar, conn):
    # Silent on days 1 and 2; on day 3 the establishment sends only J-1 (a producer that does
    # not re-send the window): the visits of days 0 and 1 are not covered.
    calendar.send(A, day(0))
    for n in (0, 1, 2):
        calendar.monitor(day(n))
    calendar.send(A, day(3), start=day(2), end=day(2))
    result = calendar.monitor(day(3))
    ((_, episode),) = result.replay_needed
    assert (episode.replay_start, episode.replay_end) == (day(0), day(1))


def test_a_file_dropped_after_the_cutoff_still_heals_the_day(calendar, conn):
    calendar.send(A, day(0))
    calendar.monitor(day(0))
    calendar.monitor(day(1))  # nothing at 10:00...
    calendar.send(A, day(1), hour=14)  # ...the file came at 14:00
    calendar.send(A, day(2))
    result = calendar.monitor(day(2))
    assert [w.finess for w, _ in result.healed] == [A]


def test_a_collapsing_flow_is_warned_once(calendar, conn):
    # Eight weeks of history (about 40 visits a day), then a file whose J-1 has a handful.
    calendar.send(A, day(-1), start=day(-60), end=day(-3), visits=40)
    calendar.send(A, day(0), start=day(-1), end=day(-1), visits=2)
    calendar.send(B, day(0), visits=40)
    calendar.send(C, day(0))
    result = calendar.monitor(day(0))
    ((establishment, warning),) = result.warnings
    assert (establishment.finess, warning.day) == (A, day(-1))
    assert warning.visits < warning.usual / 2 and warning.usual > 25
    (to, subject, body), = calendar.take_mails()
    assert "1 flux en forte baisse" in subject
    assert "FLUX EN FORTE BAISSE" in body and f"CH de Alpha (FINESS {A}" in body
    assert f"{warning.visits} passages le dimanche 01/03/2026, contre {warning.usual:g} habituellement" in body
    assert not any(a.startswith("dsi-") for a in to)
    assert [m[0] for m in calendar.it_mails[-1:]] == [[f"dsi-{A}@example.org"]]
    calendar.monitor(day(0))
    assert calendar.take_mails() == []
    assert conn.execute("SELECT count(*) FROM flow_warning WHERE alerted_at IS NOT NULL").fetchone() == (1,)


def test_the_oru_digest_lists_absences_and_streaks_once_a_day(calendar, conn, region):
    for n in range(8):
        calendar.send(C, day(n))
        calendar.send(B, day(n))
    calendar.monitor(day(7))
    calendar.take_mails()
    text = absence.send_oru_digest(conn, region, day(7), datetime.combine(day(7), time(10), TZ), calendar.notify)
    (to, subject, body), = calendar.take_mails()
    assert to == [OPERATOR] and subject == "[RPU TST] Bilan quotidien du 09/03/2026 : absences et bascules"
    assert body == text
    assert f"CH de Alpha (FINESS {A}, ORDRE 0, en production) : sans fichier depuis le 09/03/2026 (1 j)" in body
    assert f"Clinique Gamma (FINESS {C}, ORDRE 0) : 8 jours corrects consécutifs (depuis le 02/03/2026) — éligible" in body
    assert f"Éligibles au passage en production (rpu establishments promote FINESS --ordre N) : {C}/0" in body
    assert absence.send_oru_digest(conn, region, day(7), datetime.now(TZ), calendar.notify) is None
    assert calendar.take_mails() == []


def test_a_failed_email_is_sent_by_the_next_run(calendar, conn):
    calendar.send(B, day(0))
    calendar.send(C, day(0))

    def broken(to, subject, body):
        raise ConnectionRefusedError("SMTP injoignable")

    with pytest.raises(ConnectionRefusedError):
        absence.run_monitor(conn, calendar.region, day(0), datetime.combine(day(0), time(10), TZ), broken)
    assert conn.execute("SELECT count(*), count(alerted_at) FROM absence_day").fetchone() == (1, 0)
    result = calendar.monitor(day(0))
    assert result.alert_sent and len(calendar.take_mails()) == 1
    assert conn.execute("SELECT days_missing FROM absence_episode").fetchone() == (1,)


def test_the_monitor_dag_emails_the_ars_and_the_oru(airflow_db, db_url, calendar, mailbox):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["rpu_absence_monitor"]
    for task in dag.tasks:
        task.retries = 0
    for n in range(7):
        calendar.send(C, day(n))
        calendar.send(B, day(n))
    dag_run = dag.test(logical_date=datetime.combine(day(6), time(10), TZ))
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    alert = mailbox.wait_for(lambda m: m["Subject"].startswith("[RPU TST] Veille du 08/03/2026 : "), timeout=10)
    assert ARS in alert["X-RcptTo"] and "dsi-" not in alert["X-RcptTo"]
    assert f"CH de Alpha (FINESS {A}" in alert.get_content()
    # The establishment's IT gets its own copy, naming no other establishment.
    own = mailbox.wait_for(lambda m: m["Subject"] == "[RPU TST] Veille du 08/03/2026 : CH de Alpha", timeout=10)
    assert own["X-RcptTo"] == f"dsi-{A}@example.org"
    assert f"CH de Alpha (FINESS {A}" in own.get_content() and "FINESS " + B not in own.get_content()
    digest = mailbox.wait_for(lambda m: m["Subject"].startswith("[RPU TST] Bilan quotidien du 08/03/2026"), timeout=10)
    assert OPERATOR in digest["X-RcptTo"]
    assert f"Clinique Gamma (FINESS {C}, ORDRE 0) : 7 jours corrects consécutifs" in digest.get_content()
    # The same day again: nothing new is sent.
    count = len(mailbox.received)
    dag_run = dag.test(logical_date=datetime.combine(day(6), time(10, 30), TZ))
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert dag_run.state == "success", states
    assert states["report_to_oru"] == "skipped"
    assert len(mailbox.received) == count


def test_days_the_monitor_did_not_run_are_judged_at_the_next_run(calendar, conn):
    calendar.send(A, day(0))
    calendar.send(B, day(0))
    calendar.monitor(day(0))
    calendar.take_mails()  # C never sends: absent from the first run on
    calendar.send(B, day(3))
    result = calendar.monitor(day(4))  # nothing ran on days 1..3
    assert silent(result) == {A: 4, B: 1, C: 5}
    assert [e.first_missing_day for e in episodes_of(conn, A)] == [day(1)]
    (_, _, body), = calendar.take_mails()
    assert (f"CH de Alpha (FINESS {A}, ORDRE 0, en production) : dernier fichier chargé le 02/03/2026 ; 4 jours "
            "sans fichier (du 03/03/2026 au 06/03/2026).") in body
    assert f"Clinique Gamma (FINESS {C}, ORDRE 0, en parallèle) : aucun fichier chargé à ce jour ; 5 jours" in body
