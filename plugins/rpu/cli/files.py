"""``rpu files list|show|apply|discard``: the intake journal, and the ORU's decision on a held file.

A file that would empty a day the regional database holds, or remove more than half of what it
holds for its days, is held (``held``): nothing applied. The ORU checks with the establishment,
then either applies it deliberately (a unit really closed: ``rpu files apply ID --reason``) or
sets it aside (``rpu files discard ID --reason``). Both are journaled: who, when, why.

Exit codes as the rest of ``rpu``: 0 success, 1 refused (not a held file), 2 usage error.
"""

from __future__ import annotations

import getpass
import json
import os
import sys

EXIT_OK, EXIT_REFUSED = 0, 1
STATUSES = ("loaded", "duplicate", "superseded", "held", "rejected", "revoked", "loading")
STATUS_FR = {"loaded": "chargé", "duplicate": "doublon", "superseded": "dépassé", "held": "en attente",
             "rejected": "rejeté", "revoked": "révoqué", "loading": "en cours"}


def _default_author() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "inconnu"


def register_file_commands(subparsers) -> None:
    files = subparsers.add_parser("files", help="journal des fichiers reçus ; appliquer ou écarter un fichier en attente")
    actions = files.add_subparsers(dest="files_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="les derniers fichiers reçus (par statut, par établissement)")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--finess")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="un fichier : son verdict et, jour par jour, ce qu'il a apporté")
    show.add_argument("id", type=int, metavar="N")
    show.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
    show.set_defaults(func=cmd_show)

    for action, text in (("apply", "appliquer délibérément un fichier en attente"),
                         ("discard", "écarter définitivement un fichier en attente"),
                         ("revoke", "révoquer un fichier appliqué par erreur (chaque jour revient au fichier suivant)")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("id", type=int, metavar="N", help="numéro du fichier au journal")
        parser.add_argument("--reason", required=True, help="pourquoi (inscrit au journal)")
        parser.add_argument("--author", default=_default_author(), help="auteur inscrit au journal (défaut : $USER)")
        parser.add_argument("--database", help="URL PostgreSQL (défaut : RPU_DATABASE_URL)")
        parser.set_defaults(func={"apply": cmd_apply, "discard": cmd_discard, "revoke": cmd_revoke}[action])


def cmd_list(args) -> int:
    from rpu.store import db as store

    sql = ("SELECT id, received_at, sender, file_name, status, finess, ordre, period_start, period_end, records,"
           " loaded_records, reason FROM received_file WHERE true")
    params: list = []
    if args.status:
        sql += " AND status = %s"
        params.append(args.status)
    if args.finess:
        sql += " AND finess = %s"
        params.append(args.finess)
    sql += " ORDER BY id DESC LIMIT %s"
    params.append(args.limit)
    with store.connect(args.database) as conn:
        rows = conn.execute(sql, params).fetchall()
    if args.json:
        keys = ("id", "received_at", "sender", "file_name", "status", "finess", "ordre", "period_start", "period_end",
                "records", "loaded_records", "reason")
        print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], default=str, ensure_ascii=False, indent=1))
        return EXIT_OK
    if not rows:
        print("Aucun fichier.")
    for (file_id, received_at, sender, name, status, finess, ordre, start, end, records, loaded, reason) in rows:
        period = f"{start:%d/%m/%Y}–{end:%d/%m/%Y}" if start and end else "?"
        print(f"n°{file_id}  {received_at:%d/%m/%Y %H:%M}  {sender or '?'}  {name!r}  {STATUS_FR.get(status, status)}"
              f"  {finess or '?'}/{ordre if ordre is not None else '?'}  {period}  {loaded}/{records} passages")
        if reason:
            print(f"    {reason}")
    return EXIT_OK


