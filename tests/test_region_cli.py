"""``rpu region init|check`` as an ORU operator runs them: real files, and real PostgreSQL, SFTP,
SMTP and HTTP servers on loopback (started by conftest.py, or here for HTTP)."""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import socket
import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization

from rpu.cli.connections import CONNECTION_IDS, PLACEHOLDER, parse_connection, read_env_file
from rpu.cli.region import register_region_commands
from rpu.config import region as region_config
from rpu.sandbox.generator import demo_establishments
from rpu.sandbox.local_services import postgres_airflow_connection
from rpu.store import db as store

REPO = Path(__file__).resolve().parent.parent
SECRET_KEYS = ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "RPU_DB_PASSWORD", "AIRFLOW_FERNET_KEY",
               "AIRFLOW_API_SECRET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD", "SFTP_RPU_PASSWORD",
               "SFTP_HOST_KEY")
ESTABLISHMENT = demo_establishments(1)[0]


def rpu(capsys, *argv) -> tuple[int, str, str]:
    """``rpu region ...`` through a parser built here, as rpu.cli.main builds it."""
    parser = argparse.ArgumentParser(prog="rpu")
    register_region_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def conn_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def line_for(out: str, conn_id_or_label: str) -> str:
    (line,) = [ln for ln in out.splitlines() if conn_id_or_label in ln and not ln.startswith(" ")]
    return line


# =========================================================================== init


def test_init_writes_a_loadable_region_and_a_private_env(tmp_path, capsys):
    code, out, err = rpu(capsys, "region", "init", "ara", "--name", "Auvergne-Rhône-Alpes", "--dir", tmp_path,
                         "--operator-email", "oru@example.org", "--ars-email", "ars@example.org")
    assert code == 0, err
    target = tmp_path / "ara"
    region = region_config.load(target / "region.toml")
    assert (region.code, region.name) == ("ara", "Auvergne-Rhône-Alpes")
    assert region.operator_emails == ("oru@example.org",) and region.ars_emails == ("ars@example.org",)
    assert (region.absence_cutoff.isoformat(), region.invs_time.isoformat(), region.atih_day) == ("10:00:00", "05:30:00", 10)
    assert region.codegeo_csv == target / "codegeo.csv"
    assert str(region.exports_dir) == "/opt/rpu/exports"  # the compose stack's exports volume
    assert region.establishments == ()
    assert "[[establishment]]" in (target / "region.toml").read_text()  # the commented example

    env_path = target / ".env"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    env = read_env_file(env_path)
    assert env["COMPOSE_PROJECT_NAME"] == "rpu-ara"
    assert Path(env["RPU_REGION_DIR"]).resolve() == target.resolve()
    # The same variables as .env.example, so docker-compose.yaml takes either.
    assert set(env) == set(read_env_file(REPO / ".env.example"))

    conns = {conn_id: json.loads(env[conn_var(conn_id)]) for conn_id in CONNECTION_IDS}
    assert conns["rpu_db"] == {"conn_type": "postgres", "host": "postgres", "port": 5432, "login": "rpu",
                               "password": env["RPU_DB_PASSWORD"], "schema": "rpu"}
    inbox = conns["rpu_inbox"]
    assert (inbox["host"], inbox["login"], inbox["password"]) == ("sftp", "rpu", env["SFTP_RPU_PASSWORD"])
    assert inbox["extra"]["host_key"].startswith("ssh-ed25519 ") and inbox["extra"]["no_host_key_check"] is False
    for external in ("invs_outbox", "ars_outbox", "atih_syrius", "smtp_default"):
        assert PLACEHOLDER in conns[external]["host"] and conns[external]["password"] == PLACEHOLDER
    assert conns["smtp_default"]["extra"]["disable_ssl"] is True  # JSON form: booleans stay booleans

    # No secret in the region file; the next steps are printed, in French.
    toml_text = (target / "region.toml").read_text()
    assert not any(env[key] in toml_text for key in SECRET_KEYS)
    assert "Étapes suivantes" in out and "rpu establishments sync" in out and "docker compose" in out
    assert region_config.host_key_fingerprint(inbox["extra"]["host_key"])[1] in out
    assert (target / "sftp" / "comptes.conf").is_file() and (target / "sftp" / "cles").is_dir()


