"""Task bodies of ``rpu_invs_daily`` and ``rpu_atih_monthly``: Airflow glue only (connections,
the region file, skips, logs, e-mail). The work is done by ``rpu.flows.invs`` and ``rpu.flows.atih``.

Connections to the regional database are opened in autocommit mode: every step of the use
cases runs in its own explicit transaction, so each journaled outcome (a send built, an attempt
and its answer) is committed at once and survives a task that fails afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg
from airflow.sdk import Connection, get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rpu.airflow import glue
from rpu.config.region import Region
from rpu.flows import atih, invs
from rpu.formats.syrius import CodegeoTable
from rpu.store import sends
from rpu.store.db import migrate

log = logging.getLogger(__name__)


# --- shared ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _database() -> Iterator[psycopg.Connection]:
    with glue.database() as conn:
        conn.autocommit = True
        yield conn


def _send_summary(send: sends.Send) -> dict:
    return {
        "send_id": send.id, "file_name": send.file_name, "finess": send.finess, "ordre": send.ordre,
        "period_start": send.period_start.isoformat() if send.period_start else None,
        "period_end": send.period_end.isoformat() if send.period_end else None,
        "visits": send.visit_count, "status": send.status, "answer": send.remote_answer,
    }


def _deliver_over_sftp(conn: psycopg.Connection, destination: str, conn_id: str) -> list[sends.Send]:
    """Deliver every pending send of ``destination`` over one session of the SFTP connection
    ``conn_id``, into its extra ``path`` (created when missing). When the server cannot be
    reached, every pending send is journaled as a failed attempt with the cause, then the task
    fails (and is retried): nothing is marked sent."""
    return sends.deliver_pending_over(conn, destination, lambda: glue.sftp_session(conn_id),
                                      glue.sftp_base_path(conn_id), server=conn_id, create_folder=True)


def _purge(conn: psycopg.Connection, region: Region, destination: str) -> int:
    """Remove the local copies of the destination's sends delivered more than a week ago."""
    purged = sends.purge_local_copies(conn, destination, within=region.outbox_dir(destination))
    if purged:
        log.info("%s copie(s) locale(s) d'envois livrés depuis plus de %s jours supprimée(s).", purged,
                 sends.KEEP_LOCAL_DAYS)
    return purged


def _raise_if_failed(results: list[sends.Send], what: str) -> None:
    failed = [send for send in results if send.status != "sent"]
    if failed:
        raise RuntimeError(f"{len(failed)} envoi(s) {what} en échec, gardé(s) pour la prochaine tentative : "
                           + " ; ".join(f"n°{s.id} {s.file_name} : {s.remote_answer}" for s in failed))


# --- rpu_invs_daily ----------------------------------------------------------------------------

def _establishment(finess: str, ordre: int) -> dict:
    """One item of a per-establishment mapping; ``label`` names its task instance in the UI."""
    return {"finess": finess, "ordre": ordre, "label": finess if ordre == 0 else f"{finess}/{ordre}"}


def _all(results) -> list[dict]:
    """The mapped builds' results (Airflow's lazy sequence: one request for all, a slice)."""
    return list(results[:]) if results else []


def _not_built(planned: list[dict], results) -> list[str]:
    """"FINESS/ORDRE" of the planned establishments whose build task left no result (failed)."""
    done = {(r["finess"], r["ordre"]) for r in results}
    return [f"{e['finess']}/{e['ordre']}" for e in planned if (e["finess"], e["ordre"]) not in done]


def invs_plan_task() -> list[dict]:
    """The live establishments with files no send carries yet: one build each."""
    with _database() as conn:
        migrate(conn)
        due = invs.due_establishments(conn)
    if not due:
        log.info("Aucun fichier chargé depuis le dernier envoi pour les établissements en production (live).")
    return [_establishment(d.finess, d.ordre) for d in due]


