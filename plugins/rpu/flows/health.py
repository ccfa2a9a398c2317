"""Watching the watcher: is the concentrator itself well? (``rpu health``, the heartbeat.)

Every alert of the concentrator is sent by the concentrator: if its scheduler stops at 02:00,
nobody is told. Two safeguards, both without Airflow's own database (tasks never read it):

- each scheduled DAG ends with a ``heartbeat`` task that records its successful run in
  ``flow_run`` and, when the region sets ``[monitoring] heartbeat_url``, pings it (HTTP GET,
  short timeout, never failing the run), so that a dead-man's-switch service (healthchecks.io
  style, self-hosted) alerts when the pings stop;
- ``rpu health [--json]`` (the compose healthcheck, Nagios/Zabbix/Centreon) checks each flow's
  last successful run against its schedule, files waiting in ``depot/``, held files, sends
  pending or failed, and the free space of the exports volume. Exit code: 0 healthy,
  1 degraded, 2 down.

No Airflow here (``rpu.airflow.feedback_tasks`` is the glue).
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}
LABELS = {HEALTHY: "OK", DEGRADED: "DÉGRADÉ", DOWN: "HORS SERVICE"}
_ORDER = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}


@dataclass(frozen=True)
class Flow:
    """A scheduled DAG and how old its last success may be before it is late (and down)."""

    dag_id: str
    late_after: timedelta
    down_after: timedelta | None = None  # None: never "down" on its own


# The schedules of dags/ plus a margin: every 15 min (a run is skipped when nothing is new, and
# still succeeds), daily at 05:30 / 06:00 / 07:00, 10:00 waiting for the absence cut-off.
FLOWS = (
    Flow("rpu_ingest", timedelta(hours=1), down_after=timedelta(hours=3)),
    Flow("rpu_invs_daily", timedelta(hours=26)),
    Flow("rpu_ars_daily", timedelta(hours=26)),
    Flow("rpu_atih_monthly", timedelta(hours=26)),
    Flow("rpu_absence_monitor", timedelta(hours=30)),
    Flow("rpu_establishment_reports", timedelta(hours=26)),
)
DEPOT_WAIT = timedelta(hours=1)
SEND_PENDING = timedelta(hours=2)  # a send built and not yet delivered for longer than this
DISK_DEGRADED, DISK_DOWN = 0.10, 0.02  # free share of the exports volume
HEARTBEAT_TIMEOUT = 5.0  # seconds


@dataclass
class Check:
    name: str
    state: str
    detail: str  # French, for the operator
    data: dict = field(default_factory=dict)


@dataclass
class Health:
    checked_at: datetime
    checks: list[Check]

    @property
    def state(self) -> str:
        return max((c.state for c in self.checks), key=_ORDER.__getitem__, default=HEALTHY)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    def as_json(self) -> dict:
        return {"state": self.state, "exit_code": self.exit_code, "checked_at": self.checked_at.isoformat(),
                "checks": [asdict(c) for c in self.checks]}

    def lines(self) -> list[str]:
        out = [f"Concentrateur RPU : {LABELS[self.state]} ({self.state}, code {self.exit_code})"]
        out += [f"  {LABELS[c.state]:<12} {c.name} : {c.detail}" for c in self.checks]
        return out


# --- recording runs and the heartbeat ------------------------------------------------------------

def record_success(conn: psycopg.Connection, flow: str, run_id: str | None = None,
                   when: datetime | None = None) -> None:
    """A run of ``flow`` ended well (called by its final task)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO flow_run (flow, last_success_at, run_id) VALUES (%s, coalesce(%s, now()), %s)"
            " ON CONFLICT (flow) DO UPDATE SET last_success_at = EXCLUDED.last_success_at, run_id = EXCLUDED.run_id",
            (flow, when, run_id))


def record_heartbeat(conn: psycopg.Connection, flow: str, error: str | None) -> None:
    with conn.transaction():
        conn.execute("UPDATE flow_run SET heartbeat_at = CASE WHEN %s::text IS NULL THEN now() ELSE heartbeat_at END,"
                     " heartbeat_error = %s WHERE flow = %s", (error, error, flow))


def heartbeat_url(region) -> str | None:
    """``[monitoring] heartbeat_url`` of the region file, if any."""
    monitoring = (region.extra.get("monitoring") or {}) if region is not None else {}
    url = str(monitoring.get("heartbeat_url") or "").strip()
    return url or None


