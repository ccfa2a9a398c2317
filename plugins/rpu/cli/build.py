"""``rpu build``: an outbound file built by hand from the regional database, as the DAGs build it.

    rpu build oscour --finess F [--ordre 0] --start AAAA-MM-JJ --end AAAA-MM-JJ --database URL --output FICHIER
    rpu build syrius --finess F [--ordre 0] --year AAAA --month M --codegeo CSV --database URL --output FICHIER.zip

Nothing is journaled nor sent: the file is for checking (``rpu validate``), for a manual send
decided by the ORU, or for comparing with what a destination shows. Written owner-only.
Wired into ``rpu.cli.main`` by ``register_build_commands(subparsers)``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

EXIT_OK, EXIT_NOTHING = 0, 1


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"date invalide (attendu AAAA-MM-JJ) : {text}") from None


def _finess(text: str) -> str:
    from rpu.formats.finess import is_well_formed

    value = text.strip().upper()
    if not is_well_formed(value):
        raise argparse.ArgumentTypeError(f"FINESS invalide : {text} (9 caractères, département puis chiffres)")
    return value


def _month(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 12:
        raise argparse.ArgumentTypeError(f"mois invalide : {text} (1 à 12)")
    return value


def _usage(message: str) -> Exception:
    from rpu.cli.errors import UsageError

    return UsageError(message)


def _output(path: str) -> Path:
    output = Path(path)
    if output.is_dir():
        raise _usage(f"--output doit être un fichier, pas un dossier : {output}")
    if not output.parent.is_dir():
        raise _usage(f"Dossier de sortie introuvable : {output.parent}")
    return output


def cmd_build_oscour(args) -> int:
    from rpu.flows.invs import build_oscour
    from rpu.store import db as store

    if args.end < args.start:
        raise _usage(f"--end ({args.end}) est avant --start ({args.start}).")
    output = _output(args.output)
    with store.connect(args.database, autocommit=True) as conn:
        count = build_oscour(conn, args.finess, args.ordre, args.start, args.end, output)
    print(f"{output} : {count} passages de {args.finess}/{args.ordre} du {args.start:%d/%m/%Y} au {args.end:%d/%m/%Y}")
    return EXIT_OK


def cmd_build_syrius(args) -> int:
    from rpu.flows.atih import MonthPlan, build_syrius
    from rpu.formats.syrius import CodegeoTable
    from rpu.store import db as store
    from rpu.store.extract import count_visits

    codegeo_path = Path(args.codegeo)
    if not codegeo_path.is_file():
        raise _usage(f"Table CP → CODEGEO introuvable : {codegeo_path}")
    try:
        codegeo = CodegeoTable.load(codegeo_path)
    except ValueError as error:
        raise _usage(f"Table CP → CODEGEO illisible : {error}") from None
    output = _output(args.output)
    with store.connect(args.database, autocommit=True) as conn:
        start, end = date(args.year, 1, 1), MonthPlan(args.year, args.month, forced=True).end
        if count_visits(conn, args.finess, args.ordre, start, end) == 0:
            print(f"rpu: aucun passage de {args.finess}/{args.ordre} du 01/01/{args.year} au {end:%d/%m/%Y} : ATIH "
                  "refuse un fichier SYRIUS sans PATIENT, aucun fichier écrit.", file=sys.stderr)
            return EXIT_NOTHING
        entry, count, _by_month = build_syrius(conn, args.finess, args.ordre, args.year, args.month, codegeo, output)
    print(f"{output} : {count} RPU de {args.finess}/{args.ordre} du 01/01/{args.year} à fin {args.month:02d}/{args.year}"
          f" (entrée {entry})")
    return EXIT_OK


def register_build_commands(subparsers) -> None:
    """Add ``build oscour`` and ``build syrius`` to the ``rpu`` command's subparsers."""
    build = subparsers.add_parser("build", help="construire un fichier sortant (OSCOUR, SYRIUS) depuis la base régionale")
    kinds = build.add_subparsers(dest="build_command", required=True, metavar="FICHIER")

    oscour = kinds.add_parser("oscour", help="fichier OSCOUR d'un établissement pour une période (Santé publique France)")
    oscour.add_argument("--finess", required=True, type=_finess)
    oscour.add_argument("--ordre", type=int, default=0)
    oscour.add_argument("--start", required=True, type=_iso_date, help="premier jour (ENTREE), AAAA-MM-JJ")
    oscour.add_argument("--end", required=True, type=_iso_date, help="dernier jour inclus, AAAA-MM-JJ")
    oscour.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    oscour.add_argument("--output", "-o", required=True, help="fichier XML à écrire")
    oscour.set_defaults(func=cmd_build_oscour)

    syrius = kinds.add_parser("syrius", help="fichier SYRIUS cumulé (1er janvier → fin du mois) zippé (ATIH)")
    syrius.add_argument("--finess", required=True, type=_finess)
    syrius.add_argument("--ordre", type=int, default=0)
    syrius.add_argument("--year", required=True, type=int)
    syrius.add_argument("--month", required=True, type=_month)
    syrius.add_argument("--codegeo", required=True, help="table CP → CODEGEO de l'ATIH (CSV ;)")
    syrius.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    syrius.add_argument("--output", "-o", required=True, help="fichier .zip à écrire")
    syrius.set_defaults(func=cmd_build_syrius)
