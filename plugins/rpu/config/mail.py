"""Plain e-mail for the concentrator's messages to people (ORU, ARS, establishments).

The DAGs send through the ``smtp_default`` Airflow connection (``rpu.airflow.glue``); the
command line reads the same connection from ``AIRFLOW_CONN_SMTP_DEFAULT`` and both turn it
into ``SmtpSettings`` with :meth:`SmtpSettings.from_connection`.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

DEFAULT_SENDER = "concentrateur-rpu@localhost"


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = DEFAULT_SENDER
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    implicit_tls: bool = False  # SMTPS (port 465): TLS from the first byte

    @classmethod
    def from_connection(cls, host: str | None, port: int | None, login: str | None, password: str | None,
                        extra: dict | None) -> SmtpSettings:
        """The fields of an ``smtp_default`` connection read as Airflow's SMTP hook reads them
        (and ``rpu region check`` tests them): SMTPS unless ``extra.disable_ssl``, else STARTTLS
        unless ``extra.disable_tls``; the sender in ``extra.from_email``."""
        extra = extra or {}
        implicit_tls = not _true(extra.get("disable_ssl", False))
        return cls(host=host or "127.0.0.1", port=int(port or 25), sender=extra.get("from_email") or DEFAULT_SENDER,
                   user=login or None, password=password or None, implicit_tls=implicit_tls,
                   starttls=not implicit_tls and not _true(extra.get("disable_tls", False)))

    def send(self, to: list[str], subject: str, body: str, attachments: list[Path] = ()) -> None:
        self.deliver(build_message(self.sender, to, subject, body, attachments))

    def deliver(self, message: EmailMessage) -> list[str]:
        """Send a prepared message to every address of its To and Cc; return those addresses."""
        recipients = [address.addr_spec for header in ("To", "Cc") for address in
                      (message[header].addresses if message[header] else ())]
        context = ssl.create_default_context()  # the relay's certificate is checked, as the hook does
        client = (smtplib.SMTP_SSL(self.host, self.port, timeout=30, context=context) if self.implicit_tls
                  else smtplib.SMTP(self.host, self.port, timeout=30))
        with client as smtp:
            if self.starttls:
                smtp.starttls(context=context)
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message, to_addrs=recipients)
        return recipients


def _true(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


def build_message(sender: str, to: list[str], subject: str, body: str, attachments: list[Path] = (), *,
                  cc: list[str] = (), reply_to: list[str] = ()) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    if reply_to:
        message["Reply-To"] = ", ".join(reply_to)
    message["Subject"] = subject
    message.set_content(body)
    for path in attachments:
        path = Path(path)
        subtype = {"csv": "csv", "html": "html"}.get(path.suffix.lstrip("."), "octet-stream")
        maintype = "text" if subtype in ("csv", "html") else "application"
        message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return message