def ping(url: str, timeout: float = HEARTBEAT_TIMEOUT) -> str | None:
    """HTTP GET ``url``; returns None when it answered 2xx/3xx, else the failure (French). Never
    raises: a monitoring service that is down must not fail the run it watches."""
    if not url.startswith(("http://", "https://")):
        return f"adresse de heartbeat non HTTP(S) : {url}"
    try:
        request = urllib.request.Request(url, method="GET", headers={"User-Agent": "concentrateur-rpu"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read(1024)
            return None
    except urllib.error.HTTPError as error:
        return f"le service de surveillance a répondu HTTP {error.code}"
    except Exception as error:  # timeout, refused, DNS...: logged, never raised
        return f"service de surveillance injoignable : {type(error).__name__}: {error}"


# --- the checks -----------------------------------------------------------------------------------

def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"il y a {minutes} min"
    hours = minutes // 60
    return f"il y a {hours} h" if hours < 48 else f"il y a {hours // 24} j"


def check_flows(conn: psycopg.Connection, now: datetime) -> list[Check]:
    with conn.transaction():
        rows = {flow: (at, run_id, beat_error) for flow, at, run_id, beat_error in conn.execute(
            "SELECT flow, last_success_at, run_id, heartbeat_error FROM flow_run")}
    checks = []
    for flow in FLOWS:
        at, run_id, beat_error = rows.get(flow.dag_id, (None, None, None))
        data = {"last_success_at": at.isoformat() if at else None, "run_id": run_id,
                "late_after_hours": flow.late_after.total_seconds() / 3600, "heartbeat_error": beat_error}
        if at is None:
            checks.append(Check(f"flux {flow.dag_id}", DEGRADED,
                                "aucune exécution réussie enregistrée (DAG en pause, jamais lancé ?)", data))
            continue
        age = now - at
        data["late"] = age > flow.late_after
        if flow.down_after is not None and age > flow.down_after:
            state, detail = DOWN, f"dernière exécution réussie {_ago(age)} : le flux est arrêté"
        elif age > flow.late_after:
            state, detail = DEGRADED, f"en retard : dernière exécution réussie {_ago(age)}"
        else:
            state, detail = HEALTHY, f"dernière exécution réussie {_ago(age)}"
        if beat_error:
            detail += f" (dernier heartbeat en échec : {beat_error})"
        checks.append(Check(f"flux {flow.dag_id}", state, detail, data))
    return checks


def check_depot(conn: psycopg.Connection, now: datetime) -> Check:
    """Files of the last inbox listing (by rpu_ingest) unchanged for more than an hour."""
    limit = int((now - DEPOT_WAIT).timestamp())
    with conn.transaction():
        rows = conn.execute(
            "SELECT path FROM inbox_listing WHERE mtime < %s AND path !~* '[.](part|tmp)$' ORDER BY path",
            (limit,)).fetchall()
    paths = [r[0] for r in rows]
    if not paths:
        return Check("fichiers en attente dans depot/", HEALTHY, "aucun fichier en attente depuis plus d'une heure")
    return Check("fichiers en attente dans depot/", DEGRADED,
                 f"{len(paths)} fichier(s) en attente depuis plus d'une heure : " + ", ".join(paths[:5])
                 + (" …" if len(paths) > 5 else ""), {"files": paths})


def check_held(conn: psycopg.Connection) -> Check:
    with conn.transaction():
        held = conn.execute("SELECT count(*) FROM received_file WHERE status = 'held'").fetchone()[0]
    if not held:
        return Check("fichiers retenus", HEALTHY, "aucun fichier retenu")
    return Check("fichiers retenus", DEGRADED, f"{held} fichier(s) retenu(s) en attente d'une décision de l'ORU",
                 {"held": held})


def check_sends(conn: psycopg.Connection, now: datetime) -> Check:
    with conn.transaction():
        rows = conn.execute(
            "SELECT destination, status, count(*) FROM send WHERE status = 'failed'"
            " OR (status = 'built' AND created_at < %s) GROUP BY destination, status ORDER BY 1, 2",
            (now - SEND_PENDING,)).fetchall()
    if not rows:
        return Check("envois", HEALTHY, "aucun envoi en échec ni en attente depuis plus de 2 h")
    labels = {"failed": "en échec", "built": "en attente depuis plus de 2 h"}
    return Check("envois", DEGRADED, ", ".join(f"{n} vers {d} {labels[s]}" for d, s, n in rows),
                 {"sends": [{"destination": d, "status": s, "count": n} for d, s, n in rows]})


def check_disk(path: Path | None) -> Check:
    if path is None:
        return Check("espace disque des exports", DEGRADED, "dossier des exports inconnu (configuration de région ?)")
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    free = usage.free / usage.total if usage.total else 0.0
    data = {"path": str(path), "free_bytes": usage.free, "total_bytes": usage.total, "free_share": round(free, 4)}
    detail = f"{free * 100:.1f} % libres ({usage.free / 1e9:.1f} Go) sur {path}"
    state = DOWN if free < DISK_DOWN else DEGRADED if free < DISK_DEGRADED else HEALTHY
    return Check("espace disque des exports", state, detail, data)


def check(database_url: str | None, exports_dir: Path | None, *, now: datetime | None = None,
          connect_timeout: int = 5) -> Health:
    """Every check; a database that does not answer is ``down`` (nothing else can be known)."""
    now = now or datetime.now(UTC)
    checks = [check_disk(exports_dir)]
    if not database_url:
        checks.insert(0, Check("base régionale", DOWN, "aucune base : définissez RPU_DATABASE_URL ou --database"))
        return Health(now, checks)
    try:
        with psycopg.connect(database_url, connect_timeout=connect_timeout, autocommit=True) as conn:
            checks = [Check("base régionale", HEALTHY, "répond"), *check_flows(conn, now), check_depot(conn, now),
                      check_held(conn), check_sends(conn, now), *checks]
    except psycopg.errors.UndefinedTable:
        checks.insert(0, Check("base régionale", DOWN, "schéma non à jour : lancez `rpu db migrate`"))
    except psycopg.Error as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        checks.insert(0, Check("base régionale", DOWN, f"injoignable : {first}"))
    return Health(now, checks)
