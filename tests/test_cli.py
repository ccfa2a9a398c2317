"""The ``rpu`` command as ORU staff and hospital IT run it: a real process, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import psycopg

from rpu.sandbox.generator import demo_establishments, write_oscour_file

REPO = Path(__file__).resolve().parent.parent
FINESS = demo_establishments(1)[0]["finess"]
JSON_KEYS = {"file", "status", "finess", "ordre", "period_start", "period_end", "records", "rejected_records",
             "flagged_records", "issues"}


def rpu(*args, env=None):
    environment = dict(os.environ, PYTHONPATH=str(REPO / "plugins"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "rpu", *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=120)


def _file(tmp_path, name, **kwargs):
    path = tmp_path / name
    write_oscour_file(path, FINESS, 0, date(2026, 11, 10), date(2026, 11, 16), visits_per_day=20, seed=1, **kwargs)
    return path


def test_validate_json_has_exactly_the_documented_keys(tmp_path):
    good = _file(tmp_path, "good.xml", defects=["VALUE_NOT_IN_SET"])
    result = rpu("validate", "--json", good)
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert set(report) == JSON_KEYS
    assert report["status"] == "accepted" and report["finess"] == FINESS and report["ordre"] == 0
    assert (report["period_start"], report["period_end"]) == ("2026-11-10", "2026-11-16")
    assert report["flagged_records"] == 1 and report["rejected_records"] == 0
    (issue,) = report["issues"]
    assert set(issue) == {"rule", "record", "field", "message"} and issue["rule"] == "VALUE_NOT_IN_SET"


def test_validate_exit_codes(tmp_path):
    good, bad = _file(tmp_path, "good.xml"), _file(tmp_path, "bad.xml", defects=["FINESS_CHECK_DIGIT"])
    assert rpu("validate", good).returncode == 0
    result = rpu("validate", "--json", good, bad)
    assert result.returncode == 1
    reports = json.loads(result.stdout)
    assert [r["status"] for r in reports] == ["accepted", "rejected"]
    assert reports[1]["issues"][0]["record"] is None and reports[1]["issues"][0]["rule"] == "FINESS_CHECK_DIGIT"
    assert rpu("validate").returncode == 2
    missing = rpu("validate", tmp_path / "nope.xml")
    assert missing.returncode == 2 and "introuvable" in missing.stderr


def test_validate_prints_a_french_report_without_a_stack_trace(tmp_path):
    junk = tmp_path / "junk.xml"
    junk.write_bytes(os.urandom(2048))
    result = rpu("validate", junk)
    assert result.returncode == 1
    assert "REJETÉ" in result.stdout and "NOT_XML" in result.stdout and "Traceback" not in result.stderr


def test_load_prints_what_happened_to_each_file(tmp_path, fresh_database_url):
    url = fresh_database_url()
    assert rpu("db", "migrate", "--database", url).returncode == 0
    again = rpu("db", "migrate", "--database", url)
    assert again.returncode == 0 and "schéma à jour" in again.stdout
    good = _file(tmp_path, "good.xml")
    result = rpu("load", good, good, env={"RPU_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    first, second = [line for line in result.stdout.splitlines() if line.startswith(str(good))]
    assert "chargé" in first and "doublon" in second
    bad = _file(tmp_path, "bad.xml", defects=["PERIOD_REVERSED"])
    result = rpu("load", bad, "--database", url)
    assert result.returncode == 1 and "rejeté" in result.stdout
    with psycopg.connect(url) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM received_file ORDER BY id")]
    assert statuses == ["loaded", "duplicate", "rejected"]


def test_load_without_a_database_says_so(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "RPU_DATABASE_URL"}
    result = subprocess.run([sys.executable, "-m", "rpu", "load", str(_file(tmp_path, "f.xml"))], capture_output=True,
                            text=True, env=dict(environment, PYTHONPATH=str(REPO / "plugins")), timeout=60)
    assert result.returncode == 1 and "RPU_DATABASE_URL" in result.stderr


def test_generate_writes_files_that_validate(tmp_path):
    result = rpu("generate", "-n", 3, "-d", 7, "--end", "2026-11-20", "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out").glob("*.xml"))
    assert len(files) == 3
    assert rpu("validate", *files).returncode == 0
