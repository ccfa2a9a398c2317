"""Real network services on loopback, for the tests and the one-command local demo.

- :class:`SftpServer`: the SFTP server where establishments drop their files (and where the
  national and regional destinations pick theirs up), chrooted to a directory, one user with a
  password, a pinned host key.
- :class:`SmtpSink`: an SMTP server that accepts every message, keeps it in memory and,
  for the demo, writes it as an ``.eml`` file into a mailbox directory the operator reads.
- :func:`start_postgres`: the local PostgreSQL on 127.0.0.1:5432 when there is one, else a
  private server started with ``pgserver``; :func:`create_database` / :func:`drop_database`.

Each ``airflow_connection()`` returns the JSON form of an ``AIRFLOW_CONN_<ID>`` variable
(JSON rather than URI so that boolean extras stay booleans). No Airflow import here.
"""

from __future__ import annotations

import asyncio
import atexit
import hmac
import os
import secrets
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncssh
import psycopg
from aiosmtpd.controller import Controller
from psycopg import sql

LOOPBACK = "127.0.0.1"
_HOST_KEY_FILE = "ssh_host_ed25519_key"


# --------------------------------------------------------------------------- SFTP


class _PasswordOnlyServer(asyncssh.SSHServer):
    """One SSH connection: password authentication for a single account."""

    def __init__(self, owner: SftpServer):
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        # Compare both fields in constant time, and always both.
        user_ok = hmac.compare_digest(username.encode(), self._owner.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self._owner.password.encode())
        return user_ok and password_ok


class SftpServer:
    """An SFTP-only server on 127.0.0.1, in its own thread with its own asyncio loop.

    ``root`` is the chroot: the client sees it as ``/``. Without ``password`` a random one
    is drawn (read it back from ``airflow_connection()``). The host key is an Ed25519 key,
    kept in ``state_dir`` when one is given (so a restarted demo keeps the key its Airflow
    connections pin), otherwise generated in memory for the life of this object.
    ``stop()`` closes the listener and drops every open client connection; ``start()``
    again listens on the same port.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        username: str = "rpu",
        password: str | None = None,
        *,
        port: int = 0,
        state_dir: str | os.PathLike[str] | None = None,
        host: str = LOOPBACK,
    ):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.username = username
        # Airflow does not mask secrets shorter than 5 characters in task logs.
        self.password = password if password is not None else secrets.token_urlsafe(16)
        self.host = host
        self.port = port
        self._host_key = _load_or_create_host_key(Path(state_dir) if state_dir is not None else None)
        self.host_key_public: str = self._host_key.export_public_key("openssh").decode().strip()
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None

    # -- lifecycle

    @property
    def running(self) -> bool:
        return self._acceptor is not None

    def start(self) -> SftpServer:
        if self.running:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"sftp-server-{self.port}", daemon=True)
        thread.start()
        try:
            self._acceptor = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=10)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            raise
        self._loop, self._thread = loop, thread
        # Keep the port chosen by the system, so that a restart listens on the same one.
        self.port = self._acceptor.get_port()
        return self

    def stop(self) -> None:
        if not self.running:
            return
        assert self._loop is not None and self._thread is not None
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = self._thread = self._acceptor = None

    def __enter__(self) -> SftpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _listen(self) -> asyncssh.SSHAcceptor:
        root = os.fsencode(self.root)
        return await asyncssh.create_server(
            lambda: _PasswordOnlyServer(self),
            self.host,
            self.port,
            server_host_keys=[self._host_key],
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
            allow_scp=False,
            # SFTP only: no shell, no command, no forwarding, no agent.
            process_factory=None,
            agent_forwarding=False,
            allow_pty=False,
            x11_forwarding=False,
            reuse_address=True,
        )

    async def _shutdown(self) -> None:
        assert self._acceptor is not None
        self._acceptor.close()
        await self._acceptor.wait_closed()
        connections = list(self._connections)
        for conn in connections:
            conn.abort()  # drop the TCP connection now, as a crashed server would
        for conn in connections:
            try:
                await asyncio.wait_for(conn.wait_closed(), timeout=5)
            except TimeoutError:
                pass
        self._connections.clear()

    # -- Airflow

    def airflow_connection(self, conn_type: str = "sftp") -> dict[str, Any]:
        """JSON form of the Airflow connection to this server, host key pinned.

        The SSH hook reads ``host_key`` as ``"<key type> <base64>"`` (an OpenSSH public key,
        without the comment) and, for a port other than 22, registers it for
        ``[127.0.0.1]:<port>``; a server presenting any other key is refused.
        ``look_for_keys: false`` stops paramiko from offering the local user's
        ``~/.ssh`` keys to a password-only account.
        """
        if not self.port:
            raise RuntimeError("start() the server first: the port is not known yet")
        return {
            "conn_type": conn_type,
            "host": self.host,
            "port": self.port,
            "login": self.username,
            "password": self.password,
            "extra": {
                "host_key": self.host_key_public,
                "no_host_key_check": False,
                "look_for_keys": False,
            },
        }


def _load_or_create_host_key(state_dir: Path | None) -> asyncssh.SSHKey:
    if state_dir is None:
        return asyncssh.generate_private_key("ssh-ed25519")
    path = state_dir / _HOST_KEY_FILE
    if path.exists():
        return asyncssh.read_private_key(path)
    state_dir.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    return key


# --------------------------------------------------------------------------- SMTP


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
    ):
        self.host = host
        self.port = port
        self.from_email = from_email
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
        """JSON form of the ``smtp_default`` connection: plain SMTP (the hook reads
        ``disable_ssl`` / ``disable_tls`` as booleans) and the sender address in
        ``from_email``, which the hook and ``SmtpNotifier`` use when none is given."""
        if not self.port:
            raise RuntimeError("start() the sink first: the port is not known yet")
        return {
            "conn_type": "smtp",
            "host": self.host,
            "port": self.port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": self.from_email},
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


# --------------------------------------------------------------------------- PostgreSQL

LOCAL_POSTGRES_URL = f"postgresql://postgres@{LOOPBACK}:5432/postgres"
_private_servers: list[Any] = []  # pgserver handles started by start_postgres()


def postgres_accepts(url: str, timeout: int = 2) -> bool:
    """True when a PostgreSQL server accepts a connection at ``url``."""
    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except psycopg.OperationalError:
        return False


def start_postgres(data_dir: str | os.PathLike[str], *, existing_url: str | None = LOCAL_POSTGRES_URL) -> str:
    """Return the URL of a PostgreSQL server to use as administrator.

    ``existing_url`` (by default the postgres user on 127.0.0.1:5432) when it accepts
    connections; otherwise a private server started by ``pgserver`` with its data in
    ``data_dir``, listening on a Unix socket only, stopped by :func:`stop_private_postgres`
    or, failing that, when this process exits.
    """
    if existing_url and _port_open(existing_url) and postgres_accepts(existing_url):
        return existing_url
    with warnings.catch_warnings():
        # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # only needed on a machine without a PostgreSQL server

    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    _private_servers.append(server)
    return server.get_uri()


def stop_private_postgres() -> None:
    """Stop the servers :func:`start_postgres` started (their data stays).

    pgserver otherwise stops them from an ``atexit`` hook that logs; under pytest that
    logging goes to already-closed capture streams and prints "--- Logging error ---".
    """
    while _private_servers:
        server = _private_servers.pop()
        server.cleanup()
        atexit.unregister(server._cleanup)


def database_url(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (host, port, user and query unchanged)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def create_database(admin_url: str, name: str) -> str:
    """Create an empty database ``name``; return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, closing any session still connected to it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_airflow_connection(url: str) -> dict[str, Any]:
    """JSON form of an Airflow ``postgres`` connection (e.g. ``rpu_db``) for ``url``.

    Works for a Unix-socket URL too (``?host=/socket/dir``): the socket directory becomes the
    connection's host, which psycopg accepts as such.
    """
    params = psycopg.conninfo.conninfo_to_dict(url)
    conn: dict[str, Any] = {
        "conn_type": "postgres",
        "host": params.get("host") or "localhost",
        "port": int(params.get("port") or 5432),
        "login": params.get("user") or "postgres",
        "schema": params.get("dbname") or "postgres",
    }
    if params.get("password"):
        conn["password"] = params["password"]
    return conn


