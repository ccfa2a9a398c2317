"""An SFTP-only server on loopback, for the tests and the demo: chrooted to a directory, one
account with a password, a pinned Ed25519 host key (kept on disk for the demo, so a restart
keeps the key its Airflow connections pin)."""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import asyncssh

LOOPBACK = "127.0.0.1"
_HOST_KEY_FILE = "ssh_host_ed25519_key"


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
        self._host_key = load_or_create_host_key(Path(state_dir) if state_dir is not None else None)
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


def load_or_create_host_key(state_dir: Path | None) -> asyncssh.SSHKey:
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
