"""``rpu region init|check``: create a region's deployment files, then test them for real.

``init`` writes ``regions/<code>/region.toml`` (no secret), ``regions/<code>/.env`` (every
secret of the docker compose stack, freshly generated, mode 0600) and the SFTP account list;
``check`` loads the region file and opens every connection it can (PostgreSQL, SFTP, SMTP,
ATIH's URL), one line per check, exit 0 when everything answers.

Connections are read the way Airflow reads them, from ``AIRFLOW_CONN_<ID>`` variables (JSON or
URI form), here from the environment or from the ``--env`` file. No Airflow import: this runs
on an operator's laptop as well as inside the scheduler container.

Wired into ``rpu.cli.main.build_parser`` with :func:`register_region_commands`. Exit codes as the
rest of ``rpu``: 0 success, 1 refused or a check failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import posixpath
import re
import secrets
import smtplib
import socket
import ssl
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PLACEHOLDER = "A_RENSEIGNER"
DEFAULT_TIMEOUT = 5.0

# Same ids as rpu.airflow.glue (which imports Airflow, so is not imported here); a test checks both agree.
DB_CONN_ID, INBOX_CONN_ID, INVS_CONN_ID = "rpu_db", "rpu_inbox", "invs_outbox"
ATIH_CONN_ID, ARS_CONN_ID, SMTP_CONN_ID = "atih_syrius", "ars_outbox", "smtp_default"
CONNECTION_IDS = (DB_CONN_ID, INBOX_CONN_ID, INVS_CONN_ID, ARS_CONN_ID, ATIH_CONN_ID, SMTP_CONN_ID)

# Paths inside the Airflow containers of docker-compose.yaml.
CONTAINER_REGION_DIR = "/opt/rpu/region"
CONTAINER_EXPORTS_DIR = "/opt/rpu/exports"

_REGION_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def register_region_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``region`` (init, check) to the ``rpu`` sub-commands."""
    region = subparsers.add_parser("region", help="créer le déploiement d'une région, vérifier ses connexions")
    actions = region.add_subparsers(dest="region_command", required=True, metavar="ACTION")

    init = actions.add_parser(
        "init", help="créer regions/<code>/ : region.toml, .env (secrets neufs), comptes SFTP",
        description="Crée la configuration et les secrets d'une nouvelle région pour docker compose.")
    init.add_argument("code", metavar="CODE", help="code court de la région (ex. ara, idf, 84)")
    init.add_argument("--name", required=True, help="nom de la région (ex. « Auvergne-Rhône-Alpes »)")
    init.add_argument("--dir", default="regions", help="dossier des régions (défaut : regions/)")
    init.add_argument("--operator-email", action="append", default=[], metavar="ADRESSE",
                      help="adresse de l'ORU pour les alertes d'échec (répétable)")
    init.add_argument("--ars-email", action="append", default=[], metavar="ADRESSE",
                      help="adresse de l'ARS pour les alertes d'absence (répétable)")
    init.add_argument("--airflow-url", default="http://localhost:8080",
                      help="adresse de l'interface Airflow citée dans les e-mails (défaut : http://localhost:8080)")
    init.add_argument("--force", action="store_true",
                      help="écraser une région existante (régénère TOUS les secrets)")
    init.set_defaults(func=cmd_init)

    check = actions.add_parser(
        "check", help="valider la configuration et tester chaque connexion (OK / ÉCHEC)",
        description="Valide le fichier de région et teste PostgreSQL, les SFTP, le SMTP et l'URL ATIH.")
    check.add_argument("--region", help="fichier de région (défaut : RPU_REGION_CONFIG, ou region.toml à côté de --env)")
    check.add_argument("--env", help="fichier .env d'où lire les AIRFLOW_CONN_* (défaut : l'environnement)")
    check.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                       help=f"délai de chaque test, en secondes (défaut : {DEFAULT_TIMEOUT:g})")
    check.set_defaults(func=cmd_check)
    return region


def _error(message: str, code: int) -> int:
    print(f"rpu: {message}", file=sys.stderr)
    return code


# =========================================================================== rpu region init