def _port_open(url: str) -> bool:
    """Cheap TCP check before trying a PostgreSQL login (Unix-socket URLs are just tried)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    host = str(params.get("host") or "")
    if not host or host.startswith("/"):
        return True
    try:
        with socket.create_connection((host, int(params.get("port") or 5432)), timeout=1):
            return True
    except OSError:
        return False


__all__ = [
    "LOCAL_POSTGRES_URL",
    "ReceivedMail",
    "SftpServer",
    "SmtpSink",
    "create_database",
    "database_url",
    "drop_database",
    "postgres_accepts",
    "postgres_airflow_connection",
    "start_postgres",
    "stop_private_postgres",
]


# --------------------------------------------------------------------------- Redis (Celery's broker)

LOCAL_REDIS = (LOOPBACK, 6379)


def redis_accepts(host: str = LOOPBACK, port: int = 6379, timeout: float = 2) -> bool:
    """Whether a Redis server answers PING there (RESP, no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` (the Debian package's binary) on a free loopback port, no
    persistence: for a machine whose own Redis (127.0.0.1:6379) does not answer."""

    def __init__(self, work_dir: str | os.PathLike[str], binary: str = "redis-server"):
        self.work_dir = Path(work_dir)
        self.binary = binary
        self.port = 0
        self._process = None

    def start(self, timeout: float = 20) -> RedisServer:
        import shutil
        import subprocess

        executable = shutil.which(self.binary)
        if executable is None:
            raise RuntimeError("Redis ne répond pas sur 127.0.0.1:6379 et redis-server est introuvable "
                               "(apt-get install redis-server)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            self.port = probe.getsockname()[1]
        self._process = subprocess.Popen(
            [executable, "--bind", LOOPBACK, "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.work_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not redis_accepts(LOOPBACK, self.port, timeout=0.5):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server n'a pas démarré sur {LOOPBACK}:{self.port}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except Exception:
                self._process.kill()
        self._process = None

    def url(self, db: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"
