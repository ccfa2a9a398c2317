"""Airflow glue of the feedback and self-watching features: the ``heartbeat`` task that ends
every scheduled DAG, and the task bodies of ``rpu_establishment_reports``. The work is done by
``rpu.flows.health`` and ``rpu.flows.establishment_report``."""

from __future__ import annotations

import logging

from airflow.sdk import task

from rpu.airflow import glue
from rpu.flows import health

log = logging.getLogger(__name__)


def heartbeat_task() -> dict:
    """Record this run's success in ``flow_run`` and ping ``[monitoring] heartbeat_url``. Never
    fails: a monitoring service (or even the database) that is down must not turn a good run red;
    ``rpu health`` and the dead-man's switch see what is missing."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    flow, run_id = context["dag"].dag_id, context["run_id"]
    try:
        url = health.heartbeat_url(glue.region())
    except Exception as error:
        log.warning("Configuration de région illisible, pas de heartbeat : %s", error)
        url = None
    recorded = False
    try:
        with glue.database() as conn:
            conn.autocommit = True
            health.record_success(conn, flow, run_id)
            recorded = True
    except Exception as error:
        log.warning("Exécution réussie non enregistrée dans flow_run (%s: %s)", type(error).__name__, error)
    error = health.ping(url) if url else None
    if url:
        if error:
            log.warning("Heartbeat non reçu : %s", error)
        else:
            log.info("Heartbeat envoyé au service de surveillance.")
        if recorded:
            try:
                with glue.database() as conn:
                    conn.autocommit = True
                    health.record_heartbeat(conn, flow, error)
            except Exception as db_error:
                log.warning("Résultat du heartbeat non enregistré (%s)", type(db_error).__name__)
    return {"flow": flow, "recorded": recorded, "heartbeat": None if not url else (error or "ok")}


@task(trigger_rule="none_failed")
def heartbeat() -> dict:
    return heartbeat_task()


def add_heartbeat(dag):
    """End ``dag`` with the ``heartbeat`` task, downstream of **every** task (not only the last
    ones: a final task that runs "all_done" may succeed after an earlier failure), so that with
    "none_failed" it runs only when the whole run succeeded, skips included. Returns the DAG."""
    tasks = list(dag.tasks)
    with dag:
        beat = heartbeat()
    for task_ in tasks:
        task_ >> beat
    return dag


# --- rpu_establishment_reports ----------------------------------------------------------------------

def plan_reports_task() -> dict:
    from datetime import date, datetime
    from zoneinfo import ZoneInfo

    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSkipException

    from rpu.flows import establishment_report as reports

    context = get_current_context()
    params = context.get("params") or {}
    region = glue.region()
    conf = reports.settings(region)
    manual = bool(params.get("date") or params.get("finess") or params.get("force"))
    if params.get("date"):
        day = date.fromisoformat(str(params["date"]))
    else:
        moment = context.get("logical_date") or context["dag_run"].run_after or datetime.now(ZoneInfo(region.timezone))
        day = moment.astimezone(ZoneInfo(region.timezone)).date()
        manual = manual or context.get("logical_date") is None
    if not manual and not reports.due(day, conf):
        when = (f"le {reports.WEEKDAYS[conf.weekday]}" if conf.frequency == "weekly"
                else f"le {conf.day} du mois")
        raise AirflowSkipException(f"{day:%d/%m/%Y} n'est pas un jour de rapports (ils partent {when}).")
    start, end = reports.period_for(day)
    log.info("Rapports des établissements du %s au %s", f"{start:%d/%m/%Y}", f"{end:%d/%m/%Y}")
    return {"start": start.isoformat(), "end": end.isoformat(), "finess": params.get("finess") or None,
            "force": bool(params.get("force"))}


def build_reports_task(period: dict) -> dict:
    from datetime import date

    from rpu.flows import establishment_report as reports

    region = glue.region()
    with glue.database() as conn:
        conn.autocommit = True
        built, failed = reports.build_all(conn, region, date.fromisoformat(period["start"]),
                                          date.fromisoformat(period["end"]), finess=period.get("finess"),
                                          force=bool(period.get("force")))
    for report in built:
        log.info("Construit : %s (%s passages)", report.file_name, report.visits)
    if failed:
        raise RuntimeError("Rapport non construit pour : " + ", ".join(failed) + " (voir le journal ci-dessus).")
    return {"built": [r.id for r in built]}


def deliver_reports_task(built: dict | None = None) -> dict:
    from rpu.flows import establishment_report as reports

    region = glue.region()
    with glue.database() as conn, glue.sftp_session(glue.INBOX_CONN_ID) as sftp:
        conn.autocommit = True
        results = reports.deliver_pending(conn, region, sftp, glue.sftp_base_path(glue.INBOX_CONN_ID),
                                          notify=glue.send_mail)
    for delivery in results:
        log.info("Rapport n°%s %s : %s%s", delivery.id, delivery.file_name, delivery.status,
                 f" ; e-mail à {len(delivery.emailed_to)} contact(s)" if delivery.emailed_to else "")
    failed = [d for d in results if d.status != "delivered"]
    if failed:
        raise RuntimeError(f"{len(failed)} rapport(s) non déposé(s), gardés pour la prochaine tentative : "
                           + " ; ".join(f"{d.finess}/{d.ordre} : {d.error}" for d in failed))
    if not results:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("Aucun rapport à déposer.")
    return {"delivered": [d.id for d in results]}
