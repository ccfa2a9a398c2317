"""The local services are real: Airflow's own hooks talk to them over loopback."""

from __future__ import annotations

import base64
import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

import asyncssh
import paramiko
import psycopg
import pytest

from rpu.sandbox.local_services import (
    SftpServer,
    SmtpSink,
    create_database,
    drop_database,
    postgres_accepts,
    start_postgres,
    stop_private_postgres,
)
from rpu.sandbox.openssh_server import OpenSshSftpServer

REPO_ROOT = Path(__file__).resolve().parent.parent

# Everything paramiko may raise when the server vanishes under an open session.
CONNECTION_LOST = (OSError, EOFError, paramiko.SSHException)


def _sftp_hook(conn_id: str = "rpu_inbox"):
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    # One attempt: the hook's default retries a refused connection 3 times, 3-5 s apart.
    return SFTPHook(ssh_conn_id=conn_id, conn_retry_attempts=1)


# --------------------------------------------------------------------------- SFTP


def test_sftp_hook_mkdir_store_list_rename_retrieve(clean_sftp: SftpServer, tmp_path):
    payload = "FINESS;ORDRE\n310000000;1\nétablissement accentué\n".encode()
    local = tmp_path / "upload.xml"
    local.write_bytes(payload)

    hook = _sftp_hook()
    with hook.get_managed_conn() as sftp:
        hook.create_directory("/310000000/processed")
        hook.store_file("/310000000/.upload.xml.part", str(local))
        # Upload under a temporary name, then rename: what every outbound send does.
        sftp.posix_rename("/310000000/.upload.xml.part", "/310000000/RPU_310000000.xml")
        assert sorted(hook.list_directory("/310000000")) == ["RPU_310000000.xml", "processed"]
        assert sftp.stat("/310000000/RPU_310000000.xml").st_size == len(payload)
        hook.retrieve_file("/310000000/RPU_310000000.xml", str(tmp_path / "back.xml"))
        sftp.remove("/310000000/processed/../RPU_310000000.xml")
        assert hook.list_directory("/310000000") == ["processed"]
        # Chrooted: ".." above the root is the root itself.
        assert sftp.listdir("/../..") == sftp.listdir("/")
        assert hook.get_conn_count() == 1

    assert (tmp_path / "back.xml").read_bytes() == payload
    assert (clean_sftp.root / "310000000" / "processed").is_dir()


def test_sftp_outbox_connections_point_at_the_server(clean_sftp: SftpServer):
    (clean_sftp.root / "depot.txt").write_text("x")
    for conn_id in ("invs_outbox", "ars_outbox"):
        assert _sftp_hook(conn_id).list_directory("/") == ["depot.txt"]


def test_sftp_host_key_is_verified(sftp_server: SftpServer, monkeypatch):
    wrong = json.loads(json.dumps(sftp_server.airflow_connection()))
    wrong["extra"]["host_key"] = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    monkeypatch.setenv("AIRFLOW_CONN_WRONG_KEY", json.dumps(wrong))
    with pytest.raises(paramiko.BadHostKeyException):
        _sftp_hook("wrong_key").list_directory("/")

    # No pinned key and no known_hosts entry: refused too, not trusted on first use.
    unpinned = json.loads(json.dumps(sftp_server.airflow_connection()))
    del unpinned["extra"]["host_key"]
    monkeypatch.setenv("AIRFLOW_CONN_UNPINNED", json.dumps(unpinned))
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _sftp_hook("unpinned").list_directory("/")


def test_sftp_server_going_down_mid_session_then_back(clean_sftp: SftpServer):
    port = clean_sftp.port
    (clean_sftp.root / "a.xml").write_text("a")
    hook = _sftp_hook()
    try:
        with pytest.raises(CONNECTION_LOST), hook.get_managed_conn() as sftp:
            assert sftp.listdir("/") == ["a.xml"]
            clean_sftp.stop()
            sftp.listdir("/")  # the open session was dropped
        with pytest.raises(CONNECTION_LOST):  # and nobody listens any more
            _sftp_hook().list_directory("/")
    finally:
        clean_sftp.start()

    assert clean_sftp.port == port
    assert _sftp_hook().list_directory("/") == ["a.xml"]


def test_sftp_server_rejects_a_wrong_password(sftp_server: SftpServer, monkeypatch):
    conn = sftp_server.airflow_connection()
    conn["password"] = "not-the-password"
    monkeypatch.setenv("AIRFLOW_CONN_BAD_PASSWORD", json.dumps(conn))
    with pytest.raises(paramiko.AuthenticationException):
        _sftp_hook("bad_password").list_directory("/")


def test_sftp_server_offers_sftp_only(sftp_server: SftpServer):
    # The demo runs it as whoever starts it (often root): no command, no tunnel.
    conn = sftp_server.airflow_connection()
    key_type, key_data = sftp_server.host_key_public.split()[:2]
    client = paramiko.SSHClient()
    client.get_host_keys().add(
        f"[127.0.0.1]:{sftp_server.port}", key_type, paramiko.Ed25519Key(data=base64.b64decode(key_data))
    )
    client.connect(
        "127.0.0.1", sftp_server.port, conn["login"], conn["password"], look_for_keys=False, allow_agent=False
    )
    try:
        with pytest.raises(paramiko.SSHException):
            client.exec_command("id", timeout=10)
        with pytest.raises(paramiko.ChannelException):
            client.get_transport().open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0), timeout=10)
    finally:
        client.close()


