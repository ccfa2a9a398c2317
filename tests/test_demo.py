"""``rpu demo start | status | stop``, run as ``make run`` runs it: a child process, its state in a
temporary directory (``RPU_DEMO_DIR``), its own databases (dropped at the end).

The demo is started once for the session (``demo_stack`` in conftest.py, shared with the browser
tests); the tests below read it in order and the last one stops it (the fixture stops and purges
it anyway, even on failure)."""

from __future__ import annotations

import os
import re
import smtplib
import time
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import paramiko
import pytest
from conftest import rpu_demo

from rpu.config import region
from rpu.sandbox.airflow_api import AirflowApi
from rpu.sandbox.demo_region import INBOX_DIR, demo_establishments
from rpu.sandbox.processes import group_members, port_free

pytestmark = pytest.mark.timeout(600)


def _processes_mentioning(*texts: str) -> list[int]:
    """Live processes whose command line or environment mentions one of ``texts``. (The API
    server rewrites its process title over its environment: find it by its port.)"""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            blob = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(text.encode() in blob for text in texts):
            found.append(int(entry.name))
    return found


def _leaders(state_root: Path, port: int) -> dict[str, int]:
    """Count of process-group leaders per demo component, found from /proc (not from pids.json)."""
    counts: dict[str, int] = {}
    for pid in _processes_mentioning(str(state_root), f"port:{port}"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if os.getpgid(pid) != pid:
                continue
        except (FileNotFoundError, ProcessLookupError):
            continue
        for name in ("scheduler", "dag-processor", "triggerer", "api_server", "rpu.sandbox.demo sftp", "rpu.sandbox.demo smtp"):
            if name in cmdline:
                counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.fixture(scope="module")
def demo(demo_stack):
    """The session's demo (tests/conftest.py): the browser tests may have used it first."""
    return demo_stack


def test_start_prints_where_everything_is(demo):
    out = demo["out"]
    print(f"rpu demo start : {demo['seconds']:.0f} s")
    assert f"http://localhost:{demo['port']}" in out
    assert f"admin / {demo['passwords']['admin']}" in out
    assert str(demo["state"].mailbox) in out
    assert "make stop" in out
    # The replay to try: dry run first, as the README and the DAG's doc say.
    assert "« Simulation » laissée cochée" in out and "puis de nouveau, décochée, pour l'envoi réel" in out
    assert "Dans les minutes qui viennent, une exécution de chaque DAG" in out
    assert demo["seconds"] < 240


def test_region_has_ten_establishments_mostly_live(demo):
    loaded = region.load(demo["state"].region_path)
    statuses = [e.status for e in loaded.establishments]
    assert len(statuses) == 10
    assert statuses.count("parallel") == 1 and statuses.count("onboarding") == 1 and statuses.count("live") == 8
    assert all(address.endswith("@localhost") for address in loaded.operator_emails + loaded.ars_emails)
    assert loaded.codegeo_csv and loaded.codegeo_csv.is_file()
    assert loaded.extra["access"]["operators"] == ["admin"] and loaded.extra["access"]["ars"] == ["ars"]


def test_every_process_runs_in_its_own_group(demo):
    processes = demo["state"].processes()
    assert {"sftp", "smtp", "scheduler", "dag-processor", "api-server"} <= set(processes)
    assert "triggerer" not in processes  # no task defers (tests/test_sizing.py)
    for name, process in processes.items():
        if name == "scenario":
            continue
        assert process.alive(), name
        assert os.getpgid(process.pid) == process.pgid == process.pid, name
    assert len({p.pgid for p in processes.values()}) == len(processes)


def test_sftp_login_works_and_the_night_is_in_the_depots(demo):
    config, state = demo["config"], demo["state"]
    establishments = demo_establishments()
    host_key = paramiko.Ed25519Key(filename=str(state.root / "sftp-key" / "ssh_host_ed25519_key"))
    transport = paramiko.Transport(("127.0.0.1", config["ports"]["sftp"]))
    try:
        transport.connect(hostkey=host_key, username=config["sftp"]["username"], password=config["sftp"]["password"])
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert set(sftp.listdir(".")) >= {INBOX_DIR, "spf", "ars", "atih"}
        assert sorted(sftp.listdir(INBOX_DIR)) == sorted(e["finess"] for e in establishments)
        for e in establishments:
            # The first ingest run may already have moved the file to traites/ or rejetes/.
            files = [name for folder in ("depot", "traites", "rejetes")
                     if folder in sftp.listdir(f"{INBOX_DIR}/{e['finess']}")
                     for name in sftp.listdir(f"{INBOX_DIR}/{e['finess']}/{folder}") if name.endswith(".xml")]
            assert len(files) == (0 if e["role"] == "silent" else 1), (e, files)
    finally:
        transport.close()
    with pytest.raises(paramiko.AuthenticationException):
        bad = paramiko.Transport(("127.0.0.1", config["ports"]["sftp"]))
        try:
            bad.connect(hostkey=host_key, username=config["sftp"]["username"], password="wrong password")
        finally:
            bad.close()


def test_smtp_sink_keeps_each_message_as_eml(demo):
    mailbox = demo["state"].mailbox
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "test@localhost", "ars@localhost", "Essai de la démo"
    message.set_content("Bonjour")
    with smtplib.SMTP("127.0.0.1", demo["config"]["ports"]["smtp"], timeout=10) as smtp:
        smtp.send_message(message)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        subjects = [BytesParser(policy=policy.default).parsebytes(p.read_bytes())["Subject"]
                    for p in mailbox.glob("*.eml")]
        if "Essai de la démo" in subjects:
            break
        time.sleep(0.2)
    assert "Essai de la démo" in subjects


def test_airflow_is_healthy_with_the_region_accounts(demo):
    base = f"http://127.0.0.1:{demo['port']}"
    admin = AirflowApi(base, "admin", demo["passwords"]["admin"])
    health = admin.request("GET", "/api/v2/monitor/health", auth=False)[1]
    assert {health[k]["status"] for k in ("metadatabase", "scheduler", "dag_processor")} == {"healthy"}
    ars = AirflowApi(base, "ars", demo["passwords"]["ars"])
    admin.wait_for_dag("rpu_ingest", timeout=60)
    assert ars.trigger("rpu_ingest")[0] == 403


def test_first_night_gives_a_rejection_report_and_an_absence_alert(demo):
    """Within minutes: rpu_ingest refuses the broken file (report beside it) and
    rpu_absence_monitor e-mails the ARS about the establishment silent for 9 days."""
    state = demo["state"]
    establishments = demo_establishments()
    broken = next(e for e in establishments if e["role"] == "broken")
    silent = next(e for e in establishments if e["role"] == "silent")
    deadline = time.monotonic() + 300
    alert = None
    while time.monotonic() < deadline and alert is None:
        for path in state.mailbox.glob("*.eml"):
            message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
            body = message.get_body(("plain",))
            # The ARS's copy (each establishment's IT gets its own lines in a separate message).
            if "Veille" in str(message["Subject"]) and "ars@localhost" in str(message["X-RcptTo"]) \
                    and body and silent["finess"] in body.get_content():
                alert = message
        time.sleep(2)
    assert alert is not None, (f"no absence alert naming {silent['finess']}; scenario:\n"
                               + (state.logs / "scenario.log").read_text(errors="replace"))
    assert "ars@localhost" in alert["X-RcptTo"]
    line = next(x for x in alert.get_body(("plain",)).get_content().splitlines() if silent["finess"] in x)
    days = re.search(r"dernier fichier chargé le \d\d/\d\d/\d{4} ; (\d+) jours sans fichier \(du ", line)
    assert days and int(days.group(1)) >= 9, line
    rejected = state.sftp_root / INBOX_DIR / broken["finess"] / "rejetes"
    reports = list(rejected.glob("*.rapport.txt"))
    assert len(reports) == 1 and reports[0].read_text(encoding="utf-8").strip()
    loaded = [e for e in establishments if e["role"] not in ("silent", "broken")]
    for e in loaded:
        assert list((state.sftp_root / INBOX_DIR / e["finess"] / "traites").glob("*.xml")), e


def wait_for_the_scenario(demo, timeout: float = 600) -> None:
    scenario = demo["state"].processes().get("scenario")
    deadline = time.monotonic() + timeout
    while scenario is not None and scenario.alive() and time.monotonic() < deadline:
        time.sleep(2)
    assert "scénario terminé" in (demo["state"].logs / "scenario.log").read_text(errors="replace")


def _run_after(run: dict) -> datetime:
    return datetime.fromisoformat(run["run_after"].replace("Z", "+00:00"))


def test_first_start_runs_each_dag_once(demo):
    """The scenario waits for the run the scheduler starts when a DAG is unpaused, and never
    adds a manual one: one run of each, whatever the time of day (a daily tick passed during
    the test would add one, dated after the start)."""
    wait_for_the_scenario(demo)
    admin = AirflowApi(f"http://127.0.0.1:{demo['port']}", "admin", demo["passwords"]["admin"])
    started = datetime.now(UTC) - timedelta(seconds=time.monotonic() - demo["started_at"])
    for dag_id in ("rpu_ingest", "rpu_absence_monitor", "rpu_ars_daily", "rpu_invs_daily", "rpu_atih_monthly"):
        runs = sorted(admin.runs(dag_id), key=lambda r: r["run_after"])
        assert runs and not [r for r in runs if r["run_type"] == "manual"], (dag_id, runs)
        # The first run is the one the unpause started (its tick may fall just after the start
        # when the demo starts on a quarter hour); any other is a later tick, never a second one.
        assert runs[0]["state"] == "success", (dag_id, runs[0])
        later = [r for r in runs[1:] if _run_after(r) <= max(started, _run_after(runs[0]))]
        assert not later, (dag_id, runs)
    alerts = [p for p in demo["state"].mailbox.glob("*.eml")
              if "Veille" in str(BytesParser(policy=policy.default).parsebytes(p.read_bytes())["Subject"])
              and "ars@localhost" in str(BytesParser(policy=policy.default).parsebytes(p.read_bytes())["X-RcptTo"])]
    assert len(alerts) == 1, [p.name for p in alerts]


def test_the_demo_fits_a_laptop(demo):
    """Under 1 GiB (proportional set size, shared pages counted once) once every DAG has run:
    task slots sized to the machine (not 32 idle workers), no log-serving processes."""
    from rpu.config.sizing import airflow_parallelism

    wait_for_the_scenario(demo)
    slots = airflow_parallelism(os.cpu_count(), len(demo_establishments()))
    assert f"Airflow : {slots} tâches à la fois" in demo["out"]
    total_kib, processes = 0, 0
    groups = {p.pgid for p in demo["state"].processes().values() if p.alive()}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or os.getpgid(int(entry.name)) not in groups:
                continue
            rollup = (entry / "smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        total_kib += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        processes += 1
    print(f"demo: {processes} processes, {total_kib / 1024:.0f} MiB (PSS)")
    assert processes <= 8 + slots, processes
    assert total_kib < 1024 * 1024, f"{total_kib / 1024:.0f} MiB"


def test_start_again_is_safe(demo):
    before = {name: (p.pid, p.start_ticks) for name, p in demo["state"].processes().items() if p.alive()}
    again = rpu_demo("start", demo["env"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "déjà en marche" in again.stdout
    assert "Dans les minutes qui viennent" not in again.stdout  # said at the first start only
    after = {name: (p.pid, p.start_ticks) for name, p in demo["state"].processes().items() if p.alive()}
    assert {k: v for k, v in after.items() if k != "scenario"} == {k: v for k, v in before.items() if k != "scenario"}
    assert _leaders(demo["state"].root, demo["port"]) == {"scheduler": 1, "dag-processor": 1, "api_server": 1,
                                            "rpu.sandbox.demo sftp": 1, "rpu.sandbox.demo smtp": 1}


def test_start_restarts_only_what_died(demo):
    state = demo["state"]
    smtp = state.processes()["smtp"]
    os.killpg(smtp.pgid, 15)
    deadline = time.monotonic() + 10
    while group_members(smtp.pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = rpu_demo("status", demo["env"])
    assert status.returncode == 1 and "ARRÊTÉ" in status.stdout
    again = rpu_demo("start", demo["env"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "smtp : démarré" in again.stdout and "sftp : déjà en marche" in again.stdout
    assert state.processes()["smtp"].pid != smtp.pid
    assert rpu_demo("status", demo["env"]).returncode == 0


def test_stop_kills_every_process_group(demo):
    state = demo["state"]
    processes = state.processes()
    stopped = rpu_demo("stop", demo["env"], timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name, process in processes.items():
        assert not group_members(process.pgid), (name, group_members(process.pgid))
    assert _processes_mentioning(str(state.root), f"port:{demo['port']}") == []
    assert not state.processes()
    assert rpu_demo("status", demo["env"]).returncode == 3
    for port in (demo["config"]["ports"][k] for k in ("sftp", "smtp", "airflow")):
        assert port_free(port), port