def test_init_draws_fresh_secrets_every_time(tmp_path, capsys):
    for code in ("r1", "r2"):
        assert rpu(capsys, "region", "init", code, "--name", code, "--dir", tmp_path)[0] == 0
    first, second = (read_env_file(tmp_path / code / ".env") for code in ("r1", "r2"))
    values = [first[key] for key in SECRET_KEYS] + [second[key] for key in SECRET_KEYS]
    assert len(set(values)) == len(values), "a secret was reused"
    for env in (first, second):
        Fernet(env["AIRFLOW_FERNET_KEY"].encode())  # a valid Fernet key
        assert len(env["POSTGRES_PASSWORD"]) >= 24
        # The host key the SFTP server gets is the one the rpu_inbox connection pins.
        private = serialization.load_ssh_private_key(base64.b64decode(env["SFTP_HOST_KEY"]), password=None)
        public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        assert json.loads(env["AIRFLOW_CONN_RPU_INBOX"])["extra"]["host_key"] == public.decode()


def test_init_refuses_to_overwrite_an_existing_region_unless_forced(tmp_path, capsys):
    assert rpu(capsys, "region", "init", "idf", "--name", "Île-de-France", "--dir", tmp_path)[0] == 0
    env_path = tmp_path / "idf" / ".env"
    accounts = tmp_path / "idf" / "sftp" / "comptes.conf"
    accounts.write_text("750712184\n")
    before = env_path.read_text()

    code, out, err = rpu(capsys, "region", "init", "idf", "--name", "Autre", "--dir", tmp_path)
    assert code == 1
    assert "existe déjà" in err and "--force" in err
    assert env_path.read_text() == before
    assert region_config.load(tmp_path / "idf" / "region.toml").name == "Île-de-France"

    code, out, err = rpu(capsys, "region", "init", "idf", "--name", "Autre", "--dir", tmp_path, "--force")
    assert code == 0, err
    assert read_env_file(env_path)["POSTGRES_PASSWORD"] != _read_env_file_text(before)["POSTGRES_PASSWORD"]
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    assert accounts.read_text() == "750712184\n"  # the establishments' accounts are kept


def _read_env_file_text(text: str) -> dict[str, str]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as f:
        f.write(text)
    try:
        return read_env_file(f.name)
    finally:
        os.unlink(f.name)


@pytest.mark.parametrize("bad_code", ["Île", "a b", "_x", "x" * 40])
def test_init_rejects_a_bad_region_code(tmp_path, capsys, bad_code):
    code, _, err = rpu(capsys, "region", "init", bad_code, "--name", "X", "--dir", tmp_path)
    assert code == 2 and "code de région invalide" in err
    assert not any(tmp_path.iterdir())


# =========================================================================== check


class _Atih(http.server.BaseHTTPRequestHandler):
    seen_headers: list[dict] = []

    def _answer(self, body: bool):
        type(self).seen_headers.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        if body:
            self.wfile.write(b"ok")

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)

    def log_message(self, *args):
        pass


@pytest.fixture
def atih_server(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    _Atih.seen_headers = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Atih)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def region_dir(tmp_path, clean_sftp) -> Path:
    """A region with one establishment, its SFTP folder, a CODEGEO table and an exports folder."""
    directory = tmp_path / "region"
    directory.mkdir()
    (directory / "codegeo.csv").write_text("CP;CODEGEO\n67000;67000\n67100;67100\n", encoding="utf-8")
    establishment = {k: ESTABLISHMENT[k] for k in ("finess", "ordre", "name", "legal_finess")}
    (directory / "region.toml").write_text(region_config.render(
        code="test", name="Région de test", operator_emails=["oru@example.org"], ars_emails=["ars@example.org"],
        establishments=[{**establishment, "status": "onboarding"}],
        paths={"codegeo_csv": "codegeo.csv", "exports_dir": str(tmp_path / "exports")})
        + '\n[access]\noperators = ["oru.dupont"]\nars = [{ username = "ars.martin", email = "ars@example.org" }]\n',
        encoding="utf-8")
    (clean_sftp.root / ESTABLISHMENT["finess"] / "depot").mkdir(parents=True)
    return directory


