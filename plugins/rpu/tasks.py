"""Task bodies of the DAGs: Airflow glue only (connections, skips, logs); the work is done by
the domain modules they call. Each function is what one ``@task`` runs."""

from __future__ import annotations

import logging

from airflow.sdk.exceptions import AirflowSkipException

from rpu import airflow_glue as glue
from rpu import registry
from rpu.ingest import SftpInbox, run_ingest
from rpu.store import migrate

log = logging.getLogger(__name__)


def sync_registry_task() -> list[str]:
    region = glue.region()
    with glue.database() as conn:
        conn.autocommit = True
        migrate(conn)  # a new version's migrations are applied before anything uses them
        conn.autocommit = False
        changes = registry.sync(conn, region, author="rpu_ingest (configuration)")
    for change in changes:
        log.info("Statut : %s", change)
    return [str(change) for change in changes]


def ingest_task() -> dict:
    region = glue.region()
    with glue.database() as conn, glue.sftp_session(glue.INBOX_CONN_ID) as sftp:
        inbox = SftpInbox(sftp, glue.sftp_base_path(glue.INBOX_CONN_ID))
        summary = run_ingest(conn, inbox, region, notify=glue.send_mail)
    for line in summary.lines():
        log.info("%s", line)
    if summary.failed:
        raise RuntimeError(f"{len(summary.failed)} fichier(s) en échec inattendu, laissés dans depot/ : "
                           + ", ".join(summary.failed))
    if summary.files_taken == 0:
        raise AirflowSkipException("Rien de nouveau dans les dossiers depot/.")
    return summary.as_dict()


def announce_task(summary: dict) -> int:
    visits = summary["totals"]["visits_loaded"]
    if visits == 0:
        raise AirflowSkipException("Aucun passage chargé : pas de mise à jour de la table régionale.")
    return visits
