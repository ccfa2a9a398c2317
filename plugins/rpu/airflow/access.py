"""Who may do what in the concentrator's Airflow: accounts and roles, declared in the region file.

Airflow's **FAB auth manager** (``apache-airflow-providers-fab``) does the checking, on every
UI page and REST call; this module declares the roles and creates the accounts. Airflow 3's
default SimpleAuthManager cannot say "may trigger this one DAG and no other" (its roles
``viewer < user < op < admin`` are global), FAB's DAG-level permissions can.

==================  ==========================  =========================================================
role (FAB)          who (``[access]`` key)       may
==================  ==========================  =========================================================
``Admin``           ORU operators               everything: they administer the concentrator
                    (``operators``)
``ARS``             ARS staff (``ars``)         read everything a ``Viewer`` reads (DAGs, runs, tasks,
                                                logs, XComs, code, assets, pools); trigger
                                                ``rpu_invs_replay``; nothing else. FAB ties the right
                                                to trigger a DAG to the right to edit it, so they can
                                                also pause/unpause ``rpu_invs_replay`` (that one only).
``Etablissement``   establishments' IT          their own profile, nothing else: no DAG, run, task or
                    (``establishments``)        log of any establishment. Their files and the reports
                                                on them are in their own SFTP folder.
==================  ==========================  =========================================================

Connections, variables and the configuration hold servers and accounts: only ``Admin`` reads
them. In the region file (no password there)::

    [access]
    operators = ["oru.dupont"]
    ars = ["ars.martin", { username = "ars.astreinte", email = "astreinte@ars.example.fr" }]
    establishments = [{ username = "si.chu", finess = "670780055", email = "si@chu.example.fr" }]

``rpu access sync`` (run with the deployment's Airflow settings: ``AIRFLOW_HOME``, its
database, ``AIRFLOW__CORE__AUTH_MANAGER`` = :data:`FAB_AUTH_MANAGER`) makes Airflow match the
file: the ``ARS`` and ``Etablissement`` roles get exactly the permissions above, each declared
account exactly its role (and is active); a new account gets the password found for it in
``--passwords`` (a JSON object ``{"username": "password"}``) or a random one written back to
that file (owner-only) for handing out; an existing account keeps its password. An account
holding ``ARS`` or ``Etablissement`` that the file no longer declares is deactivated.
Operators removed from the file keep their account (an administrator is never locked out by a
configuration edit): deactivate them in the UI (Security → Users).

Do not set ``access_control`` on the DAGs: FAB would then revoke, at each parse, every
DAG-level permission the DAG does not list, the ``ARS`` grants included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rpu.config import region as region_config
from rpu.config.region import RegionConfigError

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"

REPLAY_DAG_ID = "rpu_invs_replay"
OPERATOR_ROLE = "Admin"
ARS_ROLE = "ARS"
ESTABLISHMENT_ROLE = "Etablissement"
VIEWER_ROLE = "Viewer"  # FAB's built-in read-only role, kept up to date by FAB itself

ROLE_OF_KEY = {"operators": OPERATOR_ROLE, "ars": ARS_ROLE, "establishments": ESTABLISHMENT_ROLE}

# On top of Viewer: trigger the replay. FAB checks "can_create" on the DAG's runs and
# "can_edit" on the DAG itself (scenario 3 of FabAuthManager.is_authorized_dag).
ARS_GRANTS: tuple[tuple[str, str], ...] = (
    ("can_edit", f"DAG:{REPLAY_DAG_ID}"),
    ("can_create", f"DAG Run:{REPLAY_DAG_ID}"),
)
# An establishment account: its own profile and password, nothing of the concentrator.
SELF_SERVICE: tuple[tuple[str, str], ...] = (
    ("can_read", "My Profile"),
    ("can_edit", "My Profile"),
    ("can_read", "My Password"),
    ("can_edit", "My Password"),
)

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    email: str
    first_name: str
    last_name: str
    finess: str | None = None


@dataclass(frozen=True)
class AccessConfig:
    accounts: tuple[Account, ...] = ()

    def by_role(self, role: str) -> list[Account]:
        return [a for a in self.accounts if a.role == role]

    def account(self, username: str) -> Account | None:
        return next((a for a in self.accounts if a.username.lower() == username.lower()), None)


@dataclass
class SyncReport:
    created: list[str]
    updated: list[str]
    deactivated: list[str]
    new_passwords: dict[str, str]

    def lines(self) -> list[str]:
        out = [f"compte créé : {name}" for name in self.created]
        out += [f"compte mis à jour : {name}" for name in self.updated]
        out += [f"compte désactivé (plus déclaré) : {name}" for name in self.deactivated]
        return out or ["rien à changer"]


# --- the region file's [access] table (no Airflow needed) ---------------------------------------

def from_region(region: region_config.Region) -> AccessConfig:
    """The ``[access]`` table of a loaded region (``Region.extra["access"]``); empty if none."""
    return parse(region.extra.get("access") or {}, str(region.path) if region.path else "configuration")


def parse(table: Mapping, where: str = "configuration") -> AccessConfig:
    """``[access]`` → accounts; :class:`RegionConfigError` listing every problem found."""
    errors: list[str] = []
    if not isinstance(table, Mapping):
        raise RegionConfigError(f"{where} : [access] doit être une table")
    unknown = set(table) - set(ROLE_OF_KEY)
    if unknown:
        errors.append(f"[access] clé(s) inconnue(s) : {', '.join(sorted(unknown))} "
                      f"(attendu : {', '.join(ROLE_OF_KEY)})")
    accounts: list[Account] = []
    seen: dict[str, str] = {}
    for key, role in ROLE_OF_KEY.items():
        items = table.get(key) or []
        if isinstance(items, str | Mapping):
            items = [items]
        for i, item in enumerate(items, start=1):
            account = _account(item, role, f"access.{key}[{i}]", errors)
            if account is None:
                continue
            lowered = account.username.lower()
            if lowered in seen:
                errors.append(f"[access] compte {account.username!r} déclaré deux fois ({seen[lowered]} et {key})")
                continue
            seen[lowered] = key
            accounts.append(account)
    emails = [a.email.lower() for a in accounts]
    for email in sorted({e for e in emails if emails.count(e) > 1}):
        errors.append(f"[access] adresse {email} donnée à plusieurs comptes (Airflow exige une adresse par compte)")
    if errors:
        raise RegionConfigError(f"{where} : " + " ; ".join(errors))
    return AccessConfig(tuple(accounts))


def _account(item, role: str, where: str, errors: list[str]) -> Account | None:
    if isinstance(item, str):
        item = {"username": item}
    if not isinstance(item, Mapping):
        errors.append(f"{where} : attendu un nom de compte ou une table {{ username = ... }}")
        return None
    username = str(item.get("username", "")).strip()
    if not _USERNAME.match(username):
        errors.append(f"{where} : nom de compte invalide {username!r} (lettres, chiffres, . _ @ -)")
        return None
    email = str(item.get("email") or f"{username}@localhost")
    if not _EMAIL.match(email):
        errors.append(f"{where} : adresse invalide {email!r}")
    finess = item.get("finess")
    finess = str(finess).strip().upper() if finess else None
    if role == ESTABLISHMENT_ROLE and finess is None:
        pass  # the FINESS only documents whose account it is: the role grants nothing per establishment
    elif role != ESTABLISHMENT_ROLE and finess is not None:
        errors.append(f"{where} : « finess » ne s'applique qu'aux comptes d'établissement")
    default_last = {OPERATOR_ROLE: "ORU", ARS_ROLE: "ARS", ESTABLISHMENT_ROLE: f"Établissement {finess or ''}".strip()}
    return Account(username=username, role=role, email=email,
                   first_name=str(item.get("first_name") or username),
                   last_name=str(item.get("last_name") or default_last[role]), finess=finess)


def describe(config: AccessConfig) -> list[str]:
    """What each account may do, in French, for ``rpu access show``."""
    rights = {
        OPERATOR_ROLE: "administre tout (DAG, connexions, comptes)",
        ARS_ROLE: f"lit tout ce qu'un Viewer lit ; déclenche {REPLAY_DAG_ID} (et peut le suspendre) ; rien d'autre",
        ESTABLISHMENT_ROLE: "son profil seulement ; aucun DAG, aucune exécution, aucun journal",
    }
    if not config.accounts:
        return ["aucun compte déclaré dans [access]"]
    return [f"{a.username:<24} {a.role:<14} {a.email:<32} {rights[a.role]}" for a in config.accounts]


# --- Airflow (FAB) ----------------------------------------------------------------------------

def role_permissions(viewer_permissions: Iterable[tuple[str, str]]) -> dict[str, set[tuple[str, str]]]:
    """The exact permission set of each role this module owns, given the Viewer role's."""
    return {ARS_ROLE: set(viewer_permissions) | set(ARS_GRANTS), ESTABLISHMENT_ROLE: set(SELF_SERVICE)}


