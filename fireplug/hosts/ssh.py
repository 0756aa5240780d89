"""ssh to Docker hosts with the system ssh client, through one shared master connection.

Everything fp does on an ssh host (the engine connection, rsync, `df`) rides on one
ControlMaster connection, so a run pays for one ssh handshake, not one per step; the master
stays up for ``PERSIST_SECONDS`` after its last use, so back-to-back runs pay none. The user's
ssh config (aliases, ports, keys, ProxyJump) applies, since it is ssh itself that connects.

The engine is reached through a unix socket that the master forwards to the host's Docker
socket: each API request is a new channel on the existing connection, with no process to
start on either side.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shlex
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fireplug.errors import FireplugError
from fireplug.errors import SshError as SshError
from fireplug.hosts.address import SshSettings, SshTarget
from fireplug.hosts.transport import Connector, unix_connector
from fireplug.support import proc

PERSIST_SECONDS = 60
DEFAULT_REMOTE_DOCKER_SOCKET = "/var/run/docker.sock"
SSH_FAILED = 255  # ssh's own exit status when the connection (not the remote command) failed
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def ssh_options(target: SshTarget, settings: SshSettings, control_path: str) -> list[str]:
    """ssh's options for ``target``, sharing the master at ``control_path`` (without the command)."""
    argv = ["ssh"]
    if settings.config_file:
        argv += ["-F", settings.config_file]
    argv += [
        "-o",
        "BatchMode=yes",  # fail at once instead of waiting for a password nobody will type
        "-o",
        f"ConnectTimeout={max(1, round(settings.connect_timeout))}",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
        "-o",
        f"ControlPath={control_path}",
    ]
    if target.user:
        argv += ["-l", target.user]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.key:
        argv += ["-i", target.key, "-o", "IdentitiesOnly=yes"]
    return argv


def control_path(target: SshTarget, settings: SshSettings) -> str:
    """A short socket path (unix sockets are limited to ~100 bytes) unique to target and settings."""
    digest = hashlib.sha256(repr((target, settings.config_file)).encode()).hexdigest()[:16]
    return str(Path(settings.control_dir) / digest)


def remote_command(words: Sequence[str]) -> str:
    """One command line for the remote shell (ssh joins its arguments with spaces, unquoted)."""
    return shlex.join(words)