def invs_build_task(establishment: dict) -> dict:
    """One establishment's daily file, built and journaled (nothing when another run did it)."""
    region = glue.region()
    with _database() as conn:
        send = invs.build_establishment(conn, establishment["finess"], establishment["ordre"],
                                        region.outbox_dir(invs.DESTINATION), timezone=region.timezone)
    if send is None:
        log.info("%s : plus rien à envoyer (construit entre-temps par une autre exécution).", establishment["label"])
    else:
        log.info("Construit : %s (%s passages, %s → %s)", send.file_name, send.visit_count, send.period_start,
                 send.period_end)
    return {"finess": establishment["finess"], "ordre": establishment["ordre"],
            "send": _send_summary(send) if send else None}


def invs_builds(planned: list[dict] | None, results) -> dict | None:
    """What ``build_sends`` used to return, from the plan and the per-establishment builds:
    None when the plan itself failed."""
    if planned is None:
        return None
    results = _all(results)
    return {"built": [r["send"] for r in results if r["send"]], "errors": _not_built(planned, results)}


def invs_deliver_task(build: dict | None = None) -> dict:
    """Deliver every pending invs send; also when an establishment's build failed (listed in
    ``build["errors"]``) or the plan did (``build`` is None): the sends of earlier days still go. Then remove the local copies delivered a week ago."""
    region = glue.region()
    if build is None:  # plan_sends failed (this task runs anyway, see the DAG)
        not_built = "plan_sends a échoué (voir son journal)"
    elif build.get("errors"):
        not_built = "fichier InVS non construit pour : " + ", ".join(build["errors"])
    else:
        not_built = None
    with _database() as conn:
        try:
            results = _deliver_over_sftp(conn, invs.DESTINATION, glue.INVS_CONN_ID)
        finally:
            _purge(conn, region, invs.DESTINATION)
    for send in results:
        log.info("Envoi n°%s %s : %s (%s)", send.id, send.file_name, send.status, send.remote_answer)
    _raise_if_failed(results, "vers Santé publique France")
    if not results:
        if not_built:
            raise RuntimeError("Rien à envoyer : " + not_built)
        raise AirflowSkipException("Rien à envoyer à Santé publique France.")
    if not_built:
        raise RuntimeError("Envoyés ; mais " + not_built)
    return {"delivered": [_send_summary(send) for send in results]}


# --- rpu_atih_monthly --------------------------------------------------------------------------

def _run_day(context, timezone: str) -> datetime:
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.astimezone(ZoneInfo(timezone))


def atih_plan_task() -> dict:
    context = get_current_context()
    params = context["params"]
    region = glue.region()
    today = _run_day(context, region.timezone).date()
    try:
        plan = atih.plan_month(today, region.atih_day, params.get("year"), params.get("month"))
    except ValueError as error:
        raise AirflowFailException(str(error)) from None
    if plan is None:
        raise AirflowSkipException(f"Nous sommes le {today:%d/%m/%Y} : l'envoi ATIH du mois précédent part à partir "
                                   f"du {region.atih_day} du mois (atih_day de la région).")
    log.info("Mois à envoyer : %s (%s)", plan.label, "relance demandée" if plan.forced else "exécution planifiée")
    return {"year": plan.year, "month": plan.month, "forced": plan.forced}


def atih_establishments_task() -> list[dict]:
    """The live establishments: one build each."""
    with _database() as conn:
        migrate(conn)
        return [_establishment(finess, ordre) for finess, ordre in atih.live_establishments(conn)]


def atih_build_task(plan: dict, establishment: dict) -> dict:
    """One establishment's cumulative SYRIUS zip for the month, built and journaled."""
    region = glue.region()
    if region.codegeo_csv is None:
        raise AirflowFailException("La région n'a pas de table CP → CODEGEO : renseignez [paths] codegeo_csv "
                                   "dans son fichier de configuration.")
    codegeo = CodegeoTable.load(region.codegeo_csv)
    month = atih.MonthPlan(**plan)
    finess, ordre = establishment["finess"], establishment["ordre"]
    with _database() as conn:
        kind, send = atih.build_establishment(conn, month, finess, ordre, codegeo,
                                              region.outbox_dir(atih.DESTINATION), timezone=region.timezone)
    if kind == atih.BUILT:
        log.info("Construit : %s (%s RPU)", send.file_name, send.visit_count)
    elif kind == atih.WITHOUT_DATA:
        log.info("%s/%s : aucun passage du 01/01 à la fin du mois, pas de fichier.", finess, ordre)
    else:
        log.info("%s/%s : mois %s déjà envoyé ou en attente d'envoi.", finess, ordre, month.label)
    return {"finess": finess, "ordre": ordre, "outcome": kind, "send": _send_summary(send) if send else None}


