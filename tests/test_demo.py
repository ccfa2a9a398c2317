"""``rpu demo start | status | stop``, run as ``make run`` runs it: a child process, its state in a
temporary directory (``RPU_DEMO_DIR``), its own databases (dropped at the end).

The demo is started once for the module; the tests below read it in order and the last one
stops it (the fixture stops and purges it anyway, even on failure)."""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
import sys
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import paramiko
import pytest

from rpu import region
from rpu.demo import (
    INBOX_DIR,
    REPO_ROOT,
    AirflowApi,
    DemoState,
    demo_establishments,
    free_port,
    group_members,
    port_free,
)

pytestmark = pytest.mark.timeout(600)


def _env(state: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RPU_"))}
    env.update({"RPU_DEMO_DIR": str(state), "RPU_DEMO_PORT": str(port), "PYTHONPATH": str(REPO_ROOT / "plugins")})
    return env


def _rpu_demo(action: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rpu.demo", action], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


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
        for name in ("scheduler", "dag-processor", "triggerer", "api_server", "rpu.demo sftp", "rpu.demo smtp"):
            if name in cmdline:
                counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    state_root = tmp_path_factory.mktemp("demo") / "state"
    port = free_port()
    env = _env(state_root, port)
    began = time.monotonic()
    started = _rpu_demo("start", env)
    seconds = time.monotonic() - began
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = DemoState(state_root)
        yield {"state": state, "env": env, "port": port, "out": started.stdout, "seconds": seconds,
               "config": json.loads(state.config_path.read_text()),
               "passwords": json.loads(state.passwords_path.read_text())}
    finally:
        stopped = _rpu_demo("stop", env, timeout=120)
        print(stopped.stdout, stopped.stderr)
        for log in sorted((state_root / "logs").glob("*.log")) if state_root.exists() else []:
            print(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-10:]))
        purge = subprocess.run([sys.executable, "-m", "rpu.demo", "stop", "--purge"], env=env, capture_output=True,
                               text=True, timeout=120, cwd=REPO_ROOT)
        print(purge.stdout, purge.stderr)


def test_start_prints_where_everything_is(demo):
    out = demo["out"]
    print(f"rpu demo start : {demo['seconds']:.0f} s")
    assert f"http://localhost:{demo['port']}" in out
    assert f"admin / {demo['passwords']['admin']}" in out
    assert str(demo["state"].mailbox) in out
    assert "make stop" in out
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
    assert {"sftp", "smtp", "scheduler", "dag-processor", "triggerer", "api-server"} <= set(processes)
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
    assert {health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {"healthy"}
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
    days = re.search(r"\((\d+) jours? sans fichier\)", line)
    assert days and int(days.group(1)) >= 9, line
    rejected = state.sftp_root / INBOX_DIR / broken["finess"] / "rejetes"
    reports = list(rejected.glob("*.rapport.txt"))
    assert len(reports) == 1 and reports[0].read_text(encoding="utf-8").strip()
    loaded = [e for e in establishments if e["role"] not in ("silent", "broken")]
    for e in loaded:
        assert list((state.sftp_root / INBOX_DIR / e["finess"] / "traites").glob("*.xml")), e


def test_start_again_is_safe(demo):
    before = {name: (p.pid, p.start_ticks) for name, p in demo["state"].processes().items() if p.alive()}
    again = _rpu_demo("start", demo["env"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "déjà en marche" in again.stdout
    after = {name: (p.pid, p.start_ticks) for name, p in demo["state"].processes().items() if p.alive()}
    assert {k: v for k, v in after.items() if k != "scenario"} == {k: v for k, v in before.items() if k != "scenario"}
    assert _leaders(demo["state"].root, demo["port"]) == {"scheduler": 1, "dag-processor": 1, "triggerer": 1, "api_server": 1,
                                            "rpu.demo sftp": 1, "rpu.demo smtp": 1}


def test_start_restarts_only_what_died(demo):
    state = demo["state"]
    smtp = state.processes()["smtp"]
    os.killpg(smtp.pgid, 15)
    deadline = time.monotonic() + 10
    while group_members(smtp.pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = _rpu_demo("status", demo["env"])
    assert status.returncode == 1 and "ARRÊTÉ" in status.stdout
    again = _rpu_demo("start", demo["env"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "smtp : démarré" in again.stdout and "sftp : déjà en marche" in again.stdout
    assert state.processes()["smtp"].pid != smtp.pid
    assert _rpu_demo("status", demo["env"]).returncode == 0


def test_stop_kills_every_process_group(demo):
    state = demo["state"]
    processes = state.processes()
    stopped = _rpu_demo("stop", demo["env"], timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name, process in processes.items():
        assert not group_members(process.pgid), (name, group_members(process.pgid))
    assert _processes_mentioning(str(state.root), f"port:{demo['port']}") == []
    assert not state.processes()
    assert _rpu_demo("status", demo["env"]).returncode == 3
    for port in (demo["config"]["ports"][k] for k in ("sftp", "smtp", "airflow")):
        assert port_free(port), port