@dataclass(frozen=True)
class RegionSecrets:
    """Every secret of one region's stack, fresh from ``secrets`` / ``cryptography``."""

    postgres_password: str
    airflow_db_password: str
    rpu_db_password: str
    fernet_key: str
    api_secret_key: str
    jwt_secret: str
    admin_password: str
    sftp_password: str
    sftp_host_key: str  # OpenSSH private key, base64 (one line in .env)
    sftp_host_public_key: str  # "ssh-ed25519 AAAA..." (pinned in the SFTP connection)

    @classmethod
    def generate(cls) -> RegionSecrets:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        host_key = Ed25519PrivateKey.generate()
        private = host_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                         serialization.NoEncryption())
        public = host_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return cls(
            postgres_password=secrets.token_urlsafe(24),
            airflow_db_password=secrets.token_urlsafe(24),
            rpu_db_password=secrets.token_urlsafe(24),
            fernet_key=Fernet.generate_key().decode(),
            api_secret_key=secrets.token_urlsafe(32),
            jwt_secret=secrets.token_urlsafe(48),
            admin_password=secrets.token_urlsafe(16),
            sftp_password=secrets.token_urlsafe(24),
            sftp_host_key=base64.b64encode(private).decode(),
            sftp_host_public_key=public.decode(),
        )


