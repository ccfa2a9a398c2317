"""``rpu region init``: a new region's deployment files. ``regions/<code>/region.toml`` (no
secret), ``regions/<code>/.env`` (every secret of the docker compose stack, freshly generated,
mode 0600, and the ``AIRFLOW_CONN_*`` with placeholders for the external destinations) and the
SFTP account list."""

from __future__ import annotations

import base64
import json
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from rpu.cli.connections import (
    ARS_CONN_ID,
    ATIH_CONN_ID,
    DB_CONN_ID,
    INBOX_CONN_ID,
    INVS_CONN_ID,
    PLACEHOLDER,
    SMTP_CONN_ID,
)
from rpu.config.region import host_key_fingerprint

# Paths inside the Airflow containers of docker-compose.yaml.
CONTAINER_REGION_DIR = "/opt/rpu/region"
CONTAINER_EXPORTS_DIR = "/opt/rpu/exports"


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
        f"#     empreinte à communiquer aux établissements : {host_key_fingerprint(s.sftp_host_public_key)[1]}",
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


def compose_path(path: Path) -> str:
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
    _write_private(env_path, render_env(code, name, compose_path(target), fresh))
    accounts = sftp_dir / "comptes.conf"
    if not accounts.exists():  # the establishments' accounts survive a --force
        accounts.write_text(SFTP_ACCOUNTS_TEMPLATE, encoding="utf-8")
    return target, fresh
