"""``rpu health`` and ``rpu report establishment``: the concentrator's own state, and the
report sent back to an establishment, built by hand.

Wired into ``rpu.cli.main.build_parser`` with :func:`register_feedback_commands`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path


def register_feedback_commands(subparsers) -> None:
    health = subparsers.add_parser(
        "health", help="état du concentrateur lui-même (code 0 sain, 1 dégradé, 2 hors service)",
        description="Pour chaque flux, la dernière exécution réussie et son retard ; les fichiers en attente "
                    "dans depot/ depuis plus d'une heure ; les fichiers retenus ; les envois en attente ou en "
                    "échec ; l'espace disque des exports. Code de sortie : 0 sain, 1 dégradé, 2 hors service "
                    "(Nagios, Zabbix, Centreon, healthcheck du conteneur).")
    health.add_argument("--json", action="store_true", help="sortie JSON")
    health.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    health.add_argument("--region", help="fichier de configuration de la région (défaut : RPU_REGION_CONFIG)")
    health.set_defaults(func=cmd_health)

    report = subparsers.add_parser("report", help="rapports envoyés aux établissements")
    kinds = report.add_subparsers(dest="report_command", required=True, metavar="RAPPORT")
    establishment = kinds.add_parser(
        "establishment", help="le rapport d'un établissement (page HTML autonome, en français)")
    establishment.add_argument("finess", metavar="FINESS")
    establishment.add_argument("--ordre", type=int, default=0, help="ORDRE (défaut : 0)")
    establishment.add_argument("--start", type=_iso_date, required=True, help="premier jour (AAAA-MM-JJ)")
    establishment.add_argument("--end", type=_iso_date, required=True, help="dernier jour inclus (AAAA-MM-JJ)")
    establishment.add_argument("--output", "-o", required=True, help="fichier HTML à écrire")
    establishment.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    establishment.add_argument("--region", help="fichier de configuration de la région (défaut : RPU_REGION_CONFIG)")
    establishment.set_defaults(func=cmd_report_establishment)


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"date invalide (attendu AAAA-MM-JJ) : {text}") from None


def cmd_health(args) -> int:
    from rpu.config import region as region_config
    from rpu.flows import health

    exports_dir = None
    try:
        exports_dir = region_config.load(args.region).exports_base
    except region_config.RegionConfigError as error:
        print(f"rpu: {error}", file=sys.stderr)
    result = health.check(args.database or os.environ.get("RPU_DATABASE_URL"), exports_dir)
    if args.json:
        json.dump(result.as_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(result.lines()))
    return result.exit_code


def cmd_report_establishment(args) -> int:
    from rpu.cli.errors import UsageError
    from rpu.config import region as region_config
    from rpu.flows import establishment_report
    from rpu.store import db as store

    if args.end < args.start:
        raise UsageError(f"période inversée : {args.start} → {args.end}")
    region = region_config.load(args.region)
    with store.connect(args.database, autocommit=True) as conn:
        try:
            page = establishment_report.build(conn, region, args.finess.upper(), args.ordre, args.start, args.end)
        except establishment_report.ReportError as error:
            print(f"rpu: {error}", file=sys.stderr)
            return 1
    output = Path(args.output)
    output.write_text(page.html, encoding="utf-8")
    print(f"{output} : rapport de {page.name} ({page.finess}/{page.ordre}), du {args.start:%d/%m/%Y} au "
          f"{args.end:%d/%m/%Y}, {page.visits} passages")
    return 0