def test_sftp_host_key_survives_a_restart_with_a_state_dir(tmp_path):
    with SftpServer(tmp_path / "root", state_dir=tmp_path / "state") as first:
        key = first.host_key_public
    assert (tmp_path / "state" / "ssh_host_ed25519_key").stat().st_mode & 0o077 == 0
    second = SftpServer(tmp_path / "root", state_dir=tmp_path / "state")
    assert second.host_key_public == key
    assert key.startswith("ssh-ed25519 ")


# --------------------------------------------------------------------------- SMTP

SUBJECT = "Absence de données — établissement 310000000, journée du 3 février"


def test_openssh_server_serves_its_folder_and_refuses_links(openssh_sshd, tmp_path):
    """The benchmarks' OpenSSH server: the session starts in the served folder (the paths the
    concentrator uses), and no link can be made, as on the deployed server (-P symlink,hardlink)."""
    root = tmp_path / "sftp"
    (root / "670780691" / "depot").mkdir(parents=True)
    (root / "670780691" / "depot" / "RPU.xml").write_bytes(b"<OSCOUR/>")
    server = OpenSshSftpServer(root, tmp_path / "sshd").start()
    try:
        transport = server.connect()
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp.listdir("670780691/depot") == ["RPU.xml"]
        with sftp.open("670780691/depot/RPU.xml") as remote:
            assert remote.read() == b"<OSCOUR/>"
        with pytest.raises(OSError):
            sftp.symlink("/etc/passwd", "670780691/depot/lien.xml")
        assert not (root / "670780691" / "depot" / "lien.xml").is_symlink()
        transport.close()
    finally:
        server.stop()


def test_smtp_hook_delivers_a_french_email_to_the_sink(mailbox: SmtpSink):
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id="smtp_default") as hook:
        hook.send_email_smtp(
            to="ars-veille@example.org",
            subject=SUBJECT,
            html_content="<p>Aucun fichier reçu aujourd’hui de l’établissement.</p>",
        )

    message = mailbox.wait_for(lambda m: m["Subject"] == SUBJECT, timeout=10)
    assert message["From"] == "concentrateur@localhost"
    assert message["X-RcptTo"] == "ars-veille@example.org"
    assert "Aucun fichier reçu" in message.get_body(preferencelist=("html", "plain")).get_content()

    (mail,) = mailbox.received
    assert mail.rcpt_tos == ["ars-veille@example.org"]
    assert mail.path is not None and mail.path.parent == mailbox.mailbox_dir
    # The operator's copy: an .eml file any mail reader opens, envelope included.
    from_file = BytesParser(policy=policy.default).parsebytes(mail.path.read_bytes())
    assert from_file["Subject"] == SUBJECT
    assert from_file["X-RcptTo"] == "ars-veille@example.org"


def test_smtp_notifier_alerts_through_the_sink(mailbox: SmtpSink):
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    SmtpNotifier(to="ars-veille@example.org", subject=SUBJECT, html_content="<p>échec</p>").notify({})
    assert mailbox.wait_for(timeout=10)["Subject"] == SUBJECT


def test_smtp_sink_restarts_on_the_same_port(mailbox: SmtpSink):
    import smtplib

    port = mailbox.port
    mailbox.stop()
    try:
        with pytest.raises(OSError):
            smtplib.SMTP("127.0.0.1", port, timeout=5)
    finally:
        mailbox.start()
    assert mailbox.port == port
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.sendmail("a@localhost", ["b@localhost"], b"Subject: retour\r\n\r\nok\r\n")
    assert mailbox.wait_for(timeout=5)["Subject"] == "retour"


def test_mailbox_wait_for_times_out_loudly(mailbox: SmtpSink):
    with pytest.raises(TimeoutError, match="no matching e-mail"):
        mailbox.wait_for(timeout=0.2)


# --------------------------------------------------------------------------- PostgreSQL


def test_database_fixture_is_a_real_postgres(database_url: str, fresh_database_url):
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE probe (finess char(9) PRIMARY KEY, nom text)")
        conn.execute("INSERT INTO probe VALUES (%s, %s)", ("310000000", "Hôpital de test"))

    other = fresh_database_url()
    assert other != database_url
    with psycopg.connect(other) as conn:
        assert conn.execute("SELECT to_regclass('probe')").fetchone() == (None,)

    from airflow.providers.postgres.hooks.postgres import PostgresHook

    rows = PostgresHook(postgres_conn_id="rpu_db").get_records("SELECT finess, nom FROM probe")
    assert [tuple(r) for r in rows] == [("310000000", "Hôpital de test")]


def test_database_names_are_quoted_not_formatted(pg_admin_url: str):
    name = 'rpu_test_"; DROP DATABASE postgres; --'
    url = create_database(pg_admin_url, name)
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    finally:
        drop_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)


def test_start_postgres_starts_a_private_server_when_none_answers(tmp_path):
    # The path a machine without PostgreSQL takes: pgserver, Unix socket only.
    nobody = "postgresql://postgres@127.0.0.1:1/postgres"
    try:
        url = start_postgres(tmp_path / "pgdata", existing_url=nobody)
        assert url != nobody
        other = create_database(url, "rpu_probe")
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        drop_database(url, "rpu_probe")
    finally:
        stop_private_postgres()
    assert not postgres_accepts(url)


# --------------------------------------------------------------------------- Airflow


def test_airflow_runs_on_a_private_home(airflow_db, airflow_home):
    from airflow.configuration import conf

    assert conf.get("core", "dags_folder") == str(REPO_ROOT / "dags")
    assert conf.getboolean("core", "load_examples") is False
    assert conf.get("database", "sql_alchemy_conn") == f"sqlite:///{airflow_home / 'airflow.db'}"
    assert (airflow_home / "airflow.db").stat().st_size > 0