def host_key_fingerprint(public_key: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` and SFTP clients show it."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def connection_definitions(s: RegionSecrets) -> dict[str, dict]:
    """The ``AIRFLOW_CONN_*`` of a compose stack: the stack's own services by their service
    names (postgres, sftp), the external destinations as placeholders to fill in."""
    return {
        DB_CONN_ID: {"conn_type": "postgres", "host": "postgres", "port": 5432, "login": "rpu",
                     "password": s.rpu_db_password, "schema": "rpu"},
        INBOX_CONN_ID: {"conn_type": "sftp", "host": "sftp", "port": 22, "login": "rpu", "password": s.sftp_password,
                        "extra": {"path": "/", "host_key": s.sftp_host_public_key, "no_host_key_check": False,
                                  "look_for_keys": False}},
        # Santé publique France (OSCOUR): the SFTP account and folder they gave the region.
        INVS_CONN_ID: {"conn_type": "sftp", "host": PLACEHOLDER, "port": 22, "login": PLACEHOLDER,
                       "password": PLACEHOLDER,
                       "extra": {"path": PLACEHOLDER, "host_key": PLACEHOLDER, "no_host_key_check": False,
                                 "look_for_keys": False}},
        # ARS: where the daily export is dropped.
        ARS_CONN_ID: {"conn_type": "sftp", "host": PLACEHOLDER, "port": 22, "login": PLACEHOLDER,
                      "password": PLACEHOLDER,
                      "extra": {"path": PLACEHOLDER, "host_key": PLACEHOLDER, "no_host_key_check": False,
                                "look_for_keys": False}},
        # ATIH Syrius (the concentrator's account): server, upload path (rpu.flows.atih.syrius_url), login, password.
        ATIH_CONN_ID: {"conn_type": "http", "host": f"https://{PLACEHOLDER}", "login": PLACEHOLDER,
                       "password": PLACEHOLDER, "extra": {"endpoint": PLACEHOLDER}},
        # The region's SMTP relay (STARTTLS on 587).
        SMTP_CONN_ID: {"conn_type": "smtp", "host": PLACEHOLDER, "port": 587, "login": PLACEHOLDER,
                       "password": PLACEHOLDER,
                       "extra": {"from_email": f"concentrateur-rpu@{PLACEHOLDER}", "disable_ssl": True,
                                 "disable_tls": False, "timeout": 30}},
    }


def render_env(code: str, name: str, region_dir: str, s: RegionSecrets) -> str:
    """The text of a region's ``.env`` (what docker compose reads, and ``rpu region check --env``)."""
    from rpu.config.sizing import airflow_parallelism

    conns = connection_definitions(s)

    def conn(conn_id: str) -> str:
        return f"AIRFLOW_CONN_{conn_id.upper()}='{json.dumps(conns[conn_id], ensure_ascii=False)}'"

    return "\n".join([
        f"# Région {code} ({name}) : les secrets du déploiement docker compose, générés par « rpu region init ».",
        "# Fichier en mode 0600 : ne le committez pas, ne l'envoyez pas par e-mail, sauvegardez-le chiffré.",
        f"# Remplacez chaque {PLACEHOLDER} (destinations externes), puis : rpu region check --env <ce fichier>",
        "",
        "# --- docker compose",
        f"COMPOSE_PROJECT_NAME=rpu-{code}",
        f"RPU_REGION_DIR={region_dir}",
        "RPU_VERSION=latest",
        "AIRFLOW_UID=50000",
        "AIRFLOW_BIND=127.0.0.1",
        "AIRFLOW_PORT=8080",
        "SFTP_PORT=2222",
        "# Exécuteur : LocalExecutor (une machine) ; CeleryExecutor avec COMPOSE_PROFILES=celery (redis et",
        "# AIRFLOW_WORKERS conteneurs airflow-worker ; ajoutez flower au profil pour les surveiller).",
        "AIRFLOW_EXECUTOR=LocalExecutor",
        "COMPOSE_PROFILES=",
        "AIRFLOW_WORKERS=2",
        "AIRFLOW_WORKER_CONCURRENCY=4",
        "FLOWER_PORT=5555",
        "# Chargements simultanés dans la base régionale (pool rpu_db) ; vide : le nombre de cœurs.",
        "RPU_DB_POOL_SLOTS=",
        "# Tâches Airflow simultanées : les places du pool rpu_db (les cœurs de cette machine) + 1, au plus",
        "# le nombre d'établissements + 1 (rpu.config.sizing) ; à revoir si la machine ou RPU_DB_POOL_SLOTS change.",
        f"AIRFLOW_PARALLELISM={airflow_parallelism(os.cpu_count(), establishments=0)}",
        "AIRFLOW_API_WORKERS=1",
        "# Heure locale de la région pour les horaires des DAG (= [region] timezone de region.toml).",
        "RPU_TIMEZONE=Europe/Paris",
        "",
        "# --- PostgreSQL : superutilisateur, base Airflow, base régionale rpu",
        f"POSTGRES_PASSWORD={s.postgres_password}",
        f"AIRFLOW_DB_PASSWORD={s.airflow_db_password}",
        f"RPU_DB_PASSWORD={s.rpu_db_password}",
        "",
        "# --- Airflow : chiffrement des connexions, sessions, jetons ; premier compte de l'interface (admin)",
        f"AIRFLOW_FERNET_KEY={s.fernet_key}",
        f"AIRFLOW_API_SECRET_KEY={s.api_secret_key}",
        f"AIRFLOW_JWT_SECRET={s.jwt_secret}",
        f"AIRFLOW_ADMIN_PASSWORD={s.admin_password}",
        "",
        "# --- SFTP des établissements : compte du concentrateur, clé d'hôte du serveur",
        f"#     empreinte à communiquer aux établissements : {host_key_fingerprint(s.sftp_host_public_key)}",
        f"SFTP_RPU_PASSWORD={s.sftp_password}",
        f"SFTP_HOST_KEY={s.sftp_host_key}",
        "",
        "# --- Connexions Airflow (forme JSON). Services du déploiement : postgres, sftp.",
        conn(DB_CONN_ID),
        conn(INBOX_CONN_ID),
        "# Santé publique France (OSCOUR) : hôte, compte, mot de passe, dossier de dépôt, clé d'hôte (\"ssh-ed25519 AAAA...\")",
        conn(INVS_CONN_ID),
        "# ARS : SFTP où déposer l'export quotidien",
        conn(ARS_CONN_ID),
        "# ATIH Syrius : serveur (host), chemin du service d'upload (extra.endpoint), identifiant et mot de passe",
        conn(ATIH_CONN_ID),
        "# Relais SMTP de la région (STARTTLS sur 587 ; disable_tls: true pour un relais interne sans TLS)",
        conn(SMTP_CONN_ID),
        "",
    ])


SFTP_ACCOUNTS_TEMPLATE = """\
# Comptes SFTP des établissements, un par ligne : FINESS géographique, puis, facultatif,
# l'empreinte d'un mot de passe (openssl passwd -6). Le compte s'appelle e<FINESS>
# (ex. e750712184) ; sa session s'ouvre dans <FINESS>/depot/.
# Authentification par clé (recommandée) : déposez la clé publique de l'établissement dans
# cles/<FINESS>.pub. Après modification : docker compose up -d --force-recreate sftp
#
# 750712184
# 690781810 $6$sel$empreinte...
"""

_EXAMPLE_ACCESS = """
# Comptes de l'interface Airflow (rpu access sync les crée ; aucun mot de passe ici), ex. :
# [access]
# operators = ["oru.dupont"]                                     # ORU : tout
# ars = [{ username = "ars.martin", email = "ars.martin@ars.sante.fr" }]   # lit tout, déclenche rpu_invs_replay
"""

_EXAMPLE_ESTABLISHMENT = """
# Un bloc par service d'urgence (FINESS géographique + ORDRE), ex. :
# [[establishment]]
# finess = "750712184"
# ordre = 0
# name = "CH Exemple - urgences adultes"
# legal_finess = "750712002"
# status = "onboarding"            # onboarding -> parallel -> live (inactive pour retirer)
# it_contacts = ["dsi@ch-exemple.fr"]
# ars_contacts = ["delegation@ars.sante.fr"]
"""


def _write_private(path: Path, text: str) -> None:
    """Create or replace ``path`` readable by its owner only, never wider even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _compose_path(path: Path) -> str:
    """How docker-compose.yaml (at the current directory) should name ``path``."""
    resolved = path.resolve()
    try:
        return "./" + resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def init_region(code: str, name: str, base_dir: str | os.PathLike = "regions", *, operator_emails=(),
                ars_emails=(), airflow_url: str = "http://localhost:8080", force: bool = False,
                ) -> tuple[Path, RegionSecrets]:
    """Write a new region's directory; return it and its secrets. Raises FileExistsError
    (nothing written) when the region exists, unless ``force``."""
    from rpu.config import region as region_config

    target = Path(base_dir) / code
    env_path, toml_path = target / ".env", target / "region.toml"
    if not force and (env_path.exists() or toml_path.exists()):
        raise FileExistsError(str(target))
    toml_text = region_config.render(
        code=code, name=name,
        operator_emails=list(operator_emails) or [f"{PLACEHOLDER}@oru.invalid"],
        ars_emails=list(ars_emails) or [f"{PLACEHOLDER}@ars.invalid"],
        schedule={"absence_cutoff": "10:00", "invs_time": "05:30", "atih_day": 10},
        # codegeo.csv: ATIH's yearly CP -> CODEGEO table, beside this file. Exports go to the
        # stack's exports volume (the region directory is mounted read-only).
        paths={"codegeo_csv": "codegeo.csv", "exports_dir": CONTAINER_EXPORTS_DIR},
        atih={"delivery": "http"},
        airflow_url=airflow_url,
    ) + _EXAMPLE_ACCESS + _EXAMPLE_ESTABLISHMENT
    region_config.parse(tomllib.loads(toml_text), toml_path)  # never write a file load() refuses
    sftp_dir = target / "sftp"
    (sftp_dir / "cles").mkdir(parents=True, exist_ok=True)
    toml_path.write_text(toml_text, encoding="utf-8")
    fresh = RegionSecrets.generate()
    _write_private(env_path, render_env(code, name, _compose_path(target), fresh))
    accounts = sftp_dir / "comptes.conf"
    if not accounts.exists():  # the establishments' accounts survive a --force
        accounts.write_text(SFTP_ACCOUNTS_TEMPLATE, encoding="utf-8")
    return target, fresh


def cmd_init(args) -> int:
    code = args.code.strip().lower()
    if not _REGION_CODE.match(code):
        return _error(f"code de région invalide {args.code!r} : lettres minuscules, chiffres, - ou _ (32 au plus).",
                      EXIT_USAGE)
    try:
        target, fresh = init_region(code, args.name, args.dir, operator_emails=args.operator_email,
                             ars_emails=args.ars_email, airflow_url=args.airflow_url, force=args.force)
    except FileExistsError:
        return _error(f"la région {code} existe déjà ({Path(args.dir) / code}) : rien n'a été écrit. "
                      "--force l'écrase en régénérant tous ses secrets (une base déjà initialisée garde les anciens "
                      "mots de passe).", EXIT_FAILED)
    except Exception as error:  # the region file would not load: one clear line
        from rpu.config.region import RegionConfigError

        if isinstance(error, RegionConfigError):
            return _error(str(error), EXIT_USAGE)
        raise
    env = _compose_path(target / ".env")
    fingerprint = host_key_fingerprint(fresh.sftp_host_public_key)
    print(f"Région {code} ({args.name}) créée dans {target}/ :")
    print(f"  {target / 'region.toml'}      configuration (sans secret)")
    print(f"  {target / '.env'}              secrets neufs (mode 0600)")
    print(f"  {target / 'sftp' / 'comptes.conf'}  comptes SFTP des établissements")
    print(f"""
Étapes suivantes :
  1. Dans {target / '.env'}, remplacez chaque {PLACEHOLDER} : SFTP de Santé publique France (invs_outbox),
     compte ATIH Syrius (atih_syrius), SFTP de l'ARS (ars_outbox), relais SMTP (smtp_default).
  2. Dans {target / 'region.toml'}, renseignez les adresses de l'ORU et de l'ARS, puis déclarez les
     établissements (blocs [[establishment]], statut « onboarding ») ; déposez la table CP -> CODEGEO
     de l'ATIH dans {target / 'codegeo.csv'}.
  3. Pour chaque établissement : une ligne dans {target / 'sftp' / 'comptes.conf'} et sa clé publique dans
     {target / 'sftp' / 'cles'}/<FINESS>.pub ; communiquez-lui l'empreinte du serveur : {fingerprint}
  4. Démarrez : docker compose --env-file {env} up -d --build
  5. Vérifiez : docker compose --env-file {env} exec airflow-scheduler rpu region check
  6. Premier enregistrement des établissements :
     docker compose --env-file {env} exec airflow-scheduler rpu establishments sync
  7. Comptes de l'interface déclarés dans [access] (ORU, ARS) ; les mots de passe créés s'affichent une fois :
     docker compose --env-file {env} exec airflow-scheduler rpu access sync
  8. Ouvrez l'interface Airflow (compte admin, mot de passe AIRFLOW_ADMIN_PASSWORD du .env) et activez les DAG.""")
    return EXIT_OK


# =========================================================================== rpu region check


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    label: str
    detail: str
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        status = "OK" if self.ok else "ÉCHEC"
        return [f"{status:<6} {self.label} : {self.detail}"] + [f"       - {note}" for note in self.notes]


@dataclass(frozen=True)
class ConnectionSpec:
    """An Airflow connection as ``AIRFLOW_CONN_<ID>`` holds it (JSON or URI form)."""

    conn_type: str
    host: str = ""
    port: int | None = None
    login: str = ""
    password: str = ""
    schema: str = ""
    extra: dict | None = None

    @property
    def extras(self) -> dict:
        return self.extra or {}

    def placeholders(self) -> list[str]:
        fields = {"host": self.host, "login": self.login, "password": self.password, "schema": self.schema}
        fields.update({f"extra.{k}": v for k, v in self.extras.items()})
        return [name for name, value in fields.items() if PLACEHOLDER in str(value or "")]


def parse_connection(value: str) -> ConnectionSpec:
    """Parse ``AIRFLOW_CONN_*``: JSON (``{"conn_type": ...}``) or Airflow's URI form
    (``type://login:password@host:port/schema?extra=...`` or ``?__extra__=<json>``)."""
    value = value.strip()
    if value.startswith("{"):
        data = json.loads(value)
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra.strip() else {}
        port = data.get("port")
        return ConnectionSpec(
            conn_type=str(data.get("conn_type") or "").replace("-", "_"), host=str(data.get("host") or ""),
            port=int(port) if port not in (None, "") else None, login=str(data.get("login") or ""),
            password=str(data.get("password") or ""), schema=str(data.get("schema") or ""), extra=extra)
    parts = urlsplit(value)
    if not parts.scheme:
        raise ValueError("ni JSON ni URI (attendu {\"conn_type\": ...} ou type://...)")
    conn_type = parts.scheme.replace("-", "_")
    if conn_type == "postgresql":
        conn_type = "postgres"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    extra = json.loads(query["__extra__"]) if "__extra__" in query else query
    return ConnectionSpec(
        conn_type=conn_type, host=unquote(parts.hostname or ""), port=parts.port,
        login=unquote(parts.username or ""), password=unquote(parts.password or ""),
        schema=unquote(parts.path[1:]) if parts.path else "", extra=extra)


def _read_env_file(path: str | os.PathLike) -> dict[str, str]:
    """``KEY=VALUE`` lines as docker compose reads them: comments, blank lines, ``export``,
    single quotes (literal) and double quotes."""
    values: dict[str, str] = {}
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        else:
            value = value.split(" #", 1)[0].strip()
        values[key] = value
    return values


def _true(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


def _reason(error: BaseException, timeout: float) -> str:
    """A French reason for a network failure, without a stack trace."""
    import paramiko
    import psycopg

    if isinstance(error, paramiko.BadHostKeyException):
        return "la clé d'hôte du serveur n'est pas celle épinglée (extra host_key) : serveur réinstallé ou interception"
    if isinstance(error, paramiko.AuthenticationException):
        return "authentification refusée (identifiant, mot de passe ou clé)"
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        return "connexion refusée (serveur arrêté ou port fermé)"
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return "authentification SMTP refusée (identifiant ou mot de passe)"
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return "le serveur ne propose pas STARTTLS (mettez disable_tls à true pour un relais sans TLS)"
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return "le serveur a fermé la connexion"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificat TLS refusé ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"échec de la négociation TLS ({error.reason or error})"
    if isinstance(error, socket.gaierror):
        return "nom d'hôte inconnu (DNS)"
    if isinstance(error, ConnectionRefusedError):
        return "connexion refusée (serveur arrêté ou port fermé)"
    if isinstance(error, TimeoutError | socket.timeout):
        return f"pas de réponse en {timeout:g} s (pare-feu, hôte ou port erronés)"
    if isinstance(error, urllib.error.URLError):
        return _reason(error.reason, timeout) if isinstance(error.reason, BaseException) else str(error.reason)
    if isinstance(error, psycopg.OperationalError):
        text = str(error)
        if "password authentication failed" in text or "no password supplied" in text:
            return "authentification refusée (identifiant ou mot de passe)"
        match = re.search(r'(database|role) "([^"]+)" does not exist', text)
        if match:
            what = "la base" if match.group(1) == "database" else "le rôle (utilisateur)"
            return f"{what} « {match.group(2)} » n'existe pas"
        if "Connection refused" in text:
            return "connexion refusée (serveur arrêté ou port fermé)"
        if "timeout expired" in text:
            return f"pas de réponse en {timeout:g} s (pare-feu, hôte ou port erronés)"
        if "could not translate host name" in text or "failed to resolve host" in text:
            return "nom d'hôte inconnu (DNS)"
        return text.strip().splitlines()[-1] if text.strip() else type(error).__name__
    if isinstance(error, paramiko.SSHException):
        return f"erreur SSH ({error})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _where(c: ConnectionSpec, scheme: str) -> str:
    user = f"{c.login}@" if c.login else ""
    port = f":{c.port}" if c.port else ""
    return f"{scheme}://{user}{c.host}{port}"


# --- one check per kind of connection --------------------------------------------------------


def check_postgres(c: ConnectionSpec, timeout: float) -> tuple[bool, str, list[str]]:
    import psycopg

    from rpu.store import db as store

    params = {"host": c.host or "localhost", "port": c.port or 5432, "user": c.login or None,
              "password": c.password or None, "dbname": c.schema or "postgres",
              "connect_timeout": max(2, round(timeout))}
    params.update({k: v for k, v in c.extras.items() if k in ("sslmode", "sslrootcert", "sslcert", "sslkey")})
    with psycopg.connect(**{k: v for k, v in params.items() if v is not None}) as conn:
        version = store.schema_version(conn)
        server = conn.info.server_version
    newest = max((m.version for m in store.known_migrations()), default=0)
    detail = f"PostgreSQL {server // 10000}.{server % 10000}, schéma régional version {version}"
    if version > newest:
        return False, detail + f", plus récent que ce code (version {newest}) : mettez à jour le concentrateur", []
    if version < newest:
        return True, detail + (f" ({newest - version} migration(s) en attente, appliquées par « rpu db migrate » "
                               "ou au prochain rpu_ingest)"), []
    return True, detail + " (à jour)", []


def _host_key_entry(c: ConnectionSpec):
    import paramiko

    text = str(c.extras.get("host_key") or "").strip()
    if not text:
        return None
    key_type, key_data = text.split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))


def _private_key(c: ConnectionSpec):
    import paramiko

    text = c.extras.get("private_key")
    if not text:
        return None
    passphrase = c.extras.get("private_key_passphrase")
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.SSHException:
            continue
    raise paramiko.SSHException("clé privée (extra private_key) illisible")


def check_sftp(c: ConnectionSpec, timeout: float, folders: tuple[str, ...] = ()) -> tuple[bool, str, list[str]]:
    """Log in (host key pinned when the connection gives one), list the folder, and check the
    ``folders`` expected under it (an establishment's ``<FINESS>/depot``)."""
    import paramiko

    port = c.port or 22
    client = paramiko.SSHClient()
    pinned = _host_key_entry(c)
    notes: list[str] = []
    if pinned is not None:
        known_as = c.host if port == 22 else f"[{c.host}]:{port}"
        client.get_host_keys().add(known_as, pinned.get_name(), pinned)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key_note = "clé d'hôte vérifiée"
    elif _true(c.extras.get("no_host_key_check", True)):
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        key_note = "clé d'hôte NON vérifiée"
        notes.append("épinglez la clé du serveur : extra host_key = \"ssh-ed25519 AAAA...\"")
    else:
        client.load_system_host_keys()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key_note = "clé d'hôte vérifiée (known_hosts)"
    base = str(c.extras.get("path") or "")
    try:
        client.connect(
            c.host, port=port, username=c.login or None, password=c.password or None, pkey=_private_key(c),
            key_filename=c.extras.get("key_file") or None, timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout, channel_timeout=timeout, allow_agent=False,
            look_for_keys=_true(c.extras.get("look_for_keys", True)),
        )
        sftp = client.open_sftp()
        sftp.get_channel().settimeout(timeout)
        try:
            entries = sftp.listdir(base or ".")
        except FileNotFoundError:
            return False, f"{_where(c, 'sftp')} : dossier « {base} » introuvable", notes
        except PermissionError:
            return False, f"{_where(c, 'sftp')} : lecture du dossier « {base or '.'} » refusée", notes
        missing = []
        for folder in folders:
            try:
                sftp.stat(posixpath.join(base, folder) if base else folder)
            except FileNotFoundError:
                missing.append(folder)
    finally:
        client.close()
    detail = f"{_where(c, 'sftp')}, dossier « {base or '.'} » lisible ({len(entries)} entrée(s)), {key_note}"
    if missing:
        notes.append("dossiers absents : " + ", ".join(missing)
                     + " (ajoutez l'établissement à sftp/comptes.conf puis recréez le service sftp)")
        return False, detail, notes
    return True, detail, notes


def check_smtp(c: ConnectionSpec, timeout: float) -> tuple[bool, str, list[str]]:
    """As Airflow's SMTP hook connects: SMTP_SSL unless ``disable_ssl``, then STARTTLS unless
    ``disable_tls``; EHLO, login when the connection has one, NOOP. Nothing is sent."""
    use_ssl = not _true(c.extras.get("disable_ssl", False))
    starttls = not use_ssl and not _true(c.extras.get("disable_tls", False))
    context = ssl.create_default_context()
    port = c.port or (465 if use_ssl else 25)
    if use_ssl:
        smtp = smtplib.SMTP_SSL(c.host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(c.host, port, timeout=timeout)
    with smtp:
        smtp.ehlo()
        if starttls:
            smtp.starttls(context=context)
            smtp.ehlo()
        if c.login and c.password:
            smtp.login(c.login, c.password)
        code, _ = smtp.noop()
    security = "TLS" if use_ssl else ("STARTTLS" if starttls else "sans chiffrement")
    auth = ", authentifié" if c.login and c.password else ""
    if code != 250:
        return False, f"{_where(c, 'smtp')} : réponse {code} au NOOP", []
    return True, f"{_where(c, 'smtp')} ({security}{auth}) répond", []


def check_http(c: ConnectionSpec, timeout: float) -> tuple[bool, str, list[str]]:
    """Reachability of the very URL rpu_atih_monthly posts to (rpu.flows.atih.syrius_url): HEAD, then
    GET when HEAD is refused; no credentials sent."""
    from rpu.flows.atih import syrius_url

    url = syrius_url(c.conn_type, c.host, c.schema, c.port, c.extras)
    opener = urllib.request.build_opener()  # no auth handler: the connection's login is never sent
    status = None
    for method in ("HEAD", "GET"):
        request = urllib.request.Request(url, method=method, headers={"User-Agent": "rpu-region-check"})
        try:
            with opener.open(request, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        if status not in (405, 501):
            break
    if status is not None and status >= 500:
        return False, f"{url} : erreur du serveur (HTTP {status})", []
    return True, f"{url} joignable (HTTP {status}, sans identifiants)", []


_CHECKERS: dict[str, tuple[str, Callable]] = {
    "postgres": ("PostgreSQL", check_postgres),
    "sftp": ("SFTP", check_sftp),
    "ssh": ("SFTP", check_sftp),
    "smtp": ("SMTP", check_smtp),
    "http": ("HTTP", check_http),
    "https": ("HTTP", check_http),
}


def check_connection(conn_id: str, value: str | None, timeout: float, *, folders: tuple[str, ...] = ()) -> CheckResult:
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    label = f"connexion {conn_id}"
    if not value:
        return CheckResult(False, label, f"non définie ({variable} absente de l'environnement et du .env)")
    try:
        spec = parse_connection(value)
    except (ValueError, json.JSONDecodeError) as error:
        return CheckResult(False, label, f"{variable} illisible : {error}")
    kind, checker = _CHECKERS.get(spec.conn_type, (None, None))
    if checker is None:
        return CheckResult(False, label, f"type de connexion « {spec.conn_type} » non testé par cette commande")
    label = f"connexion {conn_id} ({kind})"
    placeholders = spec.placeholders()
    if placeholders:
        return CheckResult(False, label, f"à renseigner dans le .env : {', '.join(placeholders)} valent {PLACEHOLDER}")
    if not spec.host:
        return CheckResult(False, label, "hôte manquant")
    try:
        if checker is check_sftp:
            ok, detail, notes = checker(spec, timeout, folders)
        else:
            ok, detail, notes = checker(spec, timeout)
    except Exception as error:  # any failure is one line for the operator
        reason = _reason(error, timeout)
        notes = ()
        if reason.startswith("nom d'hôte inconnu") and "." not in spec.host:
            notes = (f"« {spec.host} » est un service du déploiement docker compose : lancez la vérification dans un "
                     "conteneur (docker compose exec airflow-scheduler rpu region check)",)
        return CheckResult(False, label, f"{_where(spec, spec.conn_type)} : {reason}", notes)
    return CheckResult(ok, label, detail, tuple(notes))


# --- the region file --------------------------------------------------------------------------


def _region_checks(path: Path) -> tuple[object | None, list[CheckResult]]:
    from rpu.config import region as region_config

    label = "configuration de la région"
    try:
        region = region_config.load(path)
    except region_config.RegionConfigError as error:
        text = str(error)
        head, _, errors = text.partition(" : ")
        items = [e for e in errors.split(" ; ") if e] if errors else []
        return None, [CheckResult(False, label, head if items else text, tuple(items))]
    results = []
    todo = [f"{where} : {address}" for where, addresses in
            (("region.operator_emails", region.operator_emails), ("region.ars_emails", region.ars_emails))
            for address in addresses if PLACEHOLDER in address or address.endswith(".invalid")]
    statuses = {}
    for establishment in region.establishments:
        statuses[establishment.status] = statuses.get(establishment.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "aucun établissement déclaré"
    detail = f"{path} : région {region.code} ({region.name}), {summary}"
    if todo:
        results.append(CheckResult(False, label, detail, tuple(f"à renseigner : {item}" for item in todo)))
    else:
        results.append(CheckResult(True, label, detail))

    results.append(_access_check(region))
    if region.codegeo_csv:
        from rpu.formats.syrius import CodegeoTable

        try:
            table = CodegeoTable.load(region.codegeo_csv)
            results.append(CheckResult(True, "table CP -> CODEGEO", f"{region.codegeo_csv} ({len(table)} codes postaux)"))
        except FileNotFoundError:
            results.append(CheckResult(False, "table CP -> CODEGEO",
                                       f"{region.codegeo_csv} introuvable : déposez la table de l'ATIH de l'année"))
        except (OSError, ValueError) as error:
            results.append(CheckResult(False, "table CP -> CODEGEO", f"{region.codegeo_csv} illisible : {error}"))
    if region.exports_dir:
        results.append(_exports_check(Path(region.exports_dir)))
    return region, results


def _access_check(region) -> CheckResult:
    """The ``[access]`` table (accounts of the Airflow UI), as ``rpu access sync`` will read it."""
    from rpu.airflow import access

    label = "comptes de l'interface ([access])"
    try:
        config = access.from_region(region)
    except Exception as error:  # RegionConfigError: one line per problem
        _, _, errors = str(error).partition(" : ")
        return CheckResult(False, label, "section invalide", tuple(e for e in errors.split(" ; ") if e))
    if not config.accounts:
        return CheckResult(True, label, "aucun compte déclaré (seul « admin » ouvre l'interface)")
    counts = [f"{len(config.by_role(role))} {what}" for role, what in
              ((access.OPERATOR_ROLE, "ORU"), (access.ARS_ROLE, "ARS"), (access.ESTABLISHMENT_ROLE, "établissement(s)"))
              if config.by_role(role)]
    return CheckResult(True, label, ", ".join(counts) + " (créés par rpu access sync)")


def _exports_check(path: Path) -> CheckResult:
    label = "dossier des exports"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        return CheckResult(False, label, f"{path} : écriture impossible ({existing} n'est pas accessible en écriture)")
    return CheckResult(True, label, f"{path} accessible en écriture" + ("" if path.exists() else " (sera créé)"))


def run_checks(region_path: Path | None, environment: dict[str, str], timeout: float) -> Iterator[CheckResult]:
    region = None
    if region_path is None:
        yield CheckResult(False, "configuration de la région",
                          "aucun fichier : passez --region ou définissez RPU_REGION_CONFIG")
    else:
        region, results = _region_checks(region_path)
        yield from results
    inbox_folders: tuple[str, ...] = ()
    if region is not None:
        inbox_folders = tuple(sorted({f"{e.finess}/depot" for e in region.establishments if e.status != "inactive"}))
        # The DAG schedules (05:30, 06:00, 10:00) are local times of RPU_TIMEZONE.
        schedule_tz = environment.get("RPU_TIMEZONE", "Europe/Paris")
        yield CheckResult(schedule_tz == region.timezone, "fuseau des horaires",
                          f"RPU_TIMEZONE={schedule_tz}, [region] timezone={region.timezone}"
                          + ("" if schedule_tz == region.timezone else " : mettez RPU_TIMEZONE dans le .env"))
    for conn_id in CONNECTION_IDS:
        value = environment.get(f"AIRFLOW_CONN_{conn_id.upper()}")
        yield check_connection(conn_id, value, timeout, folders=inbox_folders if conn_id == INBOX_CONN_ID else ())


def cmd_check(args) -> int:
    environment = dict(os.environ)
    if args.env:
        env_path = Path(args.env)
        if not env_path.is_file():
            return _error(f"fichier .env introuvable : {env_path}", EXIT_USAGE)
        environment.update(_read_env_file(env_path))  # the file given explicitly wins
    region_path = args.region or os.environ.get("RPU_REGION_CONFIG")
    if not region_path and args.env:
        region_path = Path(args.env).parent / "region.toml"
    if args.timeout <= 0:
        return _error("--timeout doit être positif", EXIT_USAGE)
    failures = 0
    for result in run_checks(Path(region_path) if region_path else None, environment, args.timeout):
        failures += not result.ok
        print("\n".join(result.lines()), flush=True)
    if failures:
        print(f"\n{failures} vérification(s) en échec.")
        return EXIT_FAILED
    print("\nTout est en ordre.")
    return EXIT_OK
