"""OpenSSH's own sshd on loopback, serving a folder over ``internal-sftp`` as the region's
server does (deploy/sftp/sshd_config: SFTP only, no links created), for the benchmarks: the
Python server of the tests costs the loaders' machine several times the CPU of OpenSSH's.

The account is the user running it, authenticated by a key made for the run (no password, no
PAM, no system account to create); the session starts in the served folder, so the
concentrator's relative paths (``<FINESS>/depot/...``) are the same as under the deployed
chroot. No Airflow import here.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import paramiko

from rpu.sandbox.sftp_server import LOOPBACK

SSHD = "/usr/sbin/sshd"
PRIVILEGE_SEPARATION_DIR = Path("/run/sshd")  # sshd refuses to start without it

_CONFIG = """\
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile {folder}/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {folder}/authorized_keys
AllowTcpForwarding no
X11Forwarding no
PermitTTY no
Subsystem sftp internal-sftp
ForceCommand internal-sftp -d {root} -P symlink,hardlink
"""


def openssh_available() -> bool:
    return Path(SSHD).exists() and shutil.which("ssh-keygen") is not None


class OpenSshSftpServer:
    """``sshd -D`` on a free loopback port; :attr:`pid` is the listener, which forks one process
    per session (as under the deployed server, each session's CPU is its own process's)."""

    def __init__(self, root: Path, work_dir: Path):
        self.root = Path(root).resolve()
        self.work_dir = Path(work_dir)
        self.port = 0
        self.username = getpass.getuser()
        self.key_file = self.work_dir / "client_key"  # the account's private key (Ed25519, no passphrase)
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 20) -> OpenSshSftpServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.work_dir / name)],
                           check=True, capture_output=True)
        shutil.copy(self.work_dir / "client_key.pub", self.work_dir / "authorized_keys")
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            self.port = probe.getsockname()[1]
        config = self.work_dir / "sshd_config"
        config.write_text(_CONFIG.format(host=LOOPBACK, port=self.port, host_key=self.work_dir / "host_key",
                                         folder=self.work_dir, root=self.root))
        PRIVILEGE_SEPARATION_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=open(self.work_dir / "sshd.log", "wb"))
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = (self.work_dir / "sshd.log").read_text(errors="replace")[-500:]
                self.stop()
                raise RuntimeError(f"sshd n'a pas démarré sur {LOOPBACK}:{self.port} : {log}")
            time.sleep(0.05)
        return self

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as connection:
                return connection.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def connect(self) -> paramiko.Transport:
        """An authenticated SSH connection (open an SFTP client over it)."""
        transport = paramiko.Transport((LOOPBACK, self.port))
        transport.connect(username=self.username, pkey=paramiko.Ed25519Key.from_private_key_file(str(self.key_file)))
        return transport

    @property
    def host_key_public(self) -> str:
        """``"ssh-ed25519 <base64>"``, as the SSH hook's ``host_key`` extra pins it."""
        return " ".join((self.work_dir / "host_key.pub").read_text().split()[:2])

    def airflow_connection(self) -> dict[str, Any]:
        """JSON form of the Airflow connection to this server: key authentication, host key pinned."""
        return {"conn_type": "sftp", "host": LOOPBACK, "port": self.port, "login": self.username,
                "extra": {"key_file": str(self.key_file), "host_key": self.host_key_public,
                          "no_host_key_check": False, "look_for_keys": False}}

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None
