"""``rpu mail onboarding|golive|replay-request``: the ORU's standard e-mails, filled from the
registry and the region file (``rpu.flows.mail_types``), written as a ``.eml`` to review, or
sent with ``--send`` through the region's SMTP relay.

The relay is the ``smtp_default`` connection the DAGs use, read as ``rpu region check`` reads
it: from ``--env FILE``, else the ``AIRFLOW_CONN_SMTP_DEFAULT`` variable, else the ``.env``
beside the region file. No Airflow import.

Wired into ``rpu.cli.main.build_parser`` with :func:`register_mail_commands`. Exit codes as the
rest of ``rpu``: 0 success, 1 refused (unknown FINESS, nothing configured, relay refusing),
2 usage error.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
from datetime import date
from pathlib import Path

from rpu.cli.errors import EXIT_OK, EXIT_REJECTED, UsageError

SMTP_VARIABLE = "AIRFLOW_CONN_SMTP_DEFAULT"


def register_mail_commands(subparsers) -> argparse.ArgumentParser:
    mail = subparsers.add_parser(
        "mail", help="courriels types de l'ORU : raccordement, mise en production, nouvel envoi",
        description="Prépare un courriel type à partir des modèles (include/templates/mail_*.txt.j2, ou templates/ "
                    "à côté du fichier de région) : écrit un fichier .eml à relire, ou l'envoie avec --send.")
    kinds = mail.add_subparsers(dest="mail_command", required=True, metavar="COURRIEL")

    onboarding = kinds.add_parser("onboarding", help="à l'informatique d'un nouvel établissement : accès SFTP, "
                                                     "dossiers, règles des fichiers, étapes jusqu'à la production")
    _common(onboarding)
    onboarding.set_defaults(func=cmd_mail, build=_onboarding)

    golive = kinds.add_parser("golive", help="à Santé publique France et à l'ATIH : un établissement mis en production")
    _common(golive)
    golive.add_argument("--start", type=_iso_date,
                        help="date de mise en production (défaut : celle de l'historique des statuts)")
    golive.set_defaults(func=cmd_mail, build=_golive)

    replay = kinds.add_parser("replay-request", help="à un établissement : déposer à nouveau les fichiers d'une période")
    _common(replay)
    replay.add_argument("--start", type=_iso_date, required=True, help="premier jour (AAAA-MM-JJ)")
    replay.add_argument("--end", type=_iso_date, required=True, help="dernier jour inclus (AAAA-MM-JJ)")
    replay.add_argument("--reason", help="motif, repris dans le courriel")
    replay.set_defaults(func=cmd_mail, build=_replay_request)
    return mail


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("finess", metavar="FINESS")
    parser.add_argument("--ordre", type=int, help="ORDRE (défaut : le seul service d'urgences de ce FINESS)")
    parser.add_argument("--to", action="append", default=[], metavar="ADRESSE",
                        help="destinataire à la place de ceux du registre ou du fichier de région (répétable)")
    parser.add_argument("--send", action="store_true", help="envoyer par le relais SMTP de la région (smtp_default)")
    parser.add_argument("--out", "-o", help="fichier .eml à écrire (défaut : courriel_<type>_<FINESS>_<ORDRE>_<date>.eml "
                                            "dans le dossier courant ; avec --send, écrit seulement s'il est donné)")
    parser.add_argument("--env", help="fichier .env d'où lire AIRFLOW_CONN_SMTP_DEFAULT (défaut : l'environnement, "
                                      "puis le .env à côté du fichier de région)")
    parser.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    parser.add_argument("--region", help="fichier de configuration de la région (défaut : RPU_REGION_CONFIG)")


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"date invalide (attendu AAAA-MM-JJ) : {text}") from None


def _onboarding(mail_types, region, establishment, to, args, today):
    return mail_types.onboarding(region, establishment, to)


def _golive(mail_types, region, establishment, to, args, today):
    return mail_types.golive(region, establishment, args.start, to)


def _replay_request(mail_types, region, establishment, to, args, today):
    return mail_types.replay_request(region, establishment, args.start, args.end, today, args.reason, to)


def cmd_mail(args) -> int:
    from rpu.config import region as region_config
    from rpu.flows import mail_types
    from rpu.store import db as store

    to = _addresses(args.to)
    try:
        region = region_config.load(args.region)
        with store.connect(args.database) as conn:
            establishment = mail_types.find_establishment(conn, region, args.finess, args.ordre)
        today = mail_types.local_today(region)
        mail = args.build(mail_types, region, establishment, to, args, today)
        smtp = _smtp_settings(args, region, required=args.send)
    except (region_config.RegionConfigError, mail_types.MailError) as error:
        print(f"rpu: {error}", file=sys.stderr)
        return EXIT_REJECTED
    sender = smtp.sender if smtp else region.operator_emails[0]
    message = mail.message(sender)
    default_out = Path(mail_types.default_file_name(mail, establishment, today))
    print(f"Objet : {mail.subject}\nÀ : {', '.join(mail.to)}" + (f"\nCopie : {', '.join(mail.cc)}" if mail.cc else ""))
    if args.out or not args.send:
        _write(message, Path(args.out) if args.out else default_out)
    if args.send:
        try:
            recipients = smtp.deliver(message)
        except (OSError, smtplib.SMTPException) as error:
            kept = Path(args.out) if args.out else default_out
            if not args.out:
                _write(message, kept)
            print(f"rpu: envoi impossible par {smtp.host}:{smtp.port} ({_smtp_reason(error)}) ; le courriel est "
                  f"gardé dans {kept}.", file=sys.stderr)
            return EXIT_REJECTED
        print(f"Courriel envoyé à {', '.join(recipients)} (relais {smtp.host}:{smtp.port}).")
    return EXIT_OK


def _addresses(values: list[str]) -> list[str]:
    addresses = [a.strip() for value in values for a in value.split(",") if a.strip()]
    wrong = [a for a in addresses if a.count("@") != 1 or " " in a]
    if wrong:
        raise UsageError("adresse invalide pour --to : " + ", ".join(wrong))
    return addresses


def _write(message, path: Path) -> None:
    path.write_bytes(bytes(message))
    print(f"Courriel écrit dans {path} : relisez-le (il s'ouvre dans un logiciel de messagerie), puis envoyez-le "
          "de là ou relancez la commande avec --send.")


def _smtp_settings(args, region, required: bool):
    """The relay of the ``smtp_default`` connection; None when there is none and none is needed."""
    from rpu.cli.connections import parse_connection
    from rpu.config.mail import SmtpSettings
    from rpu.flows.mail_types import MailError

    value, where = _smtp_connection(args, region)
    try:
        if not value:
            raise ValueError(f"{SMTP_VARIABLE} absente (environnement, --env ou .env à côté du fichier de région)")
        spec = parse_connection(value)
        if spec.placeholders():
            raise ValueError(f"{where} : à renseigner : " + ", ".join(spec.placeholders()))
    except ValueError as error:  # JSON errors included
        if required:
            raise MailError(f"Relais SMTP inutilisable : {error}. Sans --send, le courriel est écrit dans un fichier "
                            ".eml.") from None
        return None
    return SmtpSettings.from_connection(spec.host, spec.port, spec.login, spec.password, spec.extras)


def _smtp_connection(args, region) -> tuple[str | None, str]:
    """``AIRFLOW_CONN_SMTP_DEFAULT`` and where it was read: ``--env FILE``, else the environment,
    else the ``.env`` beside the region file (as ``rpu region init`` writes it)."""
    from rpu.cli.connections import read_env_file  # docker compose's reading of a .env, shared with region check
    from rpu.flows.mail_types import MailError

    if args.env:
        path = Path(args.env)
        if not path.is_file():
            raise MailError(f"Fichier introuvable : {path}")
        return read_env_file(path).get(SMTP_VARIABLE), f"{SMTP_VARIABLE} de {path}"
    if os.environ.get(SMTP_VARIABLE):
        return os.environ[SMTP_VARIABLE], SMTP_VARIABLE
    beside = region.path.parent / ".env" if region.path else None
    if beside is not None and beside.is_file():
        return read_env_file(beside).get(SMTP_VARIABLE), f"{SMTP_VARIABLE} de {beside}"
    return None, SMTP_VARIABLE


def _smtp_reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connexion refusée"
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return "identifiant ou mot de passe refusé"
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return "destinataires refusés : " + ", ".join(error.recipients)
    if isinstance(error, TimeoutError):
        return "pas de réponse"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
