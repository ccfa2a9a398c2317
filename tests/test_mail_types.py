"""``rpu mail onboarding|golive|replay-request``: the ORU's standard e-mails, as the ORU runs
them (a real process), against a real regional database, the session's SMTP sink and the host
key of a real SFTP server."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from datetime import date, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from zoneinfo import ZoneInfo

import paramiko
import pytest

from rpu.config import region as region_config
from rpu.sandbox.generator import demo_establishments
from rpu.sandbox.processes import free_port
from rpu.store import db as store
from rpu.store import registry

REPO = Path(__file__).resolve().parent.parent
ONE, TWO, UNREGISTERED, NOT_SYNCED = demo_establishments(4)
OPERATOR = "oru@example.org"
IT = "dsi-urgences@ch-exemple.fr"
SPF, ATIH = "oscour@santepubliquefrance.example", "syrius@atih.example"


@pytest.fixture
def region(tmp_path, fresh_database_url, sftp_server):
    """A region file with [sftp] (the SFTP server's real public key, as a .pub file) and
    [contacts], two registered establishments (ONE moved parallel -> live, TWO onboarding), and
    NOT_SYNCED declared in the file after the registry was synced."""
    folder = tmp_path / "region"
    folder.mkdir()
    (folder / "sftp_host_key.pub").write_text(sftp_server.host_key_public + "\n")
    path = folder / "region.toml"

    def declared(e, status, contacts):
        return {"finess": e["finess"], "ordre": 0, "name": e["name"], "legal_finess": e["legal_finess"],
                "status": status, "it_contacts": contacts}

    path.write_text(region_config.render(
        code="T", name="Région de test", operator_emails=[OPERATOR],
        establishments=[declared(ONE, "parallel", [IT]), declared(TWO, "onboarding", ["si@autre.example"])]))
    url = fresh_database_url()
    with store.connect(url, autocommit=True) as conn:
        store.migrate(conn)
        registry.sync(conn, region_config.load(path), author="test")
        registry.set_status(conn, ONE["finess"], 0, "live", "test", "7 jours corrects")
    late = NOT_SYNCED["finess"]
    text = path.read_text() + (
        f'\n[[establishment]]\nfiness = "{late}"\nordre = 0\nname = "Pas encore synchronisé"\n'
        + '\n[sftp]\nhost = "depot.rpu.example"\nport = 2222\nhost_key_file = "sftp_host_key.pub"\n'
        + f'\n[contacts]\nspf_emails = ["{SPF}"]\natih_emails = ["{ATIH}"]\n')
    path.write_text(text)
    return {"path": path, "url": url, "cwd": tmp_path}


def rpu(region, *args, env=None):
    environment = dict(os.environ, PYTHONPATH=str(REPO / "plugins"), RPU_DATABASE_URL=region["url"],
                       RPU_REGION_CONFIG=str(region["path"]))
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "rpu", "mail", *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=120, cwd=region["cwd"])


def read_eml(path: Path):
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


def today() -> date:
    return datetime.now(ZoneInfo("Europe/Paris")).date()


def ssh_fingerprint(sftp_server) -> str:
    """The fingerprint as the server presents its key to a client, computed by hand."""
    transport = paramiko.Transport((sftp_server.host, sftp_server.port))
    try:
        transport.start_client(timeout=10)
        blob = transport.get_remote_server_key().asbytes()
    finally:
        transport.close()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_onboarding_written_for_review_then_sent(region, mailbox, sftp_server):
    written = rpu(region, "onboarding", ONE["finess"])
    assert written.returncode == 0, written.stderr
    eml = region["cwd"] / f"courriel_onboarding_{ONE['finess']}_0_{today():%Y%m%d}.eml"
    message = read_eml(eml)
    assert message["To"] == IT and message["Cc"] == OPERATOR and message["Reply-To"] == OPERATOR
    assert message["Subject"] == (f"[RPU T] Raccordement au concentrateur régional RPU : {ONE['name']} "
                                  f"(FINESS {ONE['finess']})")
    body = message.get_content()
    fingerprint = ssh_fingerprint(sftp_server)
    keygen = subprocess.run(["ssh-keygen", "-l", "-f", region["path"].parent / "sftp_host_key.pub"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert keygen[1] == fingerprint and keygen[-1] == "(ED25519)"  # what ssh itself shows
    assert f"ED25519 {fingerprint}" in body
    for expected in ("Serveur : depot.rpu.example", "Port : 2222", f"Compte : e{ONE['finess'].lower()}",
                     f"sftp -P 2222 e{ONE['finess'].lower()}@depot.rpu.example", "depot/", "traites/", "rejetes/",
                     "attente/", ".rapport.txt", "rpu validate MONFICHIER.xml", "7 jours corrects consécutifs",
                     "Région de test", "Cordialement"):
        assert expected in body, expected
    assert not mailbox.received  # written, not sent

    sent = rpu(region, "onboarding", ONE["finess"], "--ordre", 0, "--send")
    assert sent.returncode == 0, sent.stderr
    assert f"Courriel envoyé à {IT}, {OPERATOR}" in sent.stdout
    received = mailbox.wait_for(lambda m: "Raccordement" in str(m["Subject"]))
    (mail,) = mailbox.received
    assert sorted(mail.rcpt_tos) == sorted([IT, OPERATOR])
    assert mail.mail_from == mailbox.from_email  # the sender of the smtp_default connection
    assert received.get_content().replace("\r\n", "\n") == body  # the text written for review


def test_golive_tells_spf_and_atih(region, mailbox):
    sent = rpu(region, "golive", ONE["finess"], "--send")
    assert sent.returncode == 0, sent.stderr
    (mail,) = mailbox.received
    assert sorted(mail.rcpt_tos) == sorted([SPF, ATIH, OPERATOR])
    message = mail.message
    assert message["To"] == f"{SPF}, {ATIH}"
    assert message["Subject"] == (f"[RPU T] Mise en production : {ONE['name']} (FINESS {ONE['finess']}, ORDRE 0) "
                                  f"à partir du {today():%d/%m/%Y}")
    body = message.get_content()
    for expected in (f"FINESS géographique : {ONE['finess']}", "ORDRE : 0", f"Nom : {ONE['name']}",
                     f"FINESS juridique : {ONE['legal_finess']}", f"Date de mise en production : {today():%d/%m/%Y}",
                     "le 10 du mois suivant", "autre concentrateur"):
        assert expected in body, expected
    assert not (region["cwd"] / f"courriel_golive_{ONE['finess']}_0_{today():%Y%m%d}.eml").exists()

    # Announced ahead for an establishment still onboarding: the date must be given.
    refused = rpu(region, "golive", TWO["finess"])
    assert refused.returncode == 1 and "n'est pas en production" in refused.stderr and "--start" in refused.stderr
    ahead = rpu(region, "golive", TWO["finess"], "--start", "2027-01-04", "--out", "annonce.eml")
    assert ahead.returncode == 0, ahead.stderr
    body = read_eml(region["cwd"] / "annonce.eml").get_content()
    assert "à partir du 04/01/2027" in body and "autre concentrateur" not in body


def test_replay_request_to_the_establishment(region, mailbox):
    args = ("replay-request", ONE["finess"], "--start", "2026-11-02", "--end", "2026-11-15",
            "--reason", "passages du service de pédiatrie manquants")
    written = rpu(region, *args, "--out", "renvoi.eml")
    assert written.returncode == 0, written.stderr
    message = read_eml(region["cwd"] / "renvoi.eml")
    assert message["To"] == IT
    assert message["Subject"] == f"[RPU T] Demande de nouvel envoi des RPU du 02/11/2026 au 15/11/2026 : {ONE['name']}"
    body = message.get_content()
    for expected in ("du 02/11/2026 au 15/11/2026 inclus (14 jours)", "Motif : passages du service de pédiatrie",
                     "depot/", "rpu validate", "Cordialement"):
        assert expected in body, expected

    sent = rpu(region, *args, "--send", "--to", "chef.urgences@ch-exemple.fr, dsi2@ch-exemple.fr")
    assert sent.returncode == 0, sent.stderr
    (mail,) = mailbox.received
    assert mail.message["To"] == "chef.urgences@ch-exemple.fr, dsi2@ch-exemple.fr"
    assert sorted(mail.rcpt_tos) == sorted(["chef.urgences@ch-exemple.fr", "dsi2@ch-exemple.fr", OPERATOR])
    assert mail.message.get_content().replace("\r\n", "\n") == body


def test_the_oru_overrides_a_template_beside_its_region_file(region, mailbox, monkeypatch):
    templates = region["path"].parent / "templates"
    templates.mkdir()
    (templates / "mail_signature.txt.j2").write_text(
        "Bien à vous,\nObservatoire régional des urgences de {{ region_name }} — 03 88 00 00 00\n")
    (templates / "mail_golive_subject.txt.j2").write_text("Nouvel établissement : {{ establishment.finess }}\n")
    sent = rpu(region, "golive", ONE["finess"], "--send")
    assert sent.returncode == 0, sent.stderr
    message = mailbox.received[0].message
    assert message["Subject"] == f"Nouvel établissement : {ONE['finess']}"
    body = message.get_content()
    assert "Observatoire régional des urgences de Région de test — 03 88 00 00 00" in body
    assert "Cordialement" not in body and f"FINESS géographique : {ONE['finess']}" in body  # shipped body kept

    # Every template of the concentrator resolves the same way (the DAGs find the region file
    # through RPU_REGION_CONFIG); without the folder, the shipped version.
    from rpu.flows import templating

    context = {"region_name": "Région de test"}
    monkeypatch.setenv("RPU_REGION_CONFIG", str(region["path"]))
    assert templating.render("mail_signature.txt.j2", **context).startswith("Bien à vous,")
    monkeypatch.delenv("RPU_REGION_CONFIG")
    shipped = templating.render("mail_signature.txt.j2", **context, operator_emails=[OPERATOR])
    assert shipped.startswith("Cordialement,") and OPERATOR in shipped


def test_errors_are_one_french_line_and_a_non_zero_exit(region, mailbox):
    def refused(*args, env=None, code=1):
        result = rpu(region, *args, env=env)
        assert result.returncode == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("rpu: ") or code == 2  # argparse's usage line first
        return result.stderr

    assert "inconnu du registre" in refused("onboarding", UNREGISTERED["finess"])
    assert "rpu establishments sync" in refused("onboarding", NOT_SYNCED["finess"])
    assert "FINESS mal formé" in refused("onboarding", "12345")
    assert "ORDRE 3" in refused("onboarding", ONE["finess"], "--ordre", 3)
    with store.connect(region["url"], autocommit=True) as conn:  # a second unit under TWO's FINESS
        conn.execute("INSERT INTO establishment (finess, ordre, name) VALUES (%s, 1, 'Urgences pédiatriques')",
                     (TWO["finess"],))
    assert "plusieurs services d'urgences (ORDRE 0, 1) : précisez --ordre" in refused("onboarding", TWO["finess"])
    assert "Période inversée" in refused("replay-request", ONE["finess"], "--start", "2026-11-15", "--end", "2026-11-02")
    assert "dans le futur" in refused("replay-request", ONE["finess"], "--start", "2026-11-15", "--end", "2999-01-01")
    assert "date invalide" in refused("replay-request", ONE["finess"], "--start", "15/11/2026", "--end", "2026-11-02",
                                      code=2)
    assert "adresse invalide" in refused("onboarding", ONE["finess"], "--to", "pas-une-adresse", code=2)

    # No relay to send through: said so, nothing half-done.
    no_relay = refused("onboarding", ONE["finess"], "--send", env={"AIRFLOW_CONN_SMTP_DEFAULT": ""})
    assert "Relais SMTP inutilisable" in no_relay and "AIRFLOW_CONN_SMTP_DEFAULT absente" in no_relay
    # A relay that does not answer: the message is kept for later.
    closed = json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": free_port(), "extra": {"disable_tls": True}})
    down = refused("onboarding", ONE["finess"], "--send", env={"AIRFLOW_CONN_SMTP_DEFAULT": closed})
    assert "envoi impossible" in down and "connexion refusée" in down
    assert (region["cwd"] / f"courriel_onboarding_{ONE['finess']}_0_{today():%Y%m%d}.eml").is_file()
    assert not mailbox.received

    # The region file without [sftp] host, or with a wrong [sftp] section.
    text = region["path"].read_text()
    region["path"].write_text(text.replace('host = "depot.rpu.example"\n', ""))
    assert "Aucun serveur SFTP configuré" in refused("onboarding", ONE["finess"])
    region["path"].write_text(text.replace("port = 2222", "port = 0").replace(f'"{SPF}"', '"pas une adresse"'))
    wrong = refused("onboarding", ONE["finess"])
    assert "[sftp] port" in wrong and "contacts.spf_emails : adresse invalide" in wrong
    region["path"].write_text(text.replace('host_key_file = "sftp_host_key.pub"', 'host_key_file = "absente.pub"'))
    assert "[sftp] host_key_file illisible" in refused("onboarding", ONE["finess"])
    region["path"].write_text(text.replace(f'spf_emails = ["{SPF}"]\natih_emails = ["{ATIH}"]\n', ""))
    assert "[contacts]" in refused("golive", ONE["finess"])


def test_region_sections_sftp_and_contacts(tmp_path):
    base = region_config.render(code="T", name="Test", operator_emails=[OPERATOR])
    plain = region_config.parse(tomllib.loads(base + '\n[other]\nkey = 1\n'), tmp_path / "r.toml")
    assert plain.sftp == region_config.SftpSettings() and plain.spf_emails == () and plain.extra == {"other": {"key": 1}}
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMlHRmMz6OHXhkg8jO+kq5SI/a2lHBx2bzqkSq9CQ4sS oru@example"
    region = region_config.parse(tomllib.loads(
        base + f'\n[sftp]\nhost = "sftp.example"\nhost_key = "{public}"\n[contacts]\natih_emails = "{ATIH}"\n'),
        tmp_path / "r.toml")
    assert (region.sftp.host, region.sftp.port, region.atih_emails) == ("sftp.example", 22, (ATIH,))
    assert "sftp" not in region.extra and "contacts" not in region.extra
    kind, fingerprint = region_config.host_key_fingerprint(region.sftp.public_key())
    pub = tmp_path / "k.pub"
    pub.write_text(public + "\n")
    shown = subprocess.run(["ssh-keygen", "-l", "-f", pub], capture_output=True, text=True, check=True).stdout
    assert f"{fingerprint} oru@example ({kind})" in shown
    with pytest.raises(region_config.RegionConfigError, match="clé d'hôte illisible"):
        region_config.parse(tomllib.loads(base + '\n[sftp]\nhost_key = "ssh-ed25519 pasdubase64"\n'))


def test_the_relay_is_read_from_the_env_file_beside_the_region_file(region, mailbox):
    """On the ORU's machine the connection is not in the environment but in the region's .env."""
    connection = json.dumps(mailbox.airflow_connection())
    (region["path"].parent / ".env").write_text(f"# secrets\nAIRFLOW_CONN_SMTP_DEFAULT='{connection}'\n")
    sent = rpu(region, "replay-request", ONE["finess"], "--start", "2026-11-02", "--end", "2026-11-02", "--send",
               env={"AIRFLOW_CONN_SMTP_DEFAULT": ""})
    assert sent.returncode == 0, sent.stderr
    (mail,) = mailbox.received
    assert "(1 jour)" in mail.message.get_content() and "Motif" not in mail.message.get_content()
