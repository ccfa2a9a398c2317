"""The standard e-mails of the ORU, written from templates it can adjust (``rpu mail``):

- ``onboarding``: to a new establishment's IT, how to reach the drop server (host, port,
  account, the server's host key fingerprint), the folders, the file rules, how to check a file
  with ``rpu validate``, and the steps to production;
- ``golive``: to Santé publique France and the ATIH, an establishment now forwarded by the
  region (FINESS, ORDRE, name, start date);
- ``replay_request``: to an establishment, please drop again the files of a period.

Each is a subject template and a body template (``mail_<kind>_subject.txt.j2``,
``mail_<kind>.txt.j2``) ending with the shared ``mail_signature.txt.j2``; an ORU overrides any of
them in ``templates/`` beside its region file. Recipients: the establishment's IT contacts from
the registry, or ``[contacts]`` of the region file for Santé publique France and the ATIH; the
ORU in copy and as the address replies go to. No Airflow, no sending here (``rpu.config.mail``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from zoneinfo import ZoneInfo

import psycopg

from rpu.config.mail import build_message
from rpu.config.region import Region, RegionConfigError, host_key_fingerprint
from rpu.flows.ingest import DEPOT, HELD, PROCESSED, REJECTED, REPORT_SUFFIX
from rpu.flows.switch import ELIGIBLE_DAYS
from rpu.flows.templating import render_for
from rpu.formats import finess as finess_rules
from rpu.store.db import query


class MailError(Exception):
    """The e-mail cannot be prepared; the message says why and what to do, in French."""


@dataclass(frozen=True)
class Establishment:
    """An establishment as the registry holds it, with its last switch to production."""

    finess: str
    ordre: int
    name: str
    legal_finess: str | None
    status: str
    it_contacts: tuple[str, ...]
    live_since: date | None = None
    live_from_status: str | None = None


@dataclass(frozen=True)
class Mail:
    kind: str
    subject: str
    body: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()

    def message(self, sender: str) -> EmailMessage:
        message = build_message(sender, list(self.to), self.subject, self.body, cc=list(self.cc),
                                reply_to=list(self.reply_to))
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
        return message


# --- the establishment ---------------------------------------------------------------------------

def find_establishment(conn: psycopg.Connection, region: Region, finess: str, ordre: int | None = None) -> Establishment:
    """The registry's establishment; ``ordre`` may be left out when the FINESS has one service."""
    finess = finess.strip().upper()
    if not finess_rules.is_well_formed(finess):
        raise MailError(f"FINESS mal formé : « {finess} » (9 caractères, ex. 670000397).")
    rows = conn.execute(query("mail_establishment"), {"finess": finess}).fetchall()
    if ordre is not None:
        rows = [row for row in rows if row[1] == ordre]
    if not rows:
        where = f"FINESS {finess}" + (f", ORDRE {ordre}" if ordre is not None else "")
        if region.establishment(finess, ordre):
            raise MailError(f"{where} déclaré dans le fichier de région mais absent du registre : "
                            "lancez d'abord « rpu establishments sync ».")
        raise MailError(f"{where} inconnu du registre des établissements (rpu establishments list).")
    if len(rows) > 1:
        raise MailError(f"FINESS {finess} : plusieurs services d'urgences (ORDRE "
                        + ", ".join(str(row[1]) for row in rows) + ") : précisez --ordre.")
    finess, ordre, name, legal, status, contacts, changed_at, old_status = rows[0]
    live_since = changed_at.astimezone(ZoneInfo(region.timezone)).date() if changed_at and status == "live" else None
    return Establishment(finess, ordre, name, legal.strip() if legal else None, status, tuple(contacts or ()),
                         live_since, old_status if live_since else None)


# --- the three e-mails ---------------------------------------------------------------------------

