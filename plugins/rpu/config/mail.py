"""Plain e-mail for the concentrator's messages to people (ORU, ARS, establishments).

The DAGs send through the ``smtp_default`` Airflow connection (``rpu.airflow.glue``); the
command line and the tests can use ``SmtpSettings`` directly.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "concentrateur-rpu@localhost"
    user: str | None = None
    password: str | None = None
    starttls: bool = False

    def send(self, to: list[str], subject: str, body: str, attachments: list[Path] = ()) -> None:
        message = build_message(self.sender, to, subject, body, attachments)
        with smtplib.SMTP(self.host, self.port, timeout=30) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message)


def build_message(sender: str, to: list[str], subject: str, body: str, attachments: list[Path] = ()) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(body)
    for path in attachments:
        path = Path(path)
        subtype = {"csv": "csv", "html": "html"}.get(path.suffix.lstrip("."), "octet-stream")
        maintype = "text" if subtype in ("csv", "html") else "application"
        message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return message
