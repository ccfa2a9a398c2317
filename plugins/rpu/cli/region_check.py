"""``rpu region check``: the region file loaded, then every connection opened for real
(PostgreSQL, the SFTP servers, SMTP, ATIH's URL), one :class:`CheckResult` per check, with a
French reason when one fails."""

from __future__ import annotations

import base64
import io
import json
import os
import posixpath
import re
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rpu.cli.connections import CONNECTION_IDS, INBOX_CONN_ID, PLACEHOLDER, ConnectionSpec, parse_connection

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    label: str
    detail: str
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        status = "OK" if self.ok else "ÉCHEC"
        return [f"{status:<6} {self.label} : {self.detail}"] + [f"       - {note}" for note in self.notes]


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
        # psycopg reads the dates and times the server sends only in ISO: under another DateStyle
        # (a French 'SQL, DMY' set on the database or the role) every load would fail.
        datestyle = conn.info.parameter_status("DateStyle") or ""
        version = store.schema_version(conn)
        server = conn.info.server_version
    newest = max((m.version for m in store.known_migrations()), default=0)
    detail = f"PostgreSQL {server // 10000}.{server % 10000}, schéma régional version {version}"
    if not datestyle.upper().startswith("ISO"):
        return False, detail + (f" ; DateStyle « {datestyle} » : le concentrateur lit les dates au format ISO, "
                                f"rétablissez-le (ALTER DATABASE {params['dbname']} SET datestyle = 'ISO, DMY')"), []
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


def _reader_check() -> CheckResult:
    """The compiled hot path of a load (setup.py): the PATIENT reader and the COPY row of a clean
    visit. Without them every file is read, and every row written, by the Python paths."""
    from rpu.formats.oscour import COMPILED_READER
    from rpu.store.copy_in import COMPILED_ROWS

    label = "lecteur des fichiers RPU"
    if COMPILED_READER and COMPILED_ROWS:
        return CheckResult(True, label, "compilé (lecture et lignes COPY)")
    missing = " et ".join(part for part, built in (("lecteur Python", COMPILED_READER),
                                                    ("lignes COPY écrites en Python", COMPILED_ROWS)) if not built)
    return CheckResult(False, label, f"{missing} (chargement jusqu'à 1,5 fois plus lent) : réinstallez le paquet "
                                     "avec un compilateur C (pip install -e .)")


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
    yield _reader_check()