def write_env(path: Path, **conns: dict | str) -> Path:
    """Set these connections in the .env file ``path``, keeping the others it holds."""
    values = read_env_file(path) if path.exists() else {}
    values.update({conn_var(conn_id): value if isinstance(value, str) else json.dumps(value)
                   for conn_id, value in conns.items()})
    path.write_text("# test\n" + "".join(f"{key}='{value}'\n" for key, value in values.items()), encoding="utf-8")
    return path


@pytest.fixture
def migrated_database(fresh_database_url) -> dict:
    url = fresh_database_url()
    with store.connect(url, autocommit=True) as conn:
        store.migrate(conn)
    return postgres_airflow_connection(url)


@pytest.fixture
def live_env(tmp_path, migrated_database, clean_sftp, smtp_sink, atih_server) -> Path:
    """Every connection pointing at a running server (rpu_db, atih_syrius from the file; the
    SFTP and SMTP ones from the environment the conftest fixtures set)."""
    atih = {"conn_type": "http", "host": "127.0.0.1", "port": atih_server.server_port, "schema": "http",
            "login": "compte-atih", "password": "secret-atih"}
    return write_env(tmp_path / ".env", rpu_db=migrated_database, atih_syrius=atih)


def test_check_passes_when_every_service_answers(capsys, region_dir, live_env):
    code, out, err = rpu(capsys, "region", "check", "--region", region_dir / "region.toml", "--env", live_env)
    assert code == 0, out + err
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith(" ")]
    checks = lines[:-1]
    assert all(ln.startswith("OK ") for ln in checks), out
    assert "configuration de la région" in checks[0] and "1 onboarding" in checks[0]
    assert "2 codes postaux" in line_for(out, "CP -> CODEGEO")
    assert "1 ORU, 1 ARS" in line_for(out, "comptes de l'interface")
    assert "(à jour)" in line_for(out, "connexion rpu_db")
    assert "clé d'hôte vérifiée" in line_for(out, "connexion rpu_inbox")
    for conn_id in CONNECTION_IDS:
        assert line_for(out, f"connexion {conn_id} ").startswith("OK")
    assert lines[-1] == "Tout est en ordre."
    # ATIH: reachability only, the account's credentials never leave.
    assert _Atih.seen_headers and not any("Authorization" in h for h in _Atih.seen_headers)


def test_check_fails_when_the_database_dates_are_not_iso(capsys, region_dir, live_env, migrated_database,
                                                          pg_admin_url):
    # psycopg reads timestamps only in ISO: a database set to the French 'SQL, DMY' fails every load.
    name = migrated_database["schema"]
    with store.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} SET datestyle = 'SQL, DMY'")
    code, out, _ = rpu(capsys, "region", "check", "--region", region_dir / "region.toml", "--env", live_env)
    assert code == 1
    line = line_for(out, "connexion rpu_db")
    assert line.startswith("ÉCHEC") and "DateStyle « SQL, DMY »" in line
    assert f"ALTER DATABASE {name} SET datestyle = 'ISO, DMY'" in line


def test_check_fails_with_a_clear_line_when_the_sftp_server_is_down(capsys, region_dir, live_env, clean_sftp):
    clean_sftp.stop()
    try:
        code, out, _ = rpu(capsys, "region", "check", "--region", region_dir / "region.toml", "--env", live_env,
                           "--timeout", "3")
    finally:
        clean_sftp.start()
    assert code == 1
    for conn_id in ("rpu_inbox", "invs_outbox", "ars_outbox"):  # the three point at the stopped server
        assert line_for(out, f"connexion {conn_id} ") == (
            f"ÉCHEC  connexion {conn_id} (SFTP) : sftp://{clean_sftp.username}@127.0.0.1:{clean_sftp.port} : "
            "connexion refusée (serveur arrêté ou port fermé)")
    assert line_for(out, "connexion rpu_db").startswith("OK")
    assert "3 vérification(s) en échec." in out


