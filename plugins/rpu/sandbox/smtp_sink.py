"""An SMTP server on loopback that accepts every message and keeps it, for the tests and the
demo (where it also writes each message as an ``.eml`` file the operator reads)."""

from __future__ import annotations

import os
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the sink received it: the parsed message plus its SMTP envelope."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str]
    received_at: datetime
    path: Path | None = None  # the .eml file, when the sink has a mailbox directory


class _SinkHandler:
    def __init__(self, sink: SmtpSink):
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        self._sink._receive(envelope.mail_from, list(envelope.rcpt_tos), raw)
        return "250 Message accepted for delivery"


class _LoopbackController(Controller):
    """aiosmtpd's Controller, able to listen on port 0.

    The stock ``start()`` opens a test connection to ``self.port`` to check the server
    answers; with port 0 that would go to port 0. Read the bound port first.
    """

    def _trigger_server(self) -> None:
        if not self.port and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """An SMTP server on 127.0.0.1 that accepts every message and keeps it.

    ``messages`` are :class:`email.message.EmailMessage` objects parsed with
    ``policy.default`` (so ``msg["Subject"]`` is the decoded text); ``received`` holds the
    same messages with their envelope. Each message also carries ``X-MailFrom`` and
    ``X-RcptTo`` headers (as aiosmtpd's own handlers do), so Bcc recipients stay visible.
    With ``mailbox_dir``, each message is also written there as ``<time>-<id>.eml``.
    """

    def __init__(
        self,
        mailbox_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        host: str = LOOPBACK,
        from_email: str = "concentrateur@localhost",
        tls_context: ssl.SSLContext | None = None,
    ):
        self.host = host
        self.port = port
        self.from_email = from_email
        self.tls_context = tls_context  # SMTPS (TLS from the first byte), as a relay on port 465
        self.mailbox_dir = Path(mailbox_dir) if mailbox_dir is not None else None
        if self.mailbox_dir is not None:
            self.mailbox_dir.mkdir(parents=True, exist_ok=True)
        self.received: list[ReceivedMail] = []
        self._changed = threading.Condition()
        self._controller: _LoopbackController | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        with self._changed:
            return [mail.message for mail in self.received]

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpSink:
        if self.running:
            return self
        controller = _LoopbackController(
            _SinkHandler(self),
            hostname=self.host,
            port=self.port,
            # Without it aiosmtpd calls socket.getfqdn(), which can stall for seconds
            # on a machine whose DNS does not answer.
            server_hostname="localhost",
            enable_SMTPUTF8=True,
            ssl_context=self.tls_context,
        )
        controller.start()
        self._controller = controller
        self.port = controller.port
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget the messages kept in memory (the .eml files stay)."""
        with self._changed:
            self.received.clear()

    def wait_for(self, predicate: Callable[[EmailMessage], bool] | None = None, timeout: float = 10.0) -> EmailMessage:
        """Return the first message matching ``predicate`` (any message if None), waiting
        up to ``timeout`` seconds for it; raise ``TimeoutError`` listing what did arrive."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for mail in self.received:
                    if predicate is None or predicate(mail.message):
                        return mail.message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    subjects = [str(mail.message["Subject"]) for mail in self.received]
                    raise TimeoutError(f"no matching e-mail within {timeout} s; received subjects: {subjects}")
                self._changed.wait(remaining)

    def airflow_connection(self) -> dict[str, Any]:
        """JSON form of the ``smtp_default`` connection: plain SMTP, or SMTPS with a TLS context (the hook reads
        ``disable_ssl`` / ``disable_tls`` as booleans) and the sender address in
        ``from_email``, which the hook and ``SmtpNotifier`` use when none is given."""
        if not self.port:
            raise RuntimeError("start() the sink first: the port is not known yet")
        return {
            "conn_type": "smtp",
            "host": self.host,
            "port": self.port,
            "extra": {"disable_ssl": self.tls_context is None, "disable_tls": True, "from_email": self.from_email},
        }

    def _receive(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        envelope = f"X-MailFrom: {mail_from}\r\nX-RcptTo: {', '.join(rcpt_tos)}\r\n".encode()
        data = envelope + raw
        now = datetime.now(UTC)
        path = None
        if self.mailbox_dir is not None:
            path = self.mailbox_dir / f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.eml"
            _write_atomically(path, data)
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        with self._changed:
            self.received.append(ReceivedMail(message, mail_from, rcpt_tos, now, path))
            self._changed.notify_all()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write then rename, so that a reader never sees half a message."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
