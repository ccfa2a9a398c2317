"""The switch from an older concentrator: streaks of correct days, promotion parallel → live,
and ``rpu establishments sync|list|promote``."""

from __future__ import annotations

import argparse
import tomllib
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from conftest import migrated, write_region_file

from rpu.cli.monitor import register_establishment_commands
from rpu.config import region as region_config
from rpu.flows import switch
from rpu.sandbox.generator import demo_establishments, write_oscour_file
from rpu.store import registry
from rpu.store.loader import load_file

TZ = ZoneInfo("Europe/Paris")
P, Q, L = (e["finess"] for e in demo_establishments(3, seed=23))
TODAY = datetime.now(TZ).date()  # the command line judges the real today


@pytest.fixture
def region_path(tmp_path, monkeypatch):
    return write_region_file(tmp_path, monkeypatch, ars_emails=["ars@example.org"], establishments=[
        {"finess": P, "ordre": 0, "name": "CH de Papa", "status": "parallel"},
        {"finess": Q, "ordre": 0, "name": "CH de Québec", "status": "parallel"},
        {"finess": L, "ordre": 0, "name": "CH de Lima", "status": "live"},
    ]).path


@pytest.fixture
def db_url(fresh_database_url, region_path, monkeypatch):
    url = migrated(fresh_database_url())
    monkeypatch.setenv("RPU_DATABASE_URL", url)
    with psycopg.connect(url) as conn:
        registry.sync(conn, region_config.load(region_path), author="test")
    return url


@pytest.fixture
def conn(db_url):
    with psycopg.connect(db_url) as connection:
        yield connection


def send(conn, folder, finess: str, on: date, *, defects=(), hour: int = 3) -> str:
    path = folder / f"{finess}_{on:%Y%m%d}_{hour}.xml"
    write_oscour_file(path, finess, 0, on - timedelta(days=7), on - timedelta(days=1), visits_per_day=10,
                      seed=on.toordinal() + hour, extract=datetime.combine(on, time(hour)), defects=defects)
    result = load_file(conn, path, sender=finess)
    conn.execute("UPDATE received_file SET received_at = %s WHERE id = %s",
                 (datetime.combine(on, time(hour, 30), TZ), result.received_file_id))
    conn.commit()
    return result.status