def sync(config: AccessConfig, passwords: Mapping[str, str] | None = None) -> SyncReport:
    """Make Airflow's FAB roles and accounts match ``config`` (see the module doc).

    Runs in a process configured for the deployment's Airflow (environment read at the first
    ``import airflow``)."""
    from airflow.configuration import conf

    manager = conf.get("core", "auth_manager")
    if manager != FAB_AUTH_MANAGER:
        raise RuntimeError(f"Airflow utilise {manager} : les droits par DAG exigent "
                           f"AIRFLOW__CORE__AUTH_MANAGER={FAB_AUTH_MANAGER} (provider apache-airflow-providers-fab)")
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    passwords = dict(passwords or {})
    report = SyncReport([], [], [], {})
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        viewer = sm.find_role(VIEWER_ROLE)
        if viewer is None:
            raise RuntimeError("rôle Viewer absent : la base d'Airflow n'est pas initialisée (airflow db migrate)")
        wanted = role_permissions((p.action.name, p.resource.name) for p in viewer.permissions)
        for role_name, permissions in wanted.items():
            _set_role_permissions(sm, role_name, permissions)
        declared = {a.username.lower() for a in config.accounts}
        for account in config.accounts:
            role = sm.find_role(account.role)
            user = sm.find_user(username=account.username)
            if user is None:
                password = passwords.get(account.username) or secrets.token_urlsafe(12)
                if account.username not in passwords:
                    report.new_passwords[account.username] = password
                sm.add_user(account.username, account.first_name, account.last_name, account.email, role, password)
                report.created.append(account.username)
                continue
            if [r.name for r in user.roles] != [account.role] or not user.active or user.email != account.email:
                user.roles = [role]
                user.active = True
                user.email = account.email
                sm.update_user(user)
                report.updated.append(account.username)
        owned = {ARS_ROLE, ESTABLISHMENT_ROLE}
        for user in sm.get_all_users():
            if (user.username.lower() not in declared and user.active
                    and any(r.name in owned for r in user.roles)):
                user.active = False
                sm.update_user(user)
                report.deactivated.append(user.username)
    return report