def cmd_show(args) -> int:
    from rpu.store import db as store

    with store.connect(args.database) as conn:
        row = conn.execute("SELECT file_name, status, reason, decided_by, decided_reason, decided_at FROM received_file"
                           " WHERE id = %s", (args.id,)).fetchone()
        if row is None:
            print(f"rpu: aucun fichier n°{args.id} au journal.", file=sys.stderr)
            return EXIT_REFUSED
        days = conn.execute(
            "SELECT d.day, d.in_period, d.visits, d.superseded_by, f.file_name FROM file_day d"
            " LEFT JOIN received_file f ON f.id = d.superseded_by WHERE d.received_file_id = %s ORDER BY d.day",
            (args.id,)).fetchall()
        held = conn.execute("SELECT days FROM held_file WHERE received_file_id = %s", (args.id,)).fetchone()
    name, status, reason, decided_by, decided_reason, decided_at = row
    print(f"n°{args.id} {name!r} : {STATUS_FR.get(status, status)}")
    if reason:
        print(f"  {reason}")
    if decided_by:
        print(f"  Décision de {decided_by} le {decided_at:%d/%m/%Y %H:%M} : {decided_reason}")
    for day, in_period, visits, superseded_by, by_name in days:
        where = "" if in_period else " (hors période)"
        source = "fourni par ce fichier" if superseded_by is None else f"fourni par le n°{superseded_by} {by_name!r}"
        print(f"  {day:%d/%m/%Y}{where} : {visits} passage(s) dans ce fichier, {source}")
    if held:
        for day in held[0]:
            print(f"  {day['day']} : {day['held']} passage(s) détenu(s), {day['brought']} dans ce fichier")
    return EXIT_OK


def _decide(args, action) -> int:
    from rpu.store import db as store
    from rpu.store.loader import NotHeld

    with store.connect(args.database) as conn:
        try:
            outcome = action(conn, args.id, by=args.author, reason=args.reason)
        except NotHeld as refusal:
            print(f"rpu: {refusal}", file=sys.stderr)
            return EXIT_REFUSED
        conn.commit()
    return outcome


def cmd_apply(args) -> int:
    from rpu.store.loader import apply_held

    def apply(conn, file_id, *, by, reason) -> int:
        result = apply_held(conn, file_id, by=by, reason=reason)
        print(f"n°{file_id} {result.file!r} : {STATUS_FR[result.status]}, {result.loaded_records} passages chargés,"
              f" {result.replaced_records} remplacés (décision de {by} : {reason})")
        if result.reason:
            print(f"  {result.reason}")
        return EXIT_OK

    return _decide(args, apply)


def cmd_discard(args) -> int:
    from rpu.store.loader import discard_held

    def discard(conn, file_id, *, by, reason) -> int:
        discard_held(conn, file_id, by=by, reason=reason)
        print(f"n°{file_id} écarté (décision de {by} : {reason})")
        return EXIT_OK

    return _decide(args, discard)


def cmd_revoke(args) -> int:
    from rpu.store.loader import day_ranges, revoke_file

    def revoke(conn, file_id, *, by, reason) -> int:
        revocation = revoke_file(conn, file_id, by=by, reason=reason)
        print(f"n°{file_id} révoqué (décision de {by} : {reason}) ; jours qu'il fournissait : "
              f"{day_ranges(revocation.days) or 'aucun'}")
        for day, source in sorted(revocation.restored.items()):
            print(f"  {day:%d/%m/%Y} : de nouveau fourni par le fichier n°{source}")
        if revocation.emptied:
            print(f"  Sans autre fichier : {day_ranges(revocation.emptied)} (aucun passage détenu ces jours-là).")
        if revocation.incomplete:
            print(f"  À redemander à l'établissement (passages remplacés déjà purgés) : "
                  f"{day_ranges(revocation.incomplete)}.")
        if revocation.days:
            print("  Si ces jours ont déjà été transmis à Santé publique France, renvoyez-les : DAG rpu_invs_replay.")
        return EXIT_OK

    return _decide(args, revoke)
