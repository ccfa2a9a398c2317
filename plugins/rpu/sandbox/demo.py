"""The one-command local concentrator: ``rpu demo start | stop | status`` (``make run`` / ``make stop``).

``start`` brings up, detached, each in its own process group, with their PIDs in
``<state>/pids.json`` (``<state>`` is ``var/demo/`` in the repository, or ``$RPU_DEMO_DIR``):

- PostgreSQL: the machine's on 127.0.0.1:5432 when it answers, else a private one
  (``pgserver``, data in ``<state>/pg``); databases ``rpu_demo`` (the regional database,
  migrated) and ``rpu_demo_airflow`` (Airflow's own);
- an SFTP server (``python -m rpu.sandbox.demo sftp``) whose root is ``<state>/sftp``: the establishments'
  folders under ``etablissements/<FINESS>/``, the destinations' under ``spf/``, ``ars/``,
  ``atih/``;
- an SMTP sink (``python -m rpu.sandbox.demo smtp``) writing every message as an ``.eml`` file in
  ``<state>/mailbox/``;
- Airflow: scheduler, dag-processor and API server (no triggerer: no task of the package
  defers, and it would cost 170 MiB for nothing), with LocalExecutor, the
  metadata in PostgreSQL and the **FAB auth manager** (roles from the region file's
  ``[access]`` table, see :mod:`rpu.airflow.access`). This is what ``airflow standalone`` starts, but
  standalone forces the SimpleAuthManager, which has no per-DAG rights;
- on the first start only, a demo region (``<state>/region.toml``, 10 establishments) and its
  data: ten days of history in the regional database, last night's files in the SFTP depots
  (one establishment silent for 9 days, one sending a broken file, one with an anomaly), then
  a one-shot ``scenario`` process that triggers ``rpu_ingest``, then ``rpu_absence_monitor``
  (the ARS alert e-mail), ``rpu_ars_daily`` and ``rpu_invs_daily`` through the REST API.

Running ``start`` again starts only what is not running. ``stop`` ends every recorded process
group (SIGTERM, then SIGKILL) and the private PostgreSQL if the demo started it.

The parts, one module each: :mod:`rpu.sandbox.demo_state` (the state directory),
:mod:`rpu.sandbox.demo_services` (PostgreSQL, Redis, SFTP, SMTP), :mod:`rpu.sandbox.demo_region`
(the region and its data), :mod:`rpu.sandbox.airflow_site` (Airflow's processes, also what
``tests/test_e2e_airflow.py`` runs), :mod:`rpu.sandbox.demo_scenario` (the first night, through
:mod:`rpu.sandbox.airflow_api`), :mod:`rpu.sandbox.processes` (detached process groups).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rpu.sandbox.airflow_site import AIRFLOW_COMPONENTS, DEMO_COMPONENTS, JWT_SECRET_BYTES, AirflowSite
from rpu.sandbox.demo_region import (
    ARS_DIR,
    ATIH_DIR,
    INBOX_DIR,
    INVS_DIR,
    SILENT_DAYS,
    demo_establishments,
    demo_region_toml,
    seed,
    write_demo_codegeo,
)
from rpu.sandbox.demo_scenario import scenario
from rpu.sandbox.demo_services import (
    ensure_database,
    postgres_admin_url,
    serve_sftp,
    serve_smtp,
    site_for,
    start_redis,
)
from rpu.sandbox.demo_state import REPO_ROOT, TIMEZONE, DemoState, database_names, load_or_create_config
from rpu.sandbox.processes import port_free, spawn, stop_groups, stop_pgserver, wait_for_port


def start(state: DemoState | None = None, out=print, executor: str | None = None) -> int:
    """``executor``: "local" (LocalExecutor) or "celery" (two Celery workers and a Redis
    broker); None keeps the one of the first start (local by default)."""
    state = state or DemoState()
    began = time.monotonic()
    with state.locked():
        for directory in (state.logs, state.mailbox, state.sftp_root, state.airflow_home):
            directory.mkdir(parents=True, exist_ok=True)
        for sub in (INBOX_DIR, INVS_DIR, ARS_DIR, ATIH_DIR):
            (state.sftp_root / sub).mkdir(exist_ok=True)
        config = load_or_create_config(state)
        running = {name: p for name, p in state.processes().items() if p.alive()}
        for name in set(state.processes()) - set(running):
            state.record(forget=name)
        if len(config["secrets"]["jwt"]) < 64 and not set(running) & set(AIRFLOW_COMPONENTS):
            # A demo made before the key was long enough: a new one while no component uses it.
            config["secrets"]["jwt"] = secrets.token_urlsafe(JWT_SECRET_BYTES)
            state.write(state.config_path, config)

        def say(text: str) -> None:
            out(f"[{time.monotonic() - began:5.1f} s] {text}")

        if executor and executor != config.get("executor", "local"):
            if any(name in running for name in (*AIRFLOW_COMPONENTS, "redis")):
                raise RuntimeError(f"la démo tourne avec l'exécuteur {config.get('executor', 'local')} : "
                                   "arrêtez-la d'abord (make stop), puis relancez")
            config["executor"] = executor
            state.write(state.config_path, config)
        admin_url = postgres_admin_url(state, config, say)
        if config.get("executor") == "celery":
            start_redis(state, config, running, {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW",
                                                                                                     "RPU_"))}, say)
        site = site_for(state, config, admin_url)
        if not state.region_path.exists():
            codegeo = state.root / "codegeo.csv"
            write_demo_codegeo(codegeo)
            state.region_path.write_text(demo_region_toml(demo_establishments(), exports_dir=state.root / "exports",
                                                          codegeo_csv=codegeo, airflow_url=site.url), encoding="utf-8")
        python = sys.executable
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RPU_"))},
               "PYTHONPATH": str(REPO_ROOT / "plugins")}
        # SFTP and SMTP: separate long-lived processes.
        for name, argv, port in (
            ("sftp", [python, "-m", "rpu.sandbox.demo", "sftp", "--state", str(state.root)], config["ports"]["sftp"]),
            ("smtp", [python, "-m", "rpu.sandbox.demo", "smtp", "--mailbox", str(state.mailbox), "--port",
                      str(config["ports"]["smtp"])], config["ports"]["smtp"]),
        ):
            if name in running:
                say(f"{name} : déjà en marche (PID {running[name].pid})")
                continue
            if not port_free(port):
                raise RuntimeError(f"le port {port} ({name}) est pris par un autre programme : "
                                   f"arrêtez-le ou effacez {state.root} pour repartir de zéro")
            process, _ = spawn(name, argv, env, state.logs / f"{name}.log")
            state.record(process)
            wait_for_port(port, 20, process)
            say(f"{name} : démarré sur 127.0.0.1:{port} (PID {process.pid})")

        # Data (first start only) while Airflow gets ready: different databases.
        seeded: dict[str, Any] = {}

        def seeding() -> None:
            try:
                seeded["done"] = seed(ensure_database(admin_url, database_names(state)[0]), state.region_path,
                                      state.sftp_root, state.root / "work", log=say)
            except BaseException as error:  # reported below
                seeded["error"] = error

        seeder = threading.Thread(target=seeding, name="demo-seed")
        seeder.start()
        missing = tuple(c for c in site.components if c not in running)
        if missing:
            if len(missing) == len(site.components) or not site.healthy():
                site.migrate(state.logs)
                say("Airflow : base migrée")
                site.sync_access(state.logs, state.passwords_path)
                say("Airflow : rôles et comptes à jour (section [access] de la région)")
            if not port_free(site.port) and "api-server" in missing:
                raise RuntimeError(f"le port {site.port} (interface Airflow) est pris par un autre programme")
            for process, _popen in site.start(state.logs, missing).values():
                state.record(process)
            say(f"Airflow : {', '.join(missing)} démarrés")
        else:
            say("Airflow : déjà en marche")
        processes = {name: p for name, p in state.processes().items() if name in site.components}
        site.wait_healthy(processes, timeout=240)
        say(f"Airflow : prêt sur {site.url}")
        seeder.join()
        if "error" in seeded:
            raise seeded["error"]
        if seeded.get("done"):
            say("données de démonstration : historique chargé, fichiers de la nuit déposés")
        scenario_running = "scenario" in running
        first_night = bool(seeded.get("done") or not config.get("dags_released"))
        if first_night and not scenario_running:
            process, _ = spawn("scenario", [python, "-m", "rpu.sandbox.demo", "scenario", "--state", str(state.root)],
                               env, state.logs / "scenario.log")
            state.record(process)
        out("")
        out(summary(state, config, site, first_night=first_night or scenario_running))
        out(f"(démarrage : {time.monotonic() - began:.0f} s)")
    return 0


def summary(state: DemoState, config: dict, site: AirflowSite, *, first_night: bool = False) -> str:
    """What ``make run`` prints: where everything is; on the first start only, what the first
    night will show; and a replay to try, dry run first (as the README and the DAG's doc say)."""
    passwords = state.read(state.passwords_path)
    establishments = demo_establishments()
    live = next(e for e in establishments if e["status"] == "live" and not e["role"])
    silent = next(e for e in establishments if e["role"] == "silent")
    today = datetime.now(ZoneInfo(TIMEZONE)).date()
    lines = [
        "Concentrateur RPU de démonstration",
        f"  Interface Airflow : {site.url} (en français si votre navigateur l'est)",
        f"    opérateur (ORU)  : admin / {passwords.get('admin', '?')}",
        f"    ARS              : ars / {passwords.get('ars', '?')} (lit tout, ne déclenche que rpu_invs_replay)",
        f"    mots de passe    : {state.passwords_path}",
        f"  Boîte aux lettres (chaque e-mail en .eml) : {state.mailbox}",
        f"  SFTP : sftp -P {config['ports']['sftp']} {config['sftp']['username']}@127.0.0.1"
        f" (mot de passe dans {state.config_path}) ; dépôts : /{INBOX_DIR}/<FINESS>/depot/",
        f"  Journaux : {state.logs} ; région : {state.region_path}",
        (f"  Exécuteur : Celery, {', '.join(site.celery.names)} (file {site.celery.queue}, {site.celery.broker_url})"
         if site.celery else "  Exécuteur : LocalExecutor (make run-celery : deux workers Celery)"),
        f"  Airflow : {site.parallelism} tâches à la fois ({os.cpu_count()} cœurs, {len(establishments)} établissements)",
    ]
    if first_night:
        lines.append(
            "  Dans les minutes qui viennent, une exécution de chaque DAG : rpu_ingest charge la nuit (un fichier"
            f" rejeté, avec son rapport dans {INBOX_DIR}/<FINESS>/rejetes/), rpu_absence_monitor envoie l'alerte ARS"
            f" ({silent['name']}, FINESS {silent['finess']}, sans fichier depuis {SILENT_DAYS} jours),"
            " rpu_ars_daily l'export de l'ARS, rpu_invs_daily l'envoi à Santé publique France.")
    lines += [
        f"  Une reprise à essayer (connecté en ars) : rpu_invs_replay, bouton Déclencher, FINESS géographique"
        f" {live['finess']}, du {today - timedelta(days=7):%d/%m/%Y} au {today - timedelta(days=1):%d/%m/%Y},"
        " un motif, « Simulation » laissée cochée (nombre de passages par jour, rien n'est envoyé) ;"
        " puis de nouveau, décochée, pour l'envoi réel.",
        "  Arrêter : make stop (python -m rpu demo stop) ; état : python -m rpu demo status",
    ]
    return "\n".join(lines)


def stop(state: DemoState | None = None, out=print, purge: bool = False) -> int:
    """Stop every recorded process group (and the private PostgreSQL if the demo started it).
    ``purge``: then also drop the demo's databases and delete the state directory."""
    state = state or DemoState()
    if not state.root.exists():
        out("démo : rien à arrêter")
        return 0
    with state.locked():
        processes = state.processes()
        # Airflow and the scenario first (they use SFTP, SMTP and PostgreSQL), then the services.
        services = ("sftp", "smtp", "redis")
        first = [p for name, p in processes.items() if name not in services]
        then = [p for name, p in processes.items() if name in services]
        for batch in (first, then):
            for name in stop_groups(batch):
                out(f"{name} : arrêté (groupe {processes[name].pgid})")
            for process in batch:
                state.record(forget=process.name)
        pg = state.read(state.pids_path).get("pgserver")
        if pg:
            stop_pgserver(Path(pg["data_dir"]))
            state.record(forget_pgserver=True)
            out("PostgreSQL privé : arrêté")
        if purge:
            _purge(state, out)
            return 0
    out("démo arrêtée (les données restent dans " + str(state.root) + ")")
    return 0


def _purge(state: DemoState, out) -> None:
    from rpu.sandbox.local_services import LOCAL_POSTGRES_URL, drop_database, postgres_accepts

    config = state.read(state.config_path)
    if config.get("postgres") == "local" and postgres_accepts(LOCAL_POSTGRES_URL):
        for name in database_names(state):
            drop_database(LOCAL_POSTGRES_URL, name)
        out(f"bases {', '.join(database_names(state))} supprimées")
    shutil.rmtree(state.root, ignore_errors=True)
    out(f"démo effacée ({state.root})")


def status(state: DemoState | None = None, out=print) -> int:
    state = state or DemoState()
    processes = state.processes()
    config = state.read(state.config_path)
    if not processes:
        out("démo : arrêtée")
        return 3
    all_up = True
    for name, process in processes.items():
        up = process.alive()
        if name != "scenario":
            all_up &= up
        label = "en marche" if up else ("terminé" if name == "scenario" else "ARRÊTÉ")
        out(f"{name:<14} {label:<10} PID {process.pid}  journal {process.log}")
    if config:
        port = config["ports"]["airflow"]
        healthy = AirflowSite(state.airflow_home, "", port, {}, state.region_path,
                              airflow_components=DEMO_COMPONENTS).healthy()
        all_up &= healthy
        out(f"Airflow : http://localhost:{port} ({'prêt' if healthy else 'pas prêt'}) ; boîte aux lettres : "
            f"{state.mailbox} ({len(list(state.mailbox.glob('*.eml')))} message(s))")
    return 0 if all_up else 1


def register_demo_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``demo`` (start, stop, status) to the ``rpu`` sub-commands."""
    demo = subparsers.add_parser("demo", help="une région de démonstration sur cette machine (make run / make stop)")
    actions = demo.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("start", cmd_start, "démarrer (ou compléter) la démo : PostgreSQL, SFTP, SMTP, Airflow, données"),
        ("stop", cmd_stop, "arrêter tous les processus de la démo (les données restent)"),
        ("status", cmd_status, "ce qui tourne"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--state", type=Path, help="dossier d'état (défaut : $RPU_DEMO_DIR ou var/demo)")
        if name == "stop":
            action.add_argument("--purge", action="store_true",
                                help="effacer aussi les bases et le dossier d'état (repartir de zéro)")
        if name == "start":
            action.add_argument("--executor", choices=("local", "celery"),
                                help="local : LocalExecutor ; celery : deux workers Celery et Redis (make run-celery). "
                                     "Défaut : celui du premier démarrage")
        action.set_defaults(func=func)
    return demo


def cmd_start(args) -> int:
    state = DemoState(args.state)
    try:
        return start(state, executor=getattr(args, "executor", None))
    except (RuntimeError, TimeoutError) as error:
        print(f"rpu demo: {error}", file=sys.stderr)
        print("rpu demo: ce qui a démarré reste en marche ; « rpu demo stop » l'arrête.", file=sys.stderr)
        return 1


def cmd_stop(args) -> int:
    return stop(DemoState(args.state), purge=getattr(args, "purge", False))


def cmd_status(args) -> int:
    return status(DemoState(args.state))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpu.sandbox.demo")
    commands = parser.add_subparsers(dest="command", required=True)
    register_demo_commands(commands)
    for name, func, text in (("start", cmd_start, "= demo start"), ("stop", cmd_stop, "= demo stop"),
                             ("status", cmd_status, "= demo status")):
        action = commands.add_parser(name, help=text)
        action.add_argument("--state", type=Path)
        if name == "stop":
            action.add_argument("--purge", action="store_true")
        if name == "start":
            action.add_argument("--executor", choices=("local", "celery"))
        action.set_defaults(func=func)
    sftp = commands.add_parser("sftp", help="(interne) le serveur SFTP de la démo, jusqu'à SIGTERM")
    sftp.add_argument("--state", type=Path, required=True)
    sftp.set_defaults(func=lambda a: serve_sftp(a.state))
    smtp = commands.add_parser("smtp", help="(interne) le puits SMTP de la démo, jusqu'à SIGTERM")
    smtp.add_argument("--mailbox", type=Path, required=True)
    smtp.add_argument("--port", type=int, required=True)
    smtp.set_defaults(func=lambda a: serve_smtp(a.mailbox, a.port))
    run = commands.add_parser("scenario", help="(interne) déclenche les DAG de la première nuit")
    run.add_argument("--state", type=Path, required=True)
    run.set_defaults(func=lambda a: scenario(a.state))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