def rpu(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rpu")
    register_establishment_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def status_in_file(path, finess: str) -> str:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return next(e["status"] for e in data["establishment"] if e["finess"] == finess)


def test_streak_counts_correct_days_and_a_rejected_file_breaks_it(conn, tmp_path):
    d = date(2026, 3, 10)
    for n in range(10):
        if n != 4:  # day 4 has no file at all
            send(conn, tmp_path, P, d + timedelta(days=n))
    assert send(conn, tmp_path, P, d + timedelta(days=3), defects=["NOT_XML"], hour=5) == "rejected"

    today = d + timedelta(days=9)
    streak = switch.streak(conn, P, 0, today, name="CH de Papa")
    assert (streak.days, streak.last_day, streak.broken_on, streak.broken_because) == (
        5, today, d + timedelta(days=4), "aucun fichier chargé")
    assert not streak.eligible and streak.since == d + timedelta(days=5)
    # Nothing yet today (the day is not over): the streak ends yesterday, unbroken.
    streak = switch.streak(conn, P, 0, today + timedelta(days=1))
    assert (streak.days, streak.last_day) == (5, today)
    # Two days without a file: broken.
    assert switch.streak(conn, P, 0, today + timedelta(days=2)).days == 0
    # The rejected file of day 3 breaks the streak too.
    streak = switch.streak(conn, P, 0, d + timedelta(days=3))
    assert (streak.days, streak.broken_on, streak.broken_because) == (0, d + timedelta(days=3), "fichier rejeté")
    streak = switch.streak(conn, P, 0, d + timedelta(days=2))
    assert streak.days == 3 and "3/7 jours corrects consécutifs — pas encore éligible" in streak.describe()


def test_promotion_is_refused_before_seven_days_and_accepted_after(conn, tmp_path, region_path, capsys):
    for n in range(6, 0, -1):  # six correct days, ending yesterday (nothing yet today)
        send(conn, tmp_path, P, TODAY - timedelta(days=n))
    assert {s.finess: s.days for s in switch.streaks(conn, TODAY)} == {P: 6, Q: 0}

    assert rpu("establishments", "promote", P) == 1
    err = capsys.readouterr().err
    assert f"Passage en production refusé pour CH de Papa (FINESS {P}, ORDRE 0) : 6 jour(s) correct(s) consécutif(s) " \
           "sur les 7 exigés." in err
    assert "aucun fichier chargé" in err and "--force --reason" in err
    assert conn.execute("SELECT status FROM establishment WHERE finess = %s", (P,)).fetchone() == ("parallel",)
    assert status_in_file(region_path, P) == "parallel"

    assert rpu("establishments", "list") == 0
    out = capsys.readouterr().out
    assert "6/7 j" in out and "CH de Papa" in out and "Éligibles" not in out

    send(conn, tmp_path, P, TODAY)  # the seventh day
    assert rpu("establishments", "list") == 0
    assert "7 j — éligible" in capsys.readouterr().out
    assert rpu("establishments", "promote", P, "--author", "marie.oru") == 0
    out = capsys.readouterr().out
    assert f"{P}/0 : parallel → live" in out and "marie.oru" in out
    row = conn.execute("SELECT old_status, new_status, changed_by, reason FROM establishment_status_change"
                       " WHERE finess = %s ORDER BY id DESC LIMIT 1", (P,)).fetchone()
    conn.commit()
    assert row == ("parallel", "live", "marie.oru", "passage en production : 7 jours corrects consécutifs")
    assert status_in_file(region_path, P) == "live"
    # The next sync keeps it live (the region file says so).
    assert rpu("establishments", "sync", "--author", "cron") == 0
    assert "0 changement(s)" in capsys.readouterr().out
    assert conn.execute("SELECT status FROM establishment WHERE finess = %s", (P,)).fetchone() == ("live",)
    # Already live: nothing to promote.
    assert rpu("establishments", "promote", P) == 1
    assert "seul un établissement en parallèle" in capsys.readouterr().err


def test_forcing_needs_a_reason_and_is_recorded(conn, tmp_path, region_path, capsys):
    send(conn, tmp_path, Q, TODAY - timedelta(days=1))
    assert rpu("establishments", "promote", Q, "--force") == 2
    assert "--force exige un motif" in capsys.readouterr().err
    assert rpu("establishments", "promote", Q, "--force", "--reason", "ancien concentrateur arrêté le 01/12",
               "--author", "paul.oru") == 0
    assert "Passage forcé" in capsys.readouterr().out
    row = conn.execute("SELECT changed_by, reason FROM establishment_status_change WHERE finess = %s"
                       " ORDER BY id DESC LIMIT 1", (Q,)).fetchone()
    assert row == ("paul.oru", "passage en production forcé (1 jour(s) correct(s) consécutif(s)) : "
                               "ancien concentrateur arrêté le 01/12")
    assert status_in_file(region_path, Q) == "live"


def test_unknown_establishment_and_unwritable_region_file(conn, tmp_path, region_path, capsys):
    assert rpu("establishments", "promote", "670780691") == 1
    assert "Établissement inconnu : FINESS 670780691" in capsys.readouterr().err
    for n in range(6, -1, -1):
        send(conn, tmp_path, P, TODAY - timedelta(days=n))
    with pytest.raises(switch.PromotionRefused, match="rien n'a été changé"):
        switch.promote(conn, P, 0, TODAY, author="x", region_path=tmp_path / "absent.toml")
    assert conn.execute("SELECT status FROM establishment WHERE finess = %s", (P,)).fetchone() == ("parallel",)
    assert conn.execute("SELECT count(*) FROM establishment_status_change WHERE new_status = 'live'").fetchone() == (1,)


def test_sync_reports_changes(db_url, region_path, capsys):
    text = region_path.read_text().replace('status = "live"', 'status = "inactive"')
    region_path.write_text(text)
    assert rpu("establishments", "sync", "--region", str(region_path), "--author", "admin") == 0
    assert f"statut : {L}/0 : live → inactive" in capsys.readouterr().out
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT changed_by FROM establishment_status_change WHERE finess = %s"
                            " ORDER BY id DESC LIMIT 1", (L,)).fetchone() == ("admin",)
    region_path.write_text("[region]\ncode = \"X\"\n")
    assert rpu("establishments", "sync") == 1
    assert "manquant" in capsys.readouterr().err


def test_the_region_file_cannot_bypass_the_seven_days(conn, region_path):
    """Writing status = "live" by hand for a parallel establishment is refused by sync until it
    has its 7 correct days (only `promote --force --reason` overrides, and is recorded)."""
    from rpu.flows import switch

    region_config.set_establishment_status(region_path, P, 0, "live")
    refused: list[str] = []
    registry.sync(conn, region_config.load(region_path), author="test", refused=refused,
                  may_go_live=lambda f, o: switch.streak(conn, f, o, TODAY).eligible)
    status = conn.execute("SELECT status FROM establishment WHERE finess = %s", (P,)).fetchone()[0]
    assert status == "parallel" and len(refused) == 1 and "refusé" in refused[0]
