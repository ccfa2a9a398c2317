"""Airflow connections as the ``AIRFLOW_CONN_<ID>`` variables hold them, read without Airflow:
the package's connection ids, their JSON and URI forms, and the ``.env`` file docker compose reads
(for ``rpu region init`` and ``rpu region check``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

PLACEHOLDER = "A_RENSEIGNER"


# Same ids as rpu.airflow.glue (which imports Airflow, so is not imported here); a test checks both agree.
DB_CONN_ID, INBOX_CONN_ID, INVS_CONN_ID = "rpu_db", "rpu_inbox", "invs_outbox"
ATIH_CONN_ID, ARS_CONN_ID, SMTP_CONN_ID = "atih_syrius", "ars_outbox", "smtp_default"
CONNECTION_IDS = (DB_CONN_ID, INBOX_CONN_ID, INVS_CONN_ID, ARS_CONN_ID, ATIH_CONN_ID, SMTP_CONN_ID)


@dataclass(frozen=True)
class ConnectionSpec:
    """An Airflow connection as ``AIRFLOW_CONN_<ID>`` holds it (JSON or URI form)."""

    conn_type: str
    host: str = ""
    port: int | None = None
    login: str = ""
    password: str = ""
    schema: str = ""
    extra: dict | None = None

    @property
    def extras(self) -> dict:
        return self.extra or {}

    def placeholders(self) -> list[str]:
        fields = {"host": self.host, "login": self.login, "password": self.password, "schema": self.schema}
        fields.update({f"extra.{k}": v for k, v in self.extras.items()})
        return [name for name, value in fields.items() if PLACEHOLDER in str(value or "")]


def parse_connection(value: str) -> ConnectionSpec:
    """Parse ``AIRFLOW_CONN_*``: JSON (``{"conn_type": ...}``) or Airflow's URI form
    (``type://login:password@host:port/schema?extra=...`` or ``?__extra__=<json>``)."""
    value = value.strip()
    if value.startswith("{"):
        data = json.loads(value)
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra.strip() else {}
        port = data.get("port")
        return ConnectionSpec(
            conn_type=str(data.get("conn_type") or "").replace("-", "_"), host=str(data.get("host") or ""),
            port=int(port) if port not in (None, "") else None, login=str(data.get("login") or ""),
            password=str(data.get("password") or ""), schema=str(data.get("schema") or ""), extra=extra)
    parts = urlsplit(value)
    if not parts.scheme:
        raise ValueError("ni JSON ni URI (attendu {\"conn_type\": ...} ou type://...)")
    conn_type = parts.scheme.replace("-", "_")
    if conn_type == "postgresql":
        conn_type = "postgres"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    extra = json.loads(query["__extra__"]) if "__extra__" in query else query
    return ConnectionSpec(
        conn_type=conn_type, host=unquote(parts.hostname or ""), port=parts.port,
        login=unquote(parts.username or ""), password=unquote(parts.password or ""),
        schema=unquote(parts.path[1:]) if parts.path else "", extra=extra)


def read_env_file(path: str | os.PathLike) -> dict[str, str]:
    """``KEY=VALUE`` lines as docker compose reads them: comments, blank lines, ``export``,
    single quotes (literal) and double quotes."""
    values: dict[str, str] = {}
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        else:
            value = value.split(" #", 1)[0].strip()
        values[key] = value
    return values
