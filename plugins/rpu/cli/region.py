"""``rpu region init|check``: create a region's deployment files, then test them for real.

``init`` writes ``regions/<code>/region.toml`` (no secret), ``regions/<code>/.env`` (every
secret of the docker compose stack, freshly generated, mode 0600) and the SFTP account list;
``check`` loads the region file and opens every connection it can (PostgreSQL, SFTP, SMTP,
ATIH's URL), one line per check, exit 0 when everything answers.

Connections are read the way Airflow reads them, from ``AIRFLOW_CONN_<ID>`` variables (JSON or
URI form), here from the environment or from the ``--env`` file. No Airflow import: this runs
on an operator's laptop as well as inside the scheduler container.

This module is the command line (arguments, what is printed, exit codes); the work is in
:mod:`rpu.cli.region_init`, :mod:`rpu.cli.region_check` and :mod:`rpu.cli.connections`.

Wired into ``rpu.cli.main.build_parser`` with :func:`register_region_commands`. Exit codes as the
rest of ``rpu``: 0 success, 1 refused or a check failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from rpu.cli.connections import PLACEHOLDER, read_env_file
from rpu.cli.errors import EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from rpu.cli.region_check import DEFAULT_TIMEOUT, run_checks
from rpu.cli.region_init import compose_path, init_region
from rpu.config.region import host_key_fingerprint

EXIT_FAILED = EXIT_REJECTED  # a check or an init that did not succeed
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
    env = compose_path(target / ".env")
    _, fingerprint = host_key_fingerprint(fresh.sftp_host_public_key)
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


def cmd_check(args) -> int:
    environment = dict(os.environ)
    if args.env:
        env_path = Path(args.env)
        if not env_path.is_file():
            return _error(f"fichier .env introuvable : {env_path}", EXIT_USAGE)
        environment.update(read_env_file(env_path))  # the file given explicitly wins
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
