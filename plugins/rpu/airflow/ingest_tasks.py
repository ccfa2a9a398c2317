"""Task bodies of the DAGs: Airflow glue only (connections, skips, logs); the work is done by
the domain modules they call. Each function is what one ``@task`` runs."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rpu.airflow import glue
from rpu.flows import ingest, ingest_reports, switch
from rpu.flows.inbox import InboxFile, SftpInbox
from rpu.flows.ingest_reports import IngestSummary
from rpu.store import registry
from rpu.store.db import migrate

log = logging.getLogger(__name__)


def sync_registry_task() -> list[str]:
    region = glue.region()
    with glue.database() as conn:
        conn.autocommit = True
        migrate(conn)  # a new version's migrations are applied before anything uses them
        conn.autocommit = False
        today = datetime.now(ZoneInfo(region.timezone)).date()
        refused: list[str] = []
        changes = registry.sync(conn, region, author="rpu_ingest (configuration)", refused=refused,
                                may_go_live=lambda f, o: switch.streak(conn, f, o, today, region.timezone).eligible)
    for change in changes:
        log.info("Statut : %s", change)
    return [str(change) for change in changes] + refused


def list_files_task() -> list[dict]:
    """One SFTP session over the whole inbox: the stable files of each establishment, one
    item per establishment with files (what the ``load`` instances are mapped over)."""
    region = glue.region()
    summary = IngestSummary()
    with glue.database() as conn, glue.sftp_session(glue.INBOX_CONN_ID) as sftp:
        inbox = SftpInbox(sftp, glue.sftp_base_path(glue.INBOX_CONN_ID))
        to_take = ingest.list_inbox(conn, inbox, region, summary)
        ingest_reports.tell_oru(conn, region, summary, glue.send_mail)  # folders no establishment owns
    waiting = summary.totals()["waiting"]
    log.info("%s établissement(s) avec des fichiers à prendre (%s fichier(s)) ; %s fichier(s) en cours de dépôt",
             len(to_take), sum(len(files) for files in to_take.values()), waiting)
    # Nothing new: an empty list, so that `load` has no instance and is skipped (grey). Not a
    # skip here: `summarize` tells a listing that found nothing from one that failed.
    return [{"finess": folder, "files": [asdict(f) for f in files]} for folder, files in sorted(to_take.items())]


def load_task(establishment: dict) -> dict:
    """One establishment's files: loaded, then moved. Fails (and retries, then alerts, naming
    the FINESS) when a file could not be taken; the files taken before stay done."""
    finess = establishment["finess"]
    region = glue.region()
    summary = IngestSummary()
    started = time.monotonic()
    files = [InboxFile(**f) for f in establishment["files"]]
    with glue.database() as conn, glue.sftp_session(glue.INBOX_CONN_ID) as sftp:
        inbox = SftpInbox(sftp, glue.sftp_base_path(glue.INBOX_CONN_ID))
        ingest.load_establishment(conn, inbox, region, finess, files, summary)
    summary.seconds = time.monotonic() - started
    for line in summary.lines():
        log.info("%s", line)
    if summary.failed:
        # No retry: the file waits for its own delay (inbox_failure); the ORU is told once.
        raise AirflowFailException(f"{finess} : {len(summary.failed)} fichier(s) en échec inattendu, laissé(s) dans "
                                   "depot/ et réessayé(s) plus tard : " + ", ".join(summary.failed))
    return {"finess": finess, **summary.as_dict()}


def summarize_task(planned: list[dict] | None, loaded) -> dict:
    """The run's totals per establishment; the ORU told of files sent from the wrong folder.
    Fails (without retrying) when an establishment's load failed, so that the run shows it."""
    if planned is None:
        raise AirflowFailException("list_files n'a pas abouti (voir son journal, ou celui de sync_registry) : "
                                   "aucun fichier n'a été pris.")
    if not planned:
        raise AirflowSkipException("Rien de nouveau dans les dossiers depot/.")
    results = list(loaded[:]) if loaded else []  # one request for all (a slice), not one per item
    summary = IngestSummary.merged(results)
    region = glue.region()
    with glue.database() as conn:
        ingest_reports.tell_oru(conn, region, summary, glue.send_mail)
    for line in summary.lines():
        log.info("%s", line)
    done = {result["finess"] for result in results}
    failed = [item["finess"] for item in planned if item["finess"] not in done]
    if failed:
        raise AirflowFailException(f"Chargement en échec pour {len(failed)} établissement(s) : {', '.join(failed)} "
                                   "(leurs fichiers non pris sont restés dans depot/ ; voir la tâche load de chacun)")
    return {"finess": sorted(done), **summary.as_dict()}


def announce_task() -> int:
    """Visits loaded during this DAG run, retries and a run that failed half-way included (the
    database is the record, not the last try's summary): downstream DAGs must hear of them."""
    from airflow.sdk import get_current_context

    started = get_current_context()["dag_run"].start_date
    try:
        with glue.database() as conn:
            visits = conn.execute(
                "SELECT coalesce(sum(loaded_records), 0) FROM received_file"
                " WHERE status = 'loaded' AND processed_at >= %s", (started,)).fetchone()[0]
    except psycopg.OperationalError as error:  # the failure of the run has already been alerted
        raise AirflowSkipException(f"Base injoignable ({type(error).__name__}) : rien à annoncer.") from None
    if visits == 0:
        raise AirflowSkipException("Aucun passage chargé : pas de mise à jour de la table régionale.")
    log.info("%s passages chargés pendant cette exécution", visits)
    return int(visits)
