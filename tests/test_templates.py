"""The texts people read, rendered from ``include/templates/`` with sample data: the French
wording, and that a value from outside (a file name, a value read in a file, an establishment's
name) cannot forge a line of a report or break an e-mail's subject; HTML is escaped."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from rpu.flows import absence_mail, ingest_reports, replay, switch
from rpu.flows.absence_journal import Episode, FlowWarning, Watched
from rpu.flows.plain_text import one_line, render, shown, subject
from rpu.flows.report import format_report
from rpu.flows.templating import render as render_html
from rpu.formats.rules import Finding
from rpu.sandbox.generator import write_oscour_file
from rpu.store.copy_in import validate_file
from rpu.store.loader import LoadResult

FORGED = "x.xml\nVerdict : ACCEPTÉ"  # a name that would forge a verdict line if written as it is
REGION = SimpleNamespace(name="Région Test", code="TST", timezone="Europe/Paris", airflow_url="https://airflow.test/")
TODAY = date(2026, 3, 12)


def episode(**changes) -> Episode:
    fields = dict(id=1, finess="670780055", ordre=0, first_missing_day=date(2026, 3, 1),
                  last_missing_day=date(2026, 3, 11), days_missing=11, state="open", alerted_at=None, resumed_on=None,
                  replay_start=None, replay_end=None, end_notified_at=None, closed_at=None, replay_send_id=None,
                  created_at=datetime(2026, 3, 1, tzinfo=UTC), updated_at=datetime(2026, 3, 1, tzinfo=UTC))
    return Episode(**(fields | changes))


def establishment(name: str = "CH de Alpha", status: str = "live") -> Watched:
    return Watched("670780055", 0, name, status, ["dsi@example.org"], ["ars@example.org"])


def lines_starting(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


# --- the helpers ---------------------------------------------------------------------------------

def test_one_line_escapes_what_would_break_a_line_and_nothing_else():
    assert one_line("CH « Sainte-Anne »\u00a0: 12\u202f000") == "CH « Sainte-Anne »\u00a0: 12\u202f000"
    assert one_line("a\nb\r\nc\u2028d\x85e") == "a\\nb\\r\\nc\\u2028d\\x85e"
    assert one_line("abc\u202edcba") == "abc\\u202edcba"  # a bidirectional override, shown
    assert one_line(None) == "" and one_line(42) == "42"
    assert len(one_line(FORGED).splitlines()) == 1


def test_shown_quotes_a_name_that_is_not_plain():
    assert shown("nuit.xml") == "nuit.xml"
    assert shown("a\nb.xml") == "'a\\nb.xml'"


def test_a_subject_is_one_line_whatever_the_template():
    text = subject("absence_alert_subject.txt.j2", region_code="TST", today=TODAY,
                   establishment=establishment("CH\nBcc: pirate@example.org"))
    assert text == "[RPU TST] Veille du 12/03/2026 : CH\\nBcc: pirate@example.org"
    assert "\n" not in text


# --- the report beside a file ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def flagged_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("templates") / "nuit.xml"
    write_oscour_file(path, "670780055", 0, date(2026, 3, 1), date(2026, 3, 7), visits_per_day=20,
                      defects=("ENTREE_MISSING", "VALUE_NOT_IN_SET"), variant="lowercase")
    return validate_file(path)


def test_the_file_report_in_french(flagged_report):
    text = format_report(flagged_report, outcome="chargé", applied="Appliqué pour 01/03–07/03.")
    lines = text.splitlines()
    assert lines[:4] == ["Rapport de contrôle du fichier RPU : " + flagged_report.file, "",
                         "Verdict : ACCEPTÉ (chargé)", "Jours appliqués : Appliqué pour 01/03–07/03."]
    assert "Établissement : FINESS 670780055, ORDRE 0" in lines
    assert "Période déclarée : du 01/03/2026 au 07/03/2026" in lines
    assert "[ENTREE_MISSING] " in text and "(1 passage rejeté)" in text
    assert lines_starting(text, "    À faire : ") and lines_starting(text, "    - Passage n°")
    assert "ont été normalisés ; merci de corriger l'export à terme." in text
    assert text.endswith(".\n") and not text.endswith("\n\n")


def test_a_rejected_file_report_says_what_to_do(flagged_report):
    rejected = dataclasses.replace(flagged_report,
                                   findings=[Finding("PERIOD_REVERSED", detail="Du 07/03 au 01/03.")])
    text = format_report(rejected)
    assert "Verdict : REJETÉ : aucun passage de ce fichier n'a été pris en compte." in text
    assert "Motif du rejet du fichier :\n  [PERIOD_REVERSED] " in text and "      À faire : " in text
    assert text.endswith("Corrigez le fichier puis déposez-le à nouveau dans votre dossier depot/.\n")
    assert "Passages retenus" not in text


def test_a_file_name_or_a_value_cannot_forge_a_line_of_the_report(flagged_report):
    hostile = dataclasses.replace(
        flagged_report, file=FORGED,
        findings=[Finding("SENDER_MISMATCH", field="FINESS", value="1\nVerdict : ACCEPTÉ", detail="Dossier 67.")])
    text = format_report(hostile)
    assert lines_starting(text, "Verdict") == ["Verdict : REJETÉ : aucun passage de ce fichier n'a été pris en compte."]
    assert "x.xml\\nVerdict : ACCEPTÉ" in text and "1\\nVerdict : ACCEPTÉ" in text


def test_the_short_verdict_of_a_duplicate():
    result = LoadResult(file=FORGED, status="duplicate", received_file_id=7, same_as=3, same_as_name="nuit\n.xml")
    text = ingest_reports.report_text(result)
    assert text.startswith("Fichier : x.xml\\nVerdict : ACCEPTÉ\n\nVerdict : DOUBLON\nFichier identique au fichier "
                           "« nuit\\n.xml » (journal n°3) : ce dépôt n'a rien changé.")
    assert lines_starting(text, "Verdict") == ["Verdict : DOUBLON"]


# --- the ingest's e-mail to the ORU ---------------------------------------------------------------

def test_the_inbox_check_e_mail():
    held = {"id": 12, "file": "vide\n.xml", "finess": "670780055", "ordre": 0, "start": "14/11/2026",
            "end": "20/11/2026", "days": [{"day": "20/11/2026", "held": 130, "brought": 0}]}
    text = render("inbox_check.txt.j2", failed=["670780055/depot/a.xml"], links_removed=["670780055/traites/lien"],
                  held=[held], technical=[{"file": "670780055/depot/b.xml", "id": 9, "error": "Traceback\n  boom"}],
                  sender_mismatches=[{"file": "670780055/depot/c.xml", "finess": "750000001"}],
                  unknown_folders=["999999999", "evil\n  - 670780055/"])
    assert "Fichiers mis en attente (rien n'a été appliqué)" in text
    assert "  - n°12 'vide\\n.xml', FINESS 670780055/0, période du 14/11/2026 au 20/11/2026 :" in text
    assert "      20/11/2026 : 130 passage(s) détenu(s), 0 dans ce fichier" in text
    assert 'rpu files apply N --reason "..."' in text
    assert "  - 670780055/depot/b.xml (journal n°9) :\n      Traceback\n        boom" in text
    assert "  - 670780055/depot/c.xml : FINESS d'en-tête 750000001" in text
    assert "  - 999999999/" in text and "  - 'evil\\n  - 670780055/'/" in text
    assert "Liens symboliques" in text and "  - 670780055/traites/lien" in text
    assert subject("inbox_check_subject.txt.j2", region_code="TST") == "[RPU TST] Dépôts à vérifier"


# --- the absence monitor's e-mails ----------------------------------------------------------------

def test_the_absence_alert():
    silent = [(establishment(), episode(days_missing=11))]
    warnings = [(None, FlowWarning("670780063", 0, date(2026, 3, 8), 3, 40.5))]
    healed = [(establishment("CH\nÉTABLISSEMENTS SANS FICHIER"), episode(state="healed", resumed_on=date(2026, 3, 12)))]
    text = absence_mail.alert_text(REGION, TODAY, datetime(2026, 3, 12, 9, 5, tzinfo=UTC), silent, warnings, healed,
                                   {("670780055", 0): date(2026, 2, 28)})
    assert text.startswith("Bonjour,\n\nContrôle du 12/03/2026 des fichiers RPU reçus par le concentrateur régional "
                           "(Région Test).\n")
    assert ("  - CH de Alpha (FINESS 670780055, ORDRE 0, en production) : dernier fichier chargé le 28/02/2026 ; "
            "11 jours sans fichier (du 01/03/2026 au 11/03/2026).") in text
    assert "    Passages perdus pour Santé publique France même si l'établissement renvoie son fichier dès demain : " in text
    assert "  - FINESS 670780063, ORDRE 0 : 3 passages le dimanche 08/03/2026, contre 40.5 habituellement." in text
    assert "envois repris le 12/03/2026." in text
    assert lines_starting(text, "ÉTABLISSEMENTS SANS FICHIER") == ["ÉTABLISSEMENTS SANS FICHIER AUJOURD'HUI"]
    assert text.endswith("Message envoyé automatiquement par le concentrateur RPU (TST) le 12/03/2026 à 10:05.\n")
    assert subject("absence_alert_subject.txt.j2", region_code="TST", today=TODAY, establishment=None, silent_count=2,
                   warning_count=1) == "[RPU TST] Veille du 12/03/2026 : 2 établissements sans fichier, 1 flux en forte baisse"


def test_the_replay_needed_e_mail():
    ended = episode(state="replay_needed", resumed_on=date(2026, 3, 12), replay_start=date(2026, 2, 28),
                    replay_end=date(2026, 3, 3))
    text = absence_mail.replay_needed_text(REGION, establishment(status="parallel"), ended)
    assert "    Période à reprendre : du 28/02/2026 au 03/03/2026 (dates d'entrée des passages)" in text
    assert "déclenchez la reprise dans Airflow : https://airflow.test/dags/rpu_invs_replay" in text
    assert '{"finess": "670780055", "ordre": 0, "start": "2026-02-28", "end": "2026-03-03", "dry_run": true' in text
    assert "Établissement en parallèle : c'est encore l'ancien concentrateur" in text
    assert (subject("replay_needed_subject.txt.j2", region_code="TST", establishment=establishment("CH\nA"),
                    episode=ended) == "[RPU TST] Reprise nécessaire : CH\\nA (FINESS 670780055) du 28/02/2026 au 03/03/2026")


def test_the_oru_digest():
    streaks = [switch.Streak("670780071", 0, "Clinique\nGamma", 8, date(2026, 3, 11), None, None),
               switch.Streak("670780089", 0, "Clinique Delta", 3, date(2026, 3, 11), date(2026, 3, 8), "fichier rejeté")]
    text = render("oru_digest.txt.j2", region_name="Région Test", today=TODAY, yesterday=date(2026, 3, 11),
                  open_ones=[(establishment(), episode())], waiting=[(None, episode(replay_start=date(2026, 3, 1),
                                                                                     replay_end=date(2026, 3, 2)))],
                  warnings=[], streaks=streaks, eligible=["670780071/0"], eligible_days=switch.ELIGIBLE_DAYS,
                  replay_dag_id="rpu_invs_replay", refusals="Reprises refusées (...) : 1\n  - une\n",
                  runs_link="https://airflow.test/dags/rpu_absence_monitor")
    assert text.startswith("Bilan du 12/03/2026 — Région Test\n\nAbsences en cours : 1\n")
    assert "  - FINESS 670780055, ORDRE 0 : du 01/03/2026 au 02/03/2026" in text
    assert ("  - Clinique\\nGamma (FINESS 670780071, ORDRE 0) : 8 jours corrects consécutifs (depuis le 04/03/2026) "
            "— éligible\n") in text
    assert ("Clinique Delta (FINESS 670780089, ORDRE 0) : 3/7 jours corrects consécutifs — pas encore éligible "
            "(dernier jour non conforme : 08/03/2026, fichier rejeté)") in text
    assert text.endswith("\n\nReprises refusées (...) : 1\n  - une\n\nJournal des exécutions : "
                         "https://airflow.test/dags/rpu_absence_monitor\n")
    assert streaks[1].describe().startswith("Clinique Delta (FINESS 670780089, ORDRE 0) : 3/7 jours")
    assert subject("oru_digest_subject.txt.j2", region_code="TST", today=TODAY) == (
        "[RPU TST] Bilan quotidien du 12/03/2026 : absences et bascules")


# --- the replays ------------------------------------------------------------------------------------

def test_the_replay_report():
    request = replay.ReplayRequest("670780055", 0, date(2026, 3, 1), date(2026, 3, 2), "absence\nd'envoi", True,
                                   "ars.dupont", "CH de Alpha")
    lines = replay.BuiltReplay(Path("x.xml"), 101, {date(2026, 3, 1): 1, date(2026, 3, 2): 100}).report(request)
    assert lines == [
        "Reprise SIMULÉE : FINESS 670780055 ORDRE 0 (CH de Alpha), du 01/03/2026 au 02/03/2026, 101 passages, "
        "demandée par ars.dupont : absence\\nd'envoi",
        "  dimanche  01/03/2026 :      1 passage",
        "  lundi     02/03/2026 :    100 passages",
        "Simulation : rien n'a été envoyé. Pour l'envoi réel, déclenchez de nouveau avec les mêmes valeurs et "
        "« Simulation » décochée."]


# --- HTML is escaped ------------------------------------------------------------------------------

def test_html_templates_escape_what_they_are_given():
    values = {"region_code": "TST", "dag_id": "rpu_ingest", "task_id": "load", "mapped": "<script>1</script>",
              "run_id": "r", "try_number": 1, "requested_by": "<script>alert(2)</script>",
              "cause": "ValueError : <script>alert(3)</script>", "log_url": None}
    html = render_html("operator_alert.html.j2", **values)
    assert "<script>" not in html and "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    assert "&amp;lt;" not in html  # escaped once, not twice
    section = render_html("ars_timeliness_section.html.j2", start=date(2026, 1, 1), last_day=date(2026, 2, 28),
                          export_start=date(2026, 1, 1), chart="", target=0.8, lines=[("<script>alert(4)</script>", None, False)])
    assert "<script>" not in section and "&lt;script&gt;alert(4)&lt;/script&gt;" in section


def test_the_establishment_report_subject():
    from rpu.flows.establishment_report import email_text

    region = SimpleNamespace(name="Région Test", code="TST", operator_emails=["oru@example.org"])
    title, body = email_text(region, "CH\nde Alpha", "670780055", 0, date(2026, 3, 1), date(2026, 3, 31), 1200,
                             "670780055/rapports/r.html", "link")
    assert title == "[RPU TST] Votre rapport du 01/03/2026 au 31/03/2026 — CH\\nde Alpha"
    assert body.startswith("Bonjour,\n\nVoici le rapport des RPU de CH\\nde Alpha (FINESS 670780055) reçus par")
