"""``rpu establishments sync|list|promote``: the registry and the switch from an older
concentrator, for the ORU, without Airflow.

Wired into ``rpu.cli.main.build_parser`` with :func:`register_establishment_commands`. Exit codes
as the rest of ``rpu``: 0 success, 1 refused (a promotion not allowed, a wrong region file), 2
usage error.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def register_establishment_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``establishments`` (sync, list, promote) to the ``rpu`` sub-commands."""
    establishments = subparsers.add_parser(
        "establishments", help="registre des établissements : synchroniser, lister, passer en production")
    actions = establishments.add_subparsers(dest="establishments_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser, author: bool = False) -> None:
        parser.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
        parser.add_argument("--region", help="fichier de configuration de la région (défaut : RPU_REGION_CONFIG)")
        if author:
            parser.add_argument("--author", default=_default_author(),
                                help="auteur inscrit à l'historique des statuts (défaut : $USER)")

    sync = actions.add_parser("sync", help="aligner la base sur le fichier de région (changements datés et signés)")
    common(sync, author=True)
    sync.set_defaults(func=cmd_sync)

    listing = actions.add_parser("list", help="établissements, dernier fichier reçu, série des établissements en parallèle")
    common(listing)
    listing.set_defaults(func=cmd_list)

    promote = actions.add_parser(
        "promote", help="passer un établissement de « parallel » à « live » (7 jours corrects consécutifs exigés)")
    promote.add_argument("finess", metavar="FINESS")
    promote.add_argument("--ordre", type=int, default=0, help="ORDRE (défaut : 0)")
    promote.add_argument("--force", action="store_true", help="passer outre la série de 7 jours (exige --reason)")
    promote.add_argument("--reason", help="motif, inscrit à l'historique des statuts")
    common(promote, author=True)
    promote.set_defaults(func=cmd_promote)
    return establishments


def _default_author() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # no user name on this system
        return "inconnu"


def _today(tz: str):
    return datetime.now(ZoneInfo(tz)).date()


def _load_region(args):
    from rpu.config import region as region_config

    return region_config.load(args.region)


def _refused(message: str) -> int:
    print(f"rpu: {message}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_sync(args) -> int:
    from rpu.config.region import RegionConfigError
    from rpu.flows import switch
    from rpu.store import db as store
    from rpu.store import registry

    try:
        region = _load_region(args)
    except RegionConfigError as error:
        return _refused(str(error))
    today = datetime.now(ZoneInfo(region.timezone)).date()
    refused: list[str] = []
    with store.connect(args.database) as conn:
        changes = registry.sync(conn, region, author=args.author, refused=refused,
                                may_go_live=lambda f, o: switch.streak(conn, f, o, today, region.timezone).eligible)
    for change in changes:
        print(f"statut : {change}")
    for message in refused:
        print(f"refusé : {message}")
    print(f"{len(region.establishments)} établissement(s) déclaré(s), {len(changes)} changement(s) de statut.")
    return EXIT_OK


def cmd_list(args) -> int:
    from rpu.config.region import RegionConfigError
    from rpu.flows import switch
    from rpu.store import db as store
    from rpu.store import registry

    tz = "Europe/Paris"
    if args.region or os.environ.get("RPU_REGION_CONFIG"):
        try:
            tz = _load_region(args).timezone
        except RegionConfigError as error:
            return _refused(str(error))
    today = _today(tz)
    with store.connect(args.database) as conn:
        rows = registry.list_establishments(conn)
        streaks = {(s.finess, s.ordre): s for s in switch.streaks(conn, today, tz)}
    print(f"{'FINESS':<9} {'ORDRE':>5}  {'STATUT':<10}  {'DERNIER FICHIER':<32}  {'SÉRIE':<18}  NOM")
    for row in rows:
        last = "—"
        if row.last_file_at:
            last = f"{row.last_file_at.astimezone(ZoneInfo(tz)):%d/%m/%Y %H:%M} {row.last_file_status}"
        series = ""
        streak = streaks.get((row.finess, row.ordre))
        if streak:
            series = f"{streak.days} j — éligible" if streak.eligible else f"{streak.days}/{switch.ELIGIBLE_DAYS} j"
        print(f"{row.finess:<9} {row.ordre:>5}  {row.status:<10}  {last:<32}  {series:<18}  {row.name}")
    eligible = [s for s in streaks.values() if s.eligible]
    if eligible:
        print("\nÉligibles au passage en production : "
              + ", ".join(f"{s.finess} (rpu establishments promote {s.finess} --ordre {s.ordre})" for s in eligible))
    return EXIT_OK


def cmd_promote(args) -> int:
    from rpu.config import region as region_config
    from rpu.flows import switch
    from rpu.store import db as store

    if args.force and not (args.reason or "").strip():
        print("rpu: --force exige un motif : --reason \"...\" (inscrit à l'historique des statuts).", file=sys.stderr)
        return EXIT_USAGE
    try:
        region_path = region_config.config_path(args.region)
        region = region_config.load(region_path)
    except region_config.RegionConfigError as error:
        return _refused(str(error))
    with store.connect(args.database) as conn:
        try:
            promotion = switch.promote(conn, args.finess, args.ordre, _today(region.timezone), author=args.author,
                                       region_path=region_path, force=args.force, reason=args.reason,
                                       tz=region.timezone)
        except switch.PromotionRefused as refusal:
            return _refused(str(refusal))
    print(f"statut : {promotion.change} ({promotion.reason}) ; enregistré par {args.author}, "
          f"et reporté dans {region_path}.")
    if promotion.forced:
        print("Passage forcé : la série de 7 jours n'était pas atteinte.")
    return EXIT_OK
