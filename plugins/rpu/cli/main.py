"""The ``rpu`` command: what ORU staff and hospital IT do without Airflow.

Exit codes: 0 success, 1 a file was rejected (or an operation refused), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

from rpu.cli.errors import EXIT_CRASH, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, UsageError


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"date invalide (attendu AAAA-MM-JJ) : {text}") from None


def _existing_files(paths: list[str]) -> list[Path]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError("Fichier introuvable : " + ", ".join(missing))
    return [Path(p) for p in paths]


# --- rpu validate ------------------------------------------------------------------------------

def cmd_validate(args) -> int:
    from rpu.flows.report import format_report
    from rpu.store.copy_in import validate_file

    verdicts, crashed = [], False
    for path in _existing_files(args.files):
        try:
            report = validate_file(path)
        except Exception as error:  # a bug of ours: still one verdict per file, and exit 3
            crashed = True
            verdicts.append(({"file": str(path), "status": "error", "error": type(error).__name__},
                             f"Rapport de contrôle du fichier RPU : {path}\n\nVerdict : ERREUR du contrôle "
                             f"({type(error).__name__}) : signalez-la à l'ORU avec le fichier.\n"))
            continue
        verdicts.append((report, None))
    if args.json:
        json.dump([v.as_json() if text is None else v for v, text in verdicts], sys.stdout, ensure_ascii=False,
                  indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(format_report(v) if text is None else text for v, text in verdicts))
    if crashed:
        return EXIT_CRASH
    return EXIT_REJECTED if any(text is None and v.rejected for v, text in verdicts) else EXIT_OK


# --- rpu load ----------------------------------------------------------------------------------

def cmd_load(args) -> int:
    from rpu.cli.files import STATUS_FR
    from rpu.store import db as store
    from rpu.store.loader import load_file

    files = _existing_files(args.files)
    guard = _region_guard()
    any_rejected = False
    with store.connect(args.database) as conn:
        for path in files:
            result = load_file(conn, path, sender=args.sender, guard=guard)
            report = result.report
            any_rejected |= result.status == "rejected"
            line = f"{path}: {STATUS_FR[result.status]} (journal n°{result.received_file_id})"
            if report and result.status != "rejected":
                line += (f", {report.records} passages lus, {result.loaded_records} chargés,"
                         f" {report.rejected_records} rejetés, {report.flagged_records} avec anomalie,"
                         f" {result.replaced_records} remplacés")
            print(line)
            if result.reason:
                print(f"  {result.reason}")
            if result.status == "held":
                print(f"  Pour l'appliquer malgré tout : rpu files apply {result.received_file_id} --reason \"...\"")
    return EXIT_REJECTED if any_rejected else EXIT_OK


def _region_guard():
    """The region's ``[intake]`` thresholds when a region file is configured, else the defaults."""
    from rpu.config import region
    from rpu.store.loader import DEFAULT_GUARD

    if not os.environ.get("RPU_REGION_CONFIG"):
        return DEFAULT_GUARD
    return region.load().volume_guard


# --- rpu db ------------------------------------------------------------------------------------

def cmd_db_migrate(args) -> int:
    from rpu.store import db as store

    with store.connect(args.database, autocommit=True) as conn:
        applied = store.migrate(conn)
        version = store.schema_version(conn)
    for migration in applied:
        print(f"appliquée : {migration.version:03d}_{migration.name}")
    print(f"schéma à jour (version {version})")
    return EXIT_OK


# --- rpu generate ------------------------------------------------------------------------------

def cmd_generate(args) -> int:
    from rpu.sandbox import generator

    unknown = set(args.defect) - set(generator.DEFECTS)
    if unknown:
        raise UsageError("Défaut inconnu : " + ", ".join(sorted(unknown)) + ". Connus : " + ", ".join(generator.DEFECTS))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    end = args.end or date.today()
    if args.defect or args.variant != "standard":
        establishments = generator.demo_establishments(args.establishments, seed=args.seed)
        paths = []
        start = date.fromordinal(end.toordinal() - args.days + 1)
        for i, establishment in enumerate(establishments):
            path = out / f"O{establishment['finess']}_{establishment['ordre']}_{end:%Y%m%d}.xml"
            generator.write_oscour_file(
                path, establishment["finess"], establishment["ordre"], start, end,
                visits_per_day=args.visits_per_day or establishment["daily_visits"], seed=args.seed + i,
                defects=args.defect, variant=args.variant,
            )
            paths.append(path)
    else:
        paths = generator.generate_region(out, args.establishments, args.days, end, seed=args.seed,
                                          visits_per_day=args.visits_per_day)
    for path in paths:
        print(path)
    return EXIT_OK


# --- the parser --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpu", description="Concentrateur régional RPU (OSCOUR / SYRIUS).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMANDE")

    validate = commands.add_parser("validate", help="contrôler des fichiers OSCOUR sans base de données")
    validate.add_argument("files", nargs="+", metavar="FICHIER")
    validate.add_argument("--json", action="store_true", help="sortie JSON (un objet par fichier)")
    validate.set_defaults(func=cmd_validate)

    load = commands.add_parser("load", help="contrôler et charger des fichiers dans la base régionale")
    load.add_argument("files", nargs="+", metavar="FICHIER")
    load.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    load.add_argument("--sender", default="cli", help="expéditeur noté au journal (défaut : cli)")
    load.set_defaults(func=cmd_load)

    db = commands.add_parser("db", help="schéma de la base régionale")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    migrate = db_commands.add_parser("migrate", help="appliquer les migrations manquantes")
    migrate.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    migrate.set_defaults(func=cmd_db_migrate)

    generate = commands.add_parser("generate", help="générer des fichiers OSCOUR synthétiques (démo, tests)")
    generate.add_argument("--establishments", "-n", type=int, default=10)
    generate.add_argument("--days", "-d", type=int, default=7)
    generate.add_argument("--end", type=_iso_date, help="dernier jour couvert (défaut : aujourd'hui)")
    generate.add_argument("--visits-per-day", type=float)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--defect", action="append", default=[], help="règle à injecter (répétable)")
    generate.add_argument("--variant", default="standard")
    generate.add_argument("--output", "-o", required=True, help="dossier de sortie")
    generate.set_defaults(func=cmd_generate)

    # The operators' command groups, each defined beside the use cases it drives.
    from rpu.airflow.access import register_access_commands
    from rpu.cli.build import register_build_commands
    from rpu.cli.feedback import register_feedback_commands
    from rpu.cli.files import register_file_commands
    from rpu.cli.mail import register_mail_commands
    from rpu.cli.monitor import register_establishment_commands
    from rpu.cli.region import register_region_commands
    from rpu.sandbox.demo import register_demo_commands

    register_establishment_commands(commands)
    register_build_commands(commands)
    register_file_commands(commands)
    register_region_commands(commands)
    register_access_commands(commands)
    register_demo_commands(commands)
    register_feedback_commands(commands)
    register_mail_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        print(f"rpu: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # an operator gets one clear line, not a stack trace
        from rpu.store.db import StoreError

        if isinstance(error, StoreError):
            print(f"rpu: {error}", file=sys.stderr)
            return EXIT_REJECTED
        import psycopg

        if isinstance(error, psycopg.errors.UndefinedTable):
            print("rpu: base régionale non initialisée : lancez d'abord `rpu db migrate`.", file=sys.stderr)
            return EXIT_REJECTED
        if isinstance(error, psycopg.OperationalError):
            print(f"rpu: base de données injoignable : {str(error).strip().splitlines()[0]}", file=sys.stderr)
            return EXIT_REJECTED
        raise


if __name__ == "__main__":
    sys.exit(main())
