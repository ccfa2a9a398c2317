"""A region's configuration: one TOML file per region.

It names the region, its operator (ORU) and ARS addresses, its cut-off times, the CP → CODEGEO
table, the destinations' settings and every establishment with its status and contacts.
Secrets never go here: they live in Airflow connections (``AIRFLOW_CONN_*``, from ``.env``).

The file is found through ``RPU_REGION_CONFIG``; it is read when a task runs, never when a DAG
file is parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from rpu.formats import finess as finess_rules
from rpu.formats.model import Limits, VolumeGuard

STATUSES = ("onboarding", "parallel", "live", "inactive")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class RegionConfigError(Exception):
    """The region configuration is missing or wrong; the message says where."""


@dataclass(frozen=True)
class EstablishmentConfig:
    finess: str
    ordre: int
    name: str
    legal_finess: str | None
    status: str
    it_contacts: tuple[str, ...] = ()
    ars_contacts: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.finess, self.ordre)


@dataclass(frozen=True)
class SftpSettings:
    """``[sftp]``: the drop server as the establishments reach it (host, port as seen from
    outside, and the server's public host key, given as text or as a ``.pub`` file), told to
    each new establishment in its onboarding e-mail."""

    host: str | None = None
    port: int = 22
    host_key: str | None = None  # "ssh-ed25519 AAAA..."
    host_key_file: Path | None = None

    def public_key(self) -> str | None:
        """The host key's text, from ``host_key`` or else ``host_key_file`` (read now, not when
        the region file is loaded: a missing file must not stop the DAGs)."""
        if self.host_key:
            return self.host_key
        if self.host_key_file is None:
            return None
        try:
            return self.host_key_file.read_text(encoding="utf-8")
        except OSError as error:
            raise RegionConfigError(f"[sftp] host_key_file illisible : {self.host_key_file} ({error.strerror})") from None


def host_key_fingerprint(public_key: str) -> tuple[str, str]:
    """(key type as ssh names it, ``SHA256:...`` fingerprint) of an OpenSSH public key line, as
    ``ssh`` shows them at the first connection (``ED25519 key fingerprint is SHA256:...``). The
    line may be a ``.pub`` file or a ``known_hosts`` line."""
    words = public_key.split()
    for i, word in enumerate(words[:-1]):
        if word.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                blob = base64.b64decode(words[i + 1], validate=True)
            except (binascii.Error, ValueError):
                break
            if blob[4:4 + len(word)] != word.encode():
                break
            digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            kind = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA"}.get(
                word, "ECDSA" if word.startswith("ecdsa-") else word.upper())
            return kind, f"SHA256:{digest}"
    raise RegionConfigError("[sftp] clé d'hôte illisible (attendu : une clé publique « ssh-ed25519 AAAA... »)")


@dataclass(frozen=True)
class Region:
    code: str
    name: str
    operator_emails: tuple[str, ...]
    ars_emails: tuple[str, ...]
    establishments: tuple[EstablishmentConfig, ...]
    path: Path | None = None
    timezone: str = "Europe/Paris"
    absence_cutoff: time = time(10, 0)
    invs_time: time = time(5, 30)
    atih_day: int = 10
    atih_delivery: str = "http"  # "http" (Syrius two-step upload) or "sftp"
    codegeo_csv: Path | None = None
    exports_dir: Path | None = None
    airflow_url: str = "http://localhost:8080"
    volume_guard: VolumeGuard = VolumeGuard()
    limits: Limits = Limits()
    max_file_bytes: int = 200 << 20  # [intake] max_file_mb
    settle_seconds: int = 600  # [intake] settle_seconds: a file unchanged this long is complete
    keep_replaced_days: int = 35  # [intake] keep_replaced_days: replaced visits kept for a revoke
    sftp: SftpSettings = SftpSettings()
    spf_emails: tuple[str, ...] = ()  # [contacts]: Santé publique France (OSCOUR), told of each go-live
    atih_emails: tuple[str, ...] = ()  # [contacts]: ATIH, told of each go-live
    extra: dict = field(default_factory=dict)

    @property
    def exports_base(self) -> Path:
        """``[paths] exports_dir``, else ``exports/`` beside the region file."""
        if self.exports_dir:
            return Path(self.exports_dir)
        return (self.path.parent if self.path else Path.cwd()) / "exports"

    def outbox_dir(self, destination: str) -> Path:
        """Where the files built for a destination are kept (owner-only) until delivered, so a
        retry resends the same file: ``<exports_dir>/envois/<destination>/``."""
        return self.exports_base / "envois" / destination

    def establishment(self, finess: str, ordre: int | None = None) -> EstablishmentConfig | None:
        for establishment in self.establishments:
            if establishment.finess == finess and (ordre is None or establishment.ordre == ordre):
                return establishment
        return None

    def sender_may_send_for(self, folder_finess: str, header_finess: str) -> bool:
        """A folder's establishment may send its own files, and those of an establishment tied
        to the same legal FINESS (one hospital's IT sending for its several sites)."""
        if folder_finess == header_finess:
            return True
        owner, other = self.establishment(folder_finess), self.establishment(header_finess)
        return bool(owner and other and owner.legal_finess and owner.legal_finess == other.legal_finess)


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    path = explicit or os.environ.get("RPU_REGION_CONFIG")
    if not path:
        raise RegionConfigError("Aucune configuration de région : définissez RPU_REGION_CONFIG ou passez --region.")
    return Path(path)


def load(path: str | os.PathLike | None = None) -> Region:
    path = config_path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegionConfigError(f"Configuration de région introuvable : {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise RegionConfigError(f"{path} : TOML invalide ({error})") from None
    return parse(data, path)


def parse(data: dict, path: Path | None = None) -> Region:
    where = str(path) if path else "configuration"
    region = data.get("region") or {}
    schedule = data.get("schedule") or {}
    paths = data.get("paths") or {}
    atih = data.get("atih") or {}
    intake = data.get("intake") or {}
    contacts = data.get("contacts") or {}
    errors: list[str] = []

    def need(section: dict, key: str, section_name: str):
        if not section.get(key):
            errors.append(f"[{section_name}] {key} manquant")
        return section.get(key)

    code = need(region, "code", "region")
    name = need(region, "name", "region")
    operator_emails = _emails(region.get("operator_emails") or region.get("operator_email"), "region.operator_emails", errors)
    if not operator_emails:
        errors.append("[region] operator_emails manquant (adresse des alertes d'échec)")
    ars_emails = _emails(region.get("ars_emails"), "region.ars_emails", errors)

    establishments = []
    seen = set()
    for i, item in enumerate(data.get("establishment") or [], start=1):
        establishment = _establishment(item, i, errors)
        if establishment is None:
            continue
        if establishment.key in seen:
            errors.append(f"établissement n°{i} : FINESS {establishment.finess} ORDRE {establishment.ordre} déclaré deux fois")
        seen.add(establishment.key)
        establishments.append(establishment)

    base = path.parent if path else Path.cwd()
    delivery = atih.get("delivery", "http")
    if delivery not in ("http", "sftp"):
        errors.append("[atih] delivery doit valoir \"http\" ou \"sftp\"")
    result = None
    try:
        result = Region(
            code=code or "", name=name or "", operator_emails=operator_emails, ars_emails=ars_emails,
            establishments=tuple(establishments), path=path,
            timezone=region.get("timezone", "Europe/Paris"),
            absence_cutoff=_time(schedule.get("absence_cutoff", "10:00"), "schedule.absence_cutoff", errors),
            invs_time=_time(schedule.get("invs_time", "05:30"), "schedule.invs_time", errors),
            atih_day=int(schedule.get("atih_day", 10)),
            atih_delivery=delivery,
            codegeo_csv=(base / paths["codegeo_csv"]) if paths.get("codegeo_csv") else None,
            exports_dir=(base / paths["exports_dir"]) if paths.get("exports_dir") else None,
            airflow_url=region.get("airflow_url", "http://localhost:8080"),
            volume_guard=_volume_guard(intake, errors),
            limits=Limits(lock_seconds=_seconds(intake, "lock_seconds", 300, errors),
                          statement_seconds=_seconds(intake, "statement_seconds", 1800, errors),
                          read_seconds=_seconds(intake, "read_seconds", 1800, errors)),
            max_file_bytes=_seconds(intake, "max_file_mb", 200, errors) << 20,
            settle_seconds=_seconds(intake, "settle_seconds", 600, errors),
            keep_replaced_days=_seconds(intake, "keep_replaced_days", 35, errors),
            sftp=_sftp(data.get("sftp") or {}, base, errors),
            spf_emails=_emails(contacts.get("spf_emails"), "contacts.spf_emails", errors),
            atih_emails=_emails(contacts.get("atih_emails"), "contacts.atih_emails", errors),
            extra={k: v for k, v in data.items()
                   if k not in ("region", "schedule", "paths", "atih", "intake", "sftp", "contacts", "establishment")},
        )
    except (TypeError, ValueError) as error:
        errors.append(str(error))
    if result and not 1 <= result.atih_day <= 28:
        errors.append("[schedule] atih_day doit être entre 1 et 28")
    if errors:
        raise RegionConfigError(f"{where} : " + " ; ".join(errors))
    return result


def _volume_guard(intake: dict, errors: list[str]) -> VolumeGuard:
    """``[intake]``: when a file is held for the ORU rather than applied (see rpu.formats.model)."""
    emptied = intake.get("hold_when_day_emptied", True)
    drop = intake.get("hold_when_drop_over", 0.5)
    if not isinstance(emptied, bool):
        errors.append("[intake] hold_when_day_emptied doit valoir true ou false")
        emptied = True
    if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 < drop <= 1:
        errors.append("[intake] hold_when_drop_over doit être une part entre 0 (exclu) et 1, par exemple 0.5")
        drop = 0.5
    return VolumeGuard(hold_when_day_emptied=emptied, hold_when_drop_over=float(drop))


def _sftp(section: dict, base: Path, errors: list[str]) -> SftpSettings:
    """``[sftp]``: every key optional; the host key given as text is checked now."""
    port = section.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        errors.append("[sftp] port doit être un numéro de port (1 à 65535)")
        port = 22
    host_key = section.get("host_key") or None
    if host_key:
        try:
            host_key_fingerprint(str(host_key))
        except RegionConfigError as error:
            errors.append(str(error))
    key_file = section.get("host_key_file")
    return SftpSettings(host=str(section["host"]).strip() if section.get("host") else None, port=port,
                        host_key=str(host_key).strip() if host_key else None,
                        host_key_file=(base / key_file) if key_file else None)


def _seconds(section: dict, key: str, default: int, errors: list[str]) -> int:
    """A positive whole number of ``[intake]`` (seconds, megabytes or days)."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        errors.append(f"[intake] {key} doit être un entier positif")
        return default
    return value


def _emails(value, where: str, errors: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str) or not _EMAIL.match(item):
            errors.append(f"{where} : adresse invalide {item!r}")
    return tuple(items)


def _time(value, where: str, errors: list[str]) -> time:
    try:
        hour, minute = str(value).split(":")
        return time(int(hour), int(minute))
    except ValueError:
        errors.append(f"{where} : heure invalide {value!r} (attendu HH:MM)")
        return time(0, 0)


def _establishment(item: dict, index: int, errors: list[str]) -> EstablishmentConfig | None:
    where = f"établissement n°{index}"
    finess = str(item.get("finess", "")).strip().upper()
    if not finess_rules.is_well_formed(finess) or not finess_rules.check_digit_ok(finess):
        errors.append(f"{where} : FINESS invalide {finess!r}")
        return None
    legal = item.get("legal_finess")
    legal = str(legal).strip().upper() if legal else None
    if legal and not finess_rules.is_well_formed(legal):
        errors.append(f"{where} : FINESS juridique invalide {legal!r}")
    status = item.get("status", "onboarding")
    if status not in STATUSES:
        errors.append(f"{where} : statut {status!r} inconnu ({', '.join(STATUSES)})")
    if not item.get("name"):
        errors.append(f"{where} : nom manquant")
    return EstablishmentConfig(
        finess=finess, ordre=int(item.get("ordre", 0)), name=str(item.get("name", "")), legal_finess=legal,
        status=status,
        it_contacts=_emails(item.get("it_contacts"), f"{where}.it_contacts", errors),
        ars_contacts=_emails(item.get("ars_contacts"), f"{where}.ars_contacts", errors),
    )


# --- writing a region file (rpu region init, tests, the demo) ---------------------------------

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render(*, code: str, name: str, operator_emails, ars_emails=(), establishments=(), schedule=None, paths=None,
           atih=None, airflow_url: str | None = None) -> str:
    """A region file's TOML text. ``establishments`` are dicts with the keys of the
    ``[[establishment]]`` tables (finess, ordre, name, legal_finess, status, it_contacts, ars_contacts)."""
    lines = ["# Configuration de la région : établissements, destinataires, horaires, chemins.",
             "# Aucun secret ici : mots de passe et adresses des serveurs sont dans les connexions Airflow (.env).",
             "", "[region]", f"code = {_toml_value(code)}", f"name = {_toml_value(name)}",
             "timezone = \"Europe/Paris\"",
             f"operator_emails = {_toml_value(list(operator_emails))}",
             f"ars_emails = {_toml_value(list(ars_emails))}"]
    if airflow_url:
        lines.append(f"airflow_url = {_toml_value(airflow_url)}")
    for section, values in (("schedule", schedule), ("paths", paths), ("atih", atih)):
        if values:
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    for establishment in establishments:
        lines += ["", "[[establishment]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in establishment.items() if v is not None]
    return "\n".join(lines) + "\n"


def set_establishment_status(path: str | os.PathLike, finess: str, ordre: int, status: str) -> None:
    """Rewrite one establishment's ``status`` line in the region file (a promotion must survive
    the next ``sync``); everything else in the file, comments included, is kept as written."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    block_start, found = None, False
    blocks: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        if line.strip().startswith("["):
            if block_start is not None:
                blocks.append((block_start, i))
            block_start = i if line.strip() == "[[establishment]]" else None
    if block_start is not None:
        blocks.append((block_start, len(lines)))
    for start, end in blocks:
        table = tomllib.loads("".join(lines[start + 1:end]))
        if str(table.get("finess", "")).upper() == finess and int(table.get("ordre", 0)) == ordre:
            for i in range(start + 1, end):
                if re.match(r"^\s*status\s*=", lines[i]):
                    lines[i] = f'status = "{status}"\n'
                    break
            else:
                lines.insert(start + 1, f'status = "{status}"\n')
            found = True
            break
    if not found:
        raise RegionConfigError(f"{path} : établissement {finess}/{ordre} absent de la configuration")
    path.write_text("".join(lines), encoding="utf-8")