def test_check_fails_when_postgres_does_not_listen(capsys, region_dir, live_env):
    port = free_port()
    write_env(live_env, rpu_db={"conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "rpu",
                                "password": "x", "schema": "rpu"})
    code, out, _ = rpu(capsys, "region", "check", "--region", region_dir / "region.toml", "--env", live_env)
    assert code == 1
    assert line_for(out, "connexion rpu_db") == (
        f"ÉCHEC  connexion rpu_db (PostgreSQL) : postgres://rpu@127.0.0.1:{port} : "
        "connexion refusée (serveur arrêté ou port fermé)")


def test_check_fails_on_wrong_password_and_on_smtp_down(capsys, region_dir, live_env, migrated_database):
    wrong = dict(migrated_database, login="rpu_inconnu", password="mauvais")
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": free_port(),
            "extra": {"disable_ssl": True, "disable_tls": True}}
    write_env(live_env, rpu_db=wrong, smtp_default=smtp)
    code, out, _ = rpu(capsys, "region", "check", "--region", region_dir / "region.toml", "--env", live_env)
    assert code == 1
    rpu_db = line_for(out, "connexion rpu_db")
    assert rpu_db.startswith("ÉCHEC") and ("authentification refusée" in rpu_db or "rpu_inconnu" in rpu_db), rpu_db
    assert line_for(out, "connexion smtp_default").endswith("connexion refusée (serveur arrêté ou port fermé)")


def test_check_refuses_an_sftp_server_whose_host_key_is_not_the_pinned_one(capsys, region_dir, live_env, clean_sftp):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    inbox = clean_sftp.airflow_connection()
    inbox["extra"]["host_key"] = other
    write_env(live_env, rpu_inbox=inbox)
    code, out, _ = rpu(capsys, "region", "check", "--region", region_dir / "region.toml", "--env", live_env)
    assert code == 1
    assert "n'est pas celle épinglée" in line_for(out, "connexion rpu_inbox")


def test_check_names_the_establishment_folders_missing_on_the_inbox(capsys, region_dir, live_env, clean_sftp):
    (clean_sftp.root / ESTABLISHMENT["finess"] / "depot").rmdir()
    code, out, _ = rpu(capsys, "region", "check", "--region", region_dir / "region.toml", "--env", live_env)
    assert code == 1
    assert line_for(out, "connexion rpu_inbox").startswith("ÉCHEC")
    assert f"dossiers absents : {ESTABLISHMENT['finess']}/depot" in out


def test_check_of_a_new_region_lists_what_remains_to_fill_in(tmp_path, capsys, monkeypatch):
    assert rpu(capsys, "region", "init", "bfc", "--name", "Bourgogne-Franche-Comté", "--dir", tmp_path)[0] == 0
    for conn_id in CONNECTION_IDS:
        monkeypatch.delenv(conn_var(conn_id), raising=False)
    monkeypatch.delenv("RPU_REGION_CONFIG", raising=False)
    env_path = tmp_path / "bfc" / ".env"
    env_path.write_text("\n".join(ln for ln in env_path.read_text().splitlines()
                                  if not ln.startswith("AIRFLOW_CONN_SMTP_DEFAULT")) + "\n")

    # --env alone: the region file beside it is checked.
    code, out, _ = rpu(capsys, "region", "check", "--env", env_path, "--timeout", "2")
    assert code == 1
    config = line_for(out, "configuration de la région")
    assert config.startswith("ÉCHEC") and "bfc" in config
    assert f"à renseigner : region.operator_emails : {PLACEHOLDER}@oru.invalid" in out
    assert line_for(out, "table CP -> CODEGEO").startswith("ÉCHEC") and "introuvable" in out
    for conn_id in ("invs_outbox", "ars_outbox", "atih_syrius"):
        line = line_for(out, f"connexion {conn_id} ")
        assert line.startswith("ÉCHEC") and f"valent {PLACEHOLDER}" in line and "host" in line
    assert "AIRFLOW_CONN_SMTP_DEFAULT absente" in line_for(out, "connexion smtp_default")
    # The stack's own services are named as compose names them: not resolvable here, and said so.
    assert line_for(out, "connexion rpu_db").startswith("ÉCHEC")
    assert "« postgres » est un service du déploiement docker compose" in out