class SshConnection:
    """The master connection to one host, and everything that runs through it."""

    def __init__(self, host: str, target: SshTarget, settings: SshSettings) -> None:
        self.host = host
        self.target = target
        self.settings = settings
        self.control_path = control_path(target, settings)
        self._options = ssh_options(target, settings, self.control_path)
        self._master_seen = False  # the forwarded engine socket answered: the master is up

    # -- the master ------------------------------------------------------------------------

    def ensure_master(self) -> None:
        """Start the master connection unless one is already up.

        Raises:
            SshError: ssh could not connect or log in (the cause is ssh's own message).
        """
        if self._master_seen or self._master_alive():
            return
        with self._setup_lock():
            self._start_master()

    @contextlib.contextmanager
    def _setup_lock(self) -> Iterator[None]:
        """One setter-up at a time per control path, across threads (parallel probes) and fp processes."""
        import fcntl

        self._prepare_control_dir()
        with open(self.control_path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # holders only run commands that have timeouts
            yield

    def _start_master(self) -> None:
        """Start the master (the caller holds the setup lock) unless another process just did.

        Raises:
            SshError: the host's key file is missing or unreadable, or ssh failed.
        """
        if self._master_alive():
            return
        self._check_key()
        # A socket no master answers on (one killed, or a crashed machine) would make the new
        # master give up multiplexing and linger as a plain background connection.
        Path(self.control_path).unlink(missing_ok=True)
        log = Path(self.control_path + ".log")
        log.write_bytes(b"")
        master = ["-o", "ControlMaster=yes", "-o", f"ControlPersist={PERSIST_SECONDS}", "-o", "StreamLocalBindUnlink=yes", *self._cipher_options()]
        argv = [*self._options, *master, "-E", str(log), "-f", "-N", self.target.address]
        timeout = self.settings.connect_timeout + 5
        try:
            completed = proc.run(argv, timeout=timeout, what=f"ssh to {self.target}", capture=False)
        except proc.CommandTimedOut as e:
            raise SshError(self.host, str(self.target), f"no answer within {timeout:g} s") from e
        if completed.returncode != 0:
            cause = proc.last_lines(log.read_text(errors="replace"), 2) or f"ssh exited with status {completed.returncode}"
            raise SshError(self.host, str(self.target), cause, hint=_hint_for(cause, self.target))
        if not self._master_alive():
            stray = _stop_masters_of(self.control_path)
            cause = proc.last_lines(log.read_text(errors="replace"), 2) or "no master answers on its control socket"
            raise SshError(self.host, str(self.target), f"the shared connection did not start ({cause}; stopped {stray} stray ssh)")

    def _check_key(self) -> None:
        """A key named for the host must be there: ssh only warns about a missing one and logs
        in with another key, if it has one (a token like %d is ssh's to expand: left to it)."""
        key = self.target.key
        if not key or "%" in key:
            return
        path = Path(key).expanduser()
        if not (path.is_file() and os.access(path, os.R_OK)):
            problem = "is not a readable file" if path.exists() else "does not exist"
            raise SshError(
                self.host,
                str(self.target),
                f"its ssh key {key} {problem}",
                hint=f"fix ssh_key in [hosts.{self.host}] (or the machine's SSHKeyPath), or remove it to use ssh's own keys",
            )

    def _cipher_options(self) -> list[str]:
        """``-o Ciphers=...`` putting AES-GCM first, when ``cipher_preference`` says so (else none)."""
        if not machine_has_aes():
            return []
        effective, default = (
            _ciphers_of(proc.run([*argv, "-G", self.target.address], timeout=5, what="ssh -G")) for argv in (self._options, ["ssh", "-F", os.devnull])
        )
        preferred = cipher_preference(effective, default)
        return ["-o", f"Ciphers={preferred}"] if preferred else []

    def _master_alive(self) -> bool:
        if not Path(self.control_path).exists():
            return False
        completed = proc.run([*self._options, "-O", "check", self.target.address], timeout=5, what="ssh -O check")
        return completed.returncode == 0

    def _prepare_control_dir(self) -> None:
        folder = Path(self.settings.control_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = folder.stat()
        if status.st_uid != os.getuid() or status.st_mode & 0o077:
            raise FireplugError(f"{folder} must belong to you and be private (mode 700)", hint=f"remove it or chmod 700 {folder}")

    # -- commands ------------------------------------------------------------------------

    def client_argv(self) -> list[str]:
        """ssh's argv (without destination and command) for a client of the master."""
        return [*self._options, "-o", "ControlMaster=no"]

    def rsync_shell(self) -> str:
        """rsync's ``-e`` value: rsync splits it on spaces and honours quotes, as a shell would."""
        return shlex.join(self.client_argv())

    def run(self, words: Sequence[str], *, what: str, timeout: float = 60, input: bytes | None = None) -> proc.Completed:
        """Run ``words`` on the host through the master (``input`` on its stdin).

        Raises:
            SshError: the connection failed (ssh's status 255).
        """
        argv = [*self.client_argv(), self.target.address, "--", remote_command(words)]
        try:
            completed = proc.run(argv, timeout=timeout, what=f"{what} on host '{self.host}'", input=input, own_group=True)
        except proc.CommandTimedOut as e:
            raise SshError(self.host, str(self.target), f"{what} did not finish within {timeout:g} s") from e
        if completed.returncode == SSH_FAILED:
            cause = completed.stderr_tail() or "connection lost"
            raise SshError(self.host, str(self.target), cause, hint=_hint_for(cause, self.target))
        return completed

    # -- the engine ----------------------------------------------------------------------

    def engine_connector(self) -> Connector:
        """A connector to the host's engine through a unix socket forwarded by the master."""
        local = self.control_path + ".docker"
        dial = unix_connector(local)

        def connect(timeout: float | None) -> socket.socket:
            try:
                sock = dial(timeout)
            except (FileNotFoundError, ConnectionRefusedError):
                self._forward_engine(local)
                sock = dial(timeout)
            self._master_seen = True  # only a live master listens on the forwarded socket
            return sock

        return connect

    def _forward_engine(self, local: str) -> None:
        """(Re)create the forward: drop what a previous master left (a stale socket, an old registration) first."""
        with self._setup_lock():
            if _answers(local):
                return  # made meanwhile by another thread or process
            self._start_master()
            self._make_forward(local)

    def _make_forward(self, local: str) -> None:
        spec = f"{local}:{engine_endpoint(self._remote_facts().docker_host)}"
        self._control("cancel", spec)
        Path(local).unlink(missing_ok=True)
        completed = self._control("forward", spec)
        if completed.returncode != 0:
            raise SshError(self.host, str(self.target), f"could not forward the Docker socket: {completed.stderr_tail()}")
        deadline = time.monotonic() + 5
        while not Path(local).exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _control(self, action: str, forward: str) -> proc.Completed:
        """Ask the master to ``action`` (forward, cancel) the local forward ``forward`` (ssh -L syntax)."""
        return proc.run([*self.client_argv(), "-O", action, "-L", forward, self.target.address], timeout=10, what=f"ssh -O {action}")

    def forward_port(self, local_ip: str, port: int, remote_port: int, *, cancel: bool = False) -> None:
        """Listen on ``local_ip:port`` here and forward to the host's 127.0.0.1:``remote_port`` (through the master).

        Raises:
            SshError: the forward could not be set up (the port is in use here, say).
        """
        completed = self._control("cancel" if cancel else "forward", f"{local_ip}:{port}:127.0.0.1:{remote_port}")
        if completed.returncode != 0 and not cancel:
            raise SshError(self.host, str(self.target), f"could not forward port {local_ip}:{port} here: {completed.stderr_tail() or 'no reason given'}")

    def identity(self) -> tuple[int, int]:
        """The ssh user's uid and gid on the host (asked once, then kept beside the control socket)."""
        facts = _read_facts(self.control_path + ".facts") or self._remote_facts()
        return facts.uid, facts.gid

    def _remote_facts(self) -> RemoteFacts:
        """The host's DOCKER_HOST (what `docker` there would use) and the ssh user's ids, in one session."""
        script = 'printf "%s\\n%s\\n%s\\n" "${DOCKER_HOST:-}" "$(id -u)" "$(id -g)"'
        completed = self.run(["sh", "-c", script], what="reading DOCKER_HOST and ids", timeout=15)
        lines = completed.stdout.decode(errors="replace").split("\n")
        try:
            facts = RemoteFacts(lines[0].strip(), int(lines[1]), int(lines[2]))
        except (IndexError, ValueError) as e:
            raise SshError(self.host, str(self.target), f"unexpected answer from the host's shell: {completed.stdout[:80]!r}") from e
        _write_facts(self.control_path + ".facts", facts)
        return facts


def cipher_preference(effective: str, default: str) -> str:
    """The Ciphers list for a master on a machine with AES instructions: ssh's own list with
    AES-GCM first, which then costs a fraction of chacha20-poly1305's CPU per byte (a GiB over
    ssh took a quarter less CPU on the bench, on both ends). Only when nobody chose the ciphers:
    the list ssh would use for this host (``effective``, from ``ssh -G``) is its built-in
    ``default``; "" leaves ssh's choice as it is."""
    names = effective.split(",")
    fast = [name for name in FAST_CIPHERS if name in names]
    if not effective or effective != default or not fast or names[: len(fast)] == fast:
        return ""
    return ",".join([*fast, *(name for name in names if name not in fast)])


def cpu_has_aes(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo lists AES instructions (x86's ``flags``, Arm's ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and "aes" in value.split():
            return True
    return False


@functools.cache
def machine_has_aes() -> bool:
    if sys.platform == "darwin":
        return True  # every Mac since 2010 (Intel AES-NI, Apple silicon's AES)
    try:
        return cpu_has_aes(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return False


def _ciphers_of(completed: proc.Completed) -> str:
    """The ``ciphers`` line of ``ssh -G`` output ("" when there is none)."""
    for line in completed.stdout.decode(errors="replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "ciphers" and completed.returncode == 0:
            return value.strip()
    return ""


@dataclass(frozen=True)
class RemoteFacts:
    docker_host: str
    uid: int
    gid: int


def _stop_masters_of(control_path: str) -> int:
    """Stop our ssh processes started as masters on ``control_path`` that never took it up."""
    import psutil

    marker = f"ControlPath={control_path}"
    stopped = 0
    for process in psutil.process_iter(["name", "cmdline", "uids"]):
        info = process.info
        if info["name"] == "ssh" and info["uids"] and info["uids"].real == os.getuid() and marker in (info["cmdline"] or []) and "-N" in info["cmdline"]:
            with contextlib.suppress(psutil.Error):
                process.terminate()
                stopped += 1
    return stopped


def _answers(socket_path: str) -> bool:
    try:
        unix_connector(socket_path)(5).close()
    except OSError:
        return False
    return True


def _read_facts(path: str) -> RemoteFacts | None:
    try:
        docker_host, uid, gid = Path(path).read_text().split("\n")[:3]
        return RemoteFacts(docker_host, int(uid), int(gid))
    except (OSError, ValueError):
        return None


def _write_facts(path: str, facts: RemoteFacts) -> None:
    with contextlib.suppress(OSError):
        Path(path).write_text(f"{facts.docker_host}\n{facts.uid}\n{facts.gid}\n")


def engine_endpoint(docker_host: str) -> str:
    """What to forward to for a host's DOCKER_HOST value: a socket path or ``address:port``."""
    if not docker_host:
        return DEFAULT_REMOTE_DOCKER_SOCKET
    parsed = urllib.parse.urlsplit(docker_host)
    if parsed.scheme == "unix":
        return parsed.path
    if parsed.scheme == "tcp" and parsed.hostname:
        return f"{parsed.hostname}:{parsed.port or 2375}"
    return DEFAULT_REMOTE_DOCKER_SOCKET


def _hint_for(cause: str, target: SshTarget) -> str:
    lowered = cause.lower()
    manual = f"ssh{' -p ' + str(target.port) if target.port else ''} {target.user + '@' if target.user else ''}{target.address}"
    if "host key verification failed" in lowered:
        return f"connect once with `{manual}` to check and accept the host's key"
    if "permission denied" in lowered:
        return "check the host's ssh user and key (ssh_user / ssh_key), or load the key into ssh-agent"
    if "could not resolve" in lowered:
        return "check the host name, or add it to ~/.ssh/config"
    return ""