def _set_role_permissions(sm, role_name: str, permissions: set[tuple[str, str]]) -> None:
    role = sm.find_role(role_name) or sm.add_role(role_name)
    current = {(p.action.name, p.resource.name): p for p in role.permissions}
    for action, resource in sorted(permissions - set(current)):
        permission = sm.get_permission(action, resource) or sm.create_permission(action, resource)
        sm.add_permission_to_role(role, permission)
    for key in set(current) - permissions:
        sm.remove_permission_from_role(role, current[key])


def read_passwords(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path} : attendu un objet JSON {{\"compte\": \"mot de passe\"}}")
    return data


def write_passwords(path: Path, passwords: Mapping[str, str]) -> None:
    """Merge ``passwords`` into the JSON file, owner-only (it is handed out, then deleted)."""
    merged = {**read_passwords(path), **passwords}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(merged, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


# --- rpu access show|sync -----------------------------------------------------------------------

def register_access_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``access`` (show, sync) to the ``rpu`` sub-commands."""
    access = subparsers.add_parser("access", help="comptes Airflow et droits (section [access] du fichier de région)")
    _add_actions(access)
    return access


def _add_actions(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="access_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="les comptes déclarés et ce que chacun peut faire (sans Airflow)")
    show.add_argument("--region", help="fichier de configuration de la région (défaut : RPU_REGION_CONFIG)")
    show.set_defaults(func=cmd_show)
    sync_parser = actions.add_parser(
        "sync", help="créer/mettre à jour rôles et comptes dans Airflow (auth manager FAB ; environnement d'Airflow)")
    sync_parser.add_argument("--region", help="fichier de configuration de la région (défaut : RPU_REGION_CONFIG)")
    sync_parser.add_argument("--passwords", type=Path,
                             help="JSON {compte: mot de passe} : mots de passe des nouveaux comptes ; ceux tirés au "
                                  "hasard y sont ajoutés (fichier lisible du seul propriétaire)")
    sync_parser.set_defaults(func=cmd_sync)


def cmd_show(args) -> int:
    try:
        config = from_region(region_config.load(args.region))
    except RegionConfigError as error:
        print(f"rpu: {error}", file=sys.stderr)
        return 1
    print("\n".join(describe(config)))
    return 0


def cmd_sync(args) -> int:
    try:
        config = from_region(region_config.load(args.region))
        passwords = read_passwords(args.passwords)
    except (RegionConfigError, ValueError) as error:
        print(f"rpu: {error}", file=sys.stderr)
        return 1
    try:
        report = sync(config, passwords)
    except RuntimeError as error:
        print(f"rpu: {error}", file=sys.stderr)
        return 1
    if report.new_passwords:
        if args.passwords is None:
            for username, password in report.new_passwords.items():
                print(f"mot de passe de {username} : {password}")
        else:
            write_passwords(args.passwords, report.new_passwords)
            print(f"mots de passe des nouveaux comptes : {args.passwords}")
    print("\n".join(report.lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpu.airflow.access", description="comptes Airflow et droits")
    _add_actions(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
