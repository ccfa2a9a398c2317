"""The one module of ``rpu`` that imports Airflow: connections, alerts, shared task settings.

DAG files import from here; nothing here looks anything up at import time (connections and
the region file are read when a task runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import NoReturn

import psycopg
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import Asset, Connection
from airflow.sdk.exceptions import AirflowFailException

from rpu.airflow.pools import DB_POOL  # noqa: F401  (the DAG files take it from here)
from rpu.config import region as region_config
from rpu.config.mail import SmtpSettings

DB_CONN_ID = "rpu_db"
INBOX_CONN_ID = "rpu_inbox"
INVS_CONN_ID = "invs_outbox"
ATIH_CONN_ID = "atih_syrius"
ARS_CONN_ID = "ars_outbox"
SMTP_CONN_ID = "smtp_default"

# The region's local time, for the DAG schedules (05:30, 06:00, 10:00 are local times). Read
# from the environment (the deployment's .env), never from a connection or the region file at
# parse time; `rpu region check` verifies it matches [region] timezone. Overseas regions set it.
SCHEDULE_TIMEZONE = os.environ.get("RPU_TIMEZONE", "Europe/Paris")

# The regional RPU table: rpu_ingest updates it when it loads visits; downstream DAGs follow it.
log = logging.getLogger(__name__)

RPU_TABLE = Asset(name="rpu_regional_table", uri="rpu://regional-database/public/rpu")


class RequestRefused(AirflowFailException):
    """A request refused with an answer for the person who made it (a replay the ARS asked for
    with a wrong FINESS key, an establishment not live, a period the regional database does not
    hold). The task fails at once (a retry would give the same answer) and shows the answer in
    the UI; it is not an incident: :class:`OperatorAlert` sends no e-mail for it."""


def refuse(answer: str, ti=None) -> NoReturn:
    """Fail the running task with ``answer`` (French), also kept as its XCom ``refus`` so the
    answer is one click away on the run in the UI (task, tab XCom), besides the task's log."""
    if ti is not None:
        try:
            ti.xcom_push(key="refus", value=answer)
        except Exception:  # the answer is still in the log and in the exception
            log.warning("XCom « refus » non enregistrée", exc_info=True)
    raise RequestRefused(answer) from None  # the answer alone, not the exception it replaces


class OperatorAlert(SmtpNotifier):
    """A failed task e-mails the region's operators (ORU): which task, which run, who triggered
    it, the cause, with the region code in the subject like every other e-mail. The address and
    the code come from the region configuration, read when the failure happens, not when the
    DAG file is parsed. A :class:`RequestRefused` is an answer, not an incident: no e-mail."""

    def __init__(self, **kwargs):
        kwargs.setdefault("subject", "[RPU] Échec")
        kwargs.setdefault("html_content", "")
        super().__init__(to="", smtp_conn_id=SMTP_CONN_ID, **kwargs)
        self._templates = {"subject": self.subject, "html_content": self.html_content}

    def __call__(self, *args) -> None:
        # Rendering is in place and irreversible: start again from the templates each time, or
        # every alert after the first would carry the first failure's task in its subject.
        self.subject, self.html_content = self._templates["subject"], self._templates["html_content"]
        self.to = ""
        return super().__call__(*args)

    def notify(self, context):
        from rpu.flows.templating import render

        error = context.get("exception")
        ti = context.get("ti")
        if isinstance(error, RequestRefused):
            log.info("%s.%s : demande refusée (réponse au demandeur, pas d'e-mail à l'ORU) : %s",
                     getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"), error)
            return None
        code = "?"
        try:
            config = region_config.load()
            code = config.code
            self.to = self.to or list(config.operator_emails)
        except region_config.RegionConfigError:
            pass
        if not self.to:
            self.to = ["root@localhost"]  # still alert someone rather than nobody
        dag_run = context.get("dag_run")
        map_index = getattr(ti, "map_index", None)
        values = {
            "region_code": code, "dag_id": getattr(ti, "dag_id", "?"), "task_id": getattr(ti, "task_id", "?"),
            # A mapped instance (one establishment's load or build) is named by its FINESS.
            "mapped": (getattr(ti, "rendered_map_index", None) or map_index)
            if map_index is not None and map_index >= 0 else None,
            "run_id": getattr(ti, "run_id", "?"), "try_number": getattr(ti, "try_number", "?"),
            "requested_by": getattr(dag_run, "triggering_user_name", None),
            "cause": f"{type(error).__name__} : {error}" if error is not None else "",
            "log_url": getattr(ti, "log_url", None),
        }
        self.subject = render("operator_alert_subject.txt.j2", **values).strip()
        self.html_content = render("operator_alert.html.j2", **values)
        return super().notify(context)


def default_args(**overrides) -> dict:
    """Shared by every DAG: retries with backoff, then an e-mail to the ORU."""
    args = {
        "owner": "oru",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=15),
        "on_failure_callback": OperatorAlert(),
    }
    args.update(overrides)
    return args


def region() -> region_config.Region:
    return region_config.load()


@contextlib.contextmanager
def database() -> Iterator[psycopg.Connection]:
    """The regional database through the postgres provider's hook (connection ``rpu_db``, type
    ``postgres``): with psycopg 3 and SQLAlchemy 2 installed it hands out a psycopg 3
    connection, so the loader's COPY streams through it unchanged. Committed on success, rolled
    back on error, closed in both cases."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    with PostgresHook(postgres_conn_id=DB_CONN_ID).get_conn() as conn:
        yield conn


@contextlib.contextmanager
def sftp_session(conn_id: str) -> Iterator:
    """One SFTP session (a paramiko SFTPClient) for the whole task."""
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    hook = SFTPHook(ssh_conn_id=conn_id)
    with hook.get_managed_conn() as sftp:
        yield sftp


def sftp_base_path(conn_id: str) -> str:
    """The folder of the SFTP server to work in: the connection's extra ``path`` if any."""
    return (Connection.get(conn_id).extra_dejson or {}).get("path", "")


def smtp_settings() -> SmtpSettings:
    connection = Connection.get(SMTP_CONN_ID)
    return SmtpSettings.from_connection(connection.host, connection.port, connection.login, connection.password,
                                        connection.extra_dejson)


def send_mail(to: list[str], subject: str, body: str, attachments=()) -> None:
    if to:
        smtp_settings().send(list(to), subject, body, list(attachments))
