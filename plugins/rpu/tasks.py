"""Task bodies of the DAGs: Airflow glue only (connections, skips, logs); the work is done by
the domain modules they call. Each function is what one ``@task`` runs."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg
from airflow.sdk.exceptions import AirflowSkipException

from rpu import airflow_glue as glue
from rpu import registry, switch
from rpu.ingest import SftpInbox, run_ingest
from rpu.store import migrate

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


def ingest_task() -> dict:
    region = glue.region()
    with glue.database() as conn, glue.sftp_session(glue.INBOX_CONN_ID) as sftp:
        inbox = SftpInbox(sftp, glue.sftp_base_path(glue.INBOX_CONN_ID))
        summary = run_ingest(conn, inbox, region, notify=glue.send_mail)
    for line in summary.lines():
        log.info("%s", line)
    if summary.files_taken == 0 and not summary.failed:
        raise AirflowSkipException("Rien de nouveau dans les dossiers depot/.")
    return summary.as_dict()


def report_failures_task(summary: dict) -> None:
    if summary["failed"]:
        raise RuntimeError(f"{len(summary['failed'])} fichier(s) en échec inattendu, laissés dans depot/ : "
                           + ", ".join(summary["failed"]))


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
