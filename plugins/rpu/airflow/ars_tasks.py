"""Task bodies of ``rpu_ars_daily``: Airflow glue only (context, connections, logs); the work is
done by ``rpu.flows.ars_export``."""

from __future__ import annotations

import logging
from datetime import date, datetime
from zoneinfo import ZoneInfo

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowSkipException

from rpu.airflow import glue
from rpu.flows import ars_export
from rpu.store import sends

log = logging.getLogger(__name__)


def export_day(params: dict, logical_date: datetime | None, run_after: datetime | None, timezone: str) -> date:
    """The export day J: the ``date`` param of a manual run, else the run's date in the region's
    time zone (a manual run has no logical date: its ``run_after`` is used)."""
    if params.get("date"):
        return date.fromisoformat(str(params["date"]))
    moment = logical_date or run_after or datetime.now(ZoneInfo(timezone))
    return moment.astimezone(ZoneInfo(timezone)).date()


def export_task() -> dict:
    context = get_current_context()
    params = context.get("params") or {}
    region = glue.region()
    day = export_day(params, context.get("logical_date"), getattr(context.get("dag_run"), "run_after", None),
                     region.timezone)
    with glue.database() as conn:
        conn.autocommit = True
        outcome = ars_export.export_daily(conn, region, day, force=bool(params.get("force")))
    verb = "construit" if outcome.built else "déjà construit, envoi seulement"
    log.info("Export ARS du %s (%s) : %s RPU, %s fichier(s).", day.strftime("%d/%m/%Y"), verb,
             outcome.visit_count, len(outcome.sends))
    for send in outcome.sends:
        log.info("  envoi n°%s : %s (%s octets, %s)", send.id, send.file_name, send.size_bytes, send.status)
    return outcome.as_dict()


def deliver_task() -> dict:
    region = glue.region()
    with glue.database() as conn:
        conn.autocommit = True
        try:  # the SFTP server down: every pending send journaled failed, then the task fails
            results = ars_export.deliver(conn, lambda: glue.sftp_session(glue.ARS_CONN_ID),
                                         glue.sftp_base_path(glue.ARS_CONN_ID), server=glue.ARS_CONN_ID)
        finally:
            purged = sends.purge_local_copies(conn, ars_export.DESTINATION, within=ars_export.export_dir(region))
    for send in results:
        log.info("Envoi n°%s %s : %s (tentative %s) — %s", send.id, send.file_name, send.status, send.attempts,
                 send.remote_answer)
    if purged:
        log.info("%s copie(s) locale(s) d'exports déjà livrés supprimée(s).", purged)
    failed = [send for send in results if send.status != "sent"]
    if failed:
        raise RuntimeError(f"{len(failed)} fichier(s) non livré(s) à l'ARS, laissés en attente dans le journal : "
                           + ", ".join(f"n°{s.id} {s.file_name}" for s in failed))
    if not results:
        raise AirflowSkipException("Aucun envoi en attente pour l'ARS.")
    return {"sent": [{"id": s.id, "file": s.file_name} for s in results], "purged": purged}