def test_check_lists_the_errors_of_a_wrong_region_file(tmp_path, capsys, live_env):
    path = tmp_path / "region.toml"
    path.write_text('[region]\ncode = "x"\n\n[[establishment]]\nfiness = "123"\nname = "A"\nstatus = "actif"\n')
    code, out, _ = rpu(capsys, "region", "check", "--region", path, "--env", live_env)
    assert code == 1
    assert line_for(out, "configuration de la région").startswith("ÉCHEC")
    assert "       - [region] name manquant" in out
    assert "       - établissement n°1 : FINESS invalide '123'" in out
    assert line_for(out, "connexion rpu_db").startswith("OK")  # the connections are tested all the same


def test_check_lists_the_errors_of_the_access_table(capsys, region_dir, live_env):
    path = region_dir / "region.toml"
    path.write_text(path.read_text().replace('operators = ["oru.dupont"]', 'operators = ["oru dupont"]\nautres = []'))
    code, out, _ = rpu(capsys, "region", "check", "--region", path, "--env", live_env)
    assert code == 1
    assert line_for(out, "comptes de l'interface").startswith("ÉCHEC")
    assert "nom de compte invalide 'oru dupont'" in out and "clé(s) inconnue(s) : autres" in out


def test_check_usage_errors(tmp_path, capsys):
    code, _, err = rpu(capsys, "region", "check", "--env", tmp_path / "absent.env")
    assert code == 2 and "introuvable" in err


# =========================================================================== connection forms


def test_connections_in_uri_form_are_read_like_airflow_reads_them():
    c = parse_connection("postgresql://rpu:p%40ss%2Fw@db.example.org:5433/rpu?sslmode=require")
    assert (c.conn_type, c.host, c.port, c.login, c.password, c.schema) == (
        "postgres", "db.example.org", 5433, "rpu", "p@ss/w", "rpu")
    assert c.extras == {"sslmode": "require"}
    extra = json.dumps({"host_key": "ssh-ed25519 AAAA", "no_host_key_check": False})
    from urllib.parse import quote

    c = parse_connection(f"sftp://oscour@sftp.santepubliquefrance.example:22/?__extra__={quote(extra)}")
    assert (c.conn_type, c.login, c.port) == ("sftp", "oscour", 22)
    assert c.extras == {"host_key": "ssh-ed25519 AAAA", "no_host_key_check": False}
    c = parse_connection('{"conn_type": "smtp", "host": "relais", "extra": "{\\"disable_tls\\": true}"}')
    assert c.extras == {"disable_tls": True}
    with pytest.raises(ValueError):
        parse_connection("pas une connexion")


def test_connection_ids_are_airflow_glue_s():
    from rpu.airflow import glue as airflow_glue

    assert set(CONNECTION_IDS) == {airflow_glue.DB_CONN_ID, airflow_glue.INBOX_CONN_ID, airflow_glue.INVS_CONN_ID,
                                   airflow_glue.ATIH_CONN_ID, airflow_glue.ARS_CONN_ID, airflow_glue.SMTP_CONN_ID}


def test_init_writes_nothing_when_the_region_file_would_not_load(tmp_path, capsys):
    code, _, err = rpu(capsys, "region", "init", "x", "--name", "X", "--dir", tmp_path,
                       "--operator-email", "pas-une-adresse")
    assert code == 2 and "adresse invalide 'pas-une-adresse'" in err
    assert not (tmp_path / "x").exists()


def test_region_check_says_whether_files_are_read_by_the_compiled_reader(monkeypatch):
    from rpu.cli import region_check
    from rpu.formats import oscour
    from rpu.store import copy_in

    assert region_check._reader_check().ok  # make install builds it
    monkeypatch.setattr(oscour, "COMPILED_READER", False)
    missing = region_check._reader_check()
    assert not missing.ok and "compilateur C" in missing.detail and "lecteur Python" in missing.detail
    monkeypatch.setattr(oscour, "COMPILED_READER", True)
    monkeypatch.setattr(copy_in, "COMPILED_ROWS", False)
    missing = region_check._reader_check()
    assert not missing.ok and "lignes COPY" in missing.detail and "lecteur Python" not in missing.detail