def atih_builds(planned: list[dict] | None, results) -> dict | None:
    """What ``build_files`` used to return, from the list of establishments and their builds:
    None when the list itself failed."""
    if planned is None:
        return None
    results = _all(results)
    return {
        "built": [r["send"] for r in results if r["outcome"] == atih.BUILT],
        "without_data": [f"{r['finess']}/{r['ordre']}" for r in results if r["outcome"] == atih.WITHOUT_DATA],
        "already_journaled": [f"{r['finess']}/{r['ordre']}" for r in results
                              if r["outcome"] == atih.ALREADY_JOURNALED],
        "errors": _not_built(planned, results),
    }


def atih_deliver_task(build: dict | None = None) -> dict:
    region = glue.region()
    with _database() as conn:
        try:
            if not sends.pending(conn, atih.DESTINATION):
                if build is None:  # the list of establishments failed (this task runs anyway, see the DAG)
                    raise RuntimeError("Rien à envoyer : list_establishments a échoué (voir son journal).")
                if build.get("errors"):
                    raise RuntimeError("Fichier ATIH non construit pour : " + ", ".join(build["errors"]))
                raise AirflowSkipException("Rien à envoyer à l'ATIH.")
            if region.atih_delivery == "sftp":
                results = _deliver_over_sftp(conn, atih.DESTINATION, glue.ATIH_CONN_ID)
            else:
                connection = Connection.get(glue.ATIH_CONN_ID)
                url = atih.syrius_url(connection.conn_type, connection.host, connection.schema, connection.port,
                                      connection.extra_dejson)
                upload = atih.SyriusUpload(url, connection.login or "", connection.password or "")
                try:
                    results = atih.deliver(conn, upload)
                finally:
                    upload.close()
        finally:
            _purge(conn, region, atih.DESTINATION)
    for send in results:
        log.info("Envoi n°%s %s : %s (%s)", send.id, send.file_name, send.status, send.remote_answer)
    _raise_if_failed(results, "vers l'ATIH")
    return {"delivered": [_send_summary(send) for send in results]}


def atih_reconcile_task(plan: dict, build: dict | None = None) -> dict:
    """Write the reconciliation CSVs, e-mail them to the ORU, then fail when a live
    establishment's month is not accepted by ATIH (so that the run shows it)."""
    region = glue.region()
    month = atih.MonthPlan(**plan)
    with _database() as conn:
        reconciliation = atih.write_reconciliation(conn, month, region.exports_base / "rapprochement_atih",
                                                   timezone=region.timezone)
    subject, body = atih.summary_text(month, reconciliation.rows, region.name)
    errors = list(build["errors"]) if build is not None else ["list_establishments en échec"]
    if errors:
        body += "\nNon construit (voir le journal de l'instance build_file de chacun) : " + ", ".join(errors) + "\n"
    glue.send_mail(list(region.operator_emails), subject, body, [reconciliation.month_csv, reconciliation.year_csv])
    of_month = [r for r in reconciliation.rows if r["month"] == month.month]
    refused = [f"{r['finess']}/{r['ordre']} ({r['status']})" for r in of_month if r["status"] != "sent"]
    if refused or errors:
        raise RuntimeError(f"ATIH {month.label} : non accepté pour " + ", ".join(refused + errors))
    return {
        "month_csv": str(reconciliation.month_csv), "year_csv": str(reconciliation.year_csv),
        "accepted": len(of_month), "visits": sum(r["visit_count"] for r in of_month),
    }