def onboarding(region: Region, establishment: Establishment, to: list[str] | None = None) -> Mail:
    sftp = region.sftp
    if not sftp.host:
        raise MailError("Aucun serveur SFTP configuré : ajoutez au fichier de région une section [sftp] avec host "
                        "(l'adresse que les établissements joignent), port et host_key_file ou host_key.")
    public_key = sftp.public_key()
    if not public_key:
        raise MailError("[sftp] : clé d'hôte du serveur absente (host_key = \"ssh-ed25519 AAAA...\" ou host_key_file = "
                        "\"chemin/vers/cle.pub\") ; l'établissement en a besoin pour vérifier le serveur.")
    try:
        key_type, fingerprint = host_key_fingerprint(public_key)
    except RegionConfigError as error:
        raise MailError(str(error)) from None
    context = dict(sftp={"host": sftp.host, "port": sftp.port, "account": f"e{establishment.finess.lower()}",
                         "key_type": key_type, "fingerprint": fingerprint},
                   folders={"depot": DEPOT, "traites": PROCESSED, "rejetes": REJECTED, "attente": HELD},
                   report_suffix=REPORT_SUFFIX, eligible_days=ELIGIBLE_DAYS,
                   absence_cutoff=f"{region.absence_cutoff:%H:%M}")
    return _mail(region, "onboarding", establishment, _to_establishment(establishment, to), **context)


def golive(region: Region, establishment: Establishment, start: date | None = None,
           to: list[str] | None = None) -> Mail:
    if establishment.status == "inactive":
        raise MailError(f"{_label(establishment)} est inactif : pas d'annonce de mise en production.")
    start = start or establishment.live_since
    if start is None:
        raise MailError(f"{_label(establishment)} n'est pas en production (statut {establishment.status}) : passez-le "
                        "en production (rpu establishments promote) ou indiquez la date prévue avec --start.")
    recipients = list(to or ()) or [*region.spf_emails, *region.atih_emails]
    if not recipients:
        raise MailError("Aucun destinataire à Santé publique France ni à l'ATIH : renseignez [contacts] spf_emails et "
                        "atih_emails dans le fichier de région, ou passez --to.")
    return _mail(region, "golive", establishment, recipients, start=start,
                 after_parallel=establishment.live_from_status == "parallel" and start == establishment.live_since,
                 atih_day=region.atih_day)


def replay_request(region: Region, establishment: Establishment, start: date, end: date, today: date,
                   reason: str | None = None, to: list[str] | None = None) -> Mail:
    if end < start:
        raise MailError(f"Période inversée : la fin ({end:%d/%m/%Y}) précède le début ({start:%d/%m/%Y}).")
    if end > today:
        raise MailError(f"La fin de la période ({end:%d/%m/%Y}) est dans le futur.")
    return _mail(region, "replay_request", establishment, _to_establishment(establishment, to), start=start, end=end,
                 days=(end - start).days + 1, reason=(reason or "").strip() or None)


def default_file_name(mail: Mail, establishment: Establishment, today: date) -> str:
    return f"courriel_{mail.kind}_{establishment.finess}_{establishment.ordre}_{today:%Y%m%d}.eml"


def _mail(region: Region, kind: str, establishment: Establishment, to: list[str], **context) -> Mail:
    context.update(region_code=region.code, region_name=region.name, operator_emails=list(region.operator_emails),
                   establishment=establishment)
    subject = " ".join(render_for(region.path, f"mail_{kind}_subject.txt.j2", **context).split())
    body = render_for(region.path, f"mail_{kind}.txt.j2", **context)
    operators = tuple(a for a in region.operator_emails if a not in to)
    return Mail(kind, subject, body, tuple(to), cc=operators, reply_to=tuple(region.operator_emails))


def _to_establishment(establishment: Establishment, to: list[str] | None) -> list[str]:
    recipients = list(to or ()) or list(establishment.it_contacts)
    if not recipients:
        raise MailError(f"{_label(establishment)} : aucun contact informatique (it_contacts) dans le registre : "
                        "ajoutez-le au fichier de région puis « rpu establishments sync », ou passez --to.")
    return recipients


def _label(establishment: Establishment) -> str:
    return f"{establishment.name} (FINESS {establishment.finess}, ORDRE {establishment.ordre})"


def local_today(region: Region) -> date:
    return datetime.now(ZoneInfo(region.timezone)).date()
