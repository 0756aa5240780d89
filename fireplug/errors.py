"""The exception tree and fp's own exit codes.

Only ``cli.main`` turns these into messages and exit codes. The remote command's
exit code is never one of these: it passes through unchanged.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fireplug.sync.report import SyncReport

EXIT_FAILURE = 125  # fp itself failed (docker run's convention)
EXIT_USAGE = 2  # bad command line
EXIT_NOT_FOUND = 127  # the shell's status for a command that is not there, kept by fp
# An interruption fp had to act on exits 128 + the signal's number (130 for Ctrl-C).


class FireplugError(Exception):
    """Root of fp's own failures: a one-line message saying what failed and what to do."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class UsageError(FireplugError):
    """The command line itself is wrong (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigError(FireplugError):
    """A configuration file or setting is invalid."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None, key: str = "", hint: str = "") -> None:
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(f"{where}{message}", hint=hint)
        self.path = path
        self.line = line
        self.key = key


class ProjectError(FireplugError):
    """The project folder cannot be used as it is (unreadable file, unsafe root...)."""


class EngineUnreachable(FireplugError):
    """No Docker engine answers at the host's URL."""

    def __init__(self, host: str, url: str, cause: str, *, hint: str = "") -> None:
        super().__init__(f"cannot reach the Docker engine of host '{host}' at {url}: {cause}", hint=hint)
        self.host = host
        self.url = url
        self.cause = cause


class ConnectionLost(FireplugError):
    """The connection to a host broke, or its engine stalled, while a container ran there.

    The container is left alone: it may still be running, and its results can be collected later.
    """

    def __init__(self, host: str, container: str, cause: str, *, run_id: str = "", in_place: bool = False) -> None:
        run = run_id or container
        follow = f"follow it with: fp logs -f {run}"
        collect = f"{follow} (it writes to the data folder in place)" if in_place else f"{follow}; once it is done, bring its results back with: fp pull {run}"
        super().__init__(
            f"lost the connection to host '{host}' while the command ran ({cause}); the run goes on there (container {container}), fp did not stop it",
            hint=collect,
        )
        self.host = host
        self.container = container
        self.cause = cause
        self.run_id = run_id


class EngineError(FireplugError):
    """The engine answered a request with an error."""

    def __init__(self, host: str, status: int, detail: str, *, action: str = "") -> None:
        doing = f" while {action}" if action else ""
        super().__init__(f"Docker engine of host '{host}' failed{doing}: {detail} (HTTP {status})")
        self.host = host
        self.status = status
        self.detail = detail


class BaseImageMissing(FireplugError):
    """The image that the base is built FROM is neither on the host nor pullable."""

    def __init__(self, host: str, image: str, cause: str) -> None:
        super().__init__(
            f"base image {image} is not on host '{host}' and could not be pulled: {cause}",
            hint=f"load it there (docker pull {image}, or docker load) or set build.base_image in fireplug.toml",
        )
        self.host = host
        self.image = image


class BuildError(FireplugError):
    """An image build failed; carries the failing step's output tail."""

    def __init__(self, host: str, image: str, detail: str, output_tail: tuple[str, ...] = ()) -> None:
        super().__init__(f"building {image} on host '{host}' failed: {detail}")
        self.host = host
        self.image = image
        self.detail = detail
        self.output_tail = output_tail


class ContextChanged(FireplugError):
    """A project file changed while its build context was being sent."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} changed while it was being sent to the engine", hint="run fp again")
        self.path = path


class Interrupted(KeyboardInterrupt):
    """A signal fp acts on like Ctrl-C (SIGINT, SIGTERM, SIGHUP): unwind, removing anything half-made."""

    def __init__(self, signum: int, *, left: str = "") -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.left = left  # what could not be cleaned up, if anything


class S3Error(FireplugError):
    """S3 refused a request or could not be reached (credentials, bucket, endpoint)."""


class SwarmRefused(FireplugError):
    """A request a swarm host cannot serve (no S3 staging, a project image without fp's base...)."""


class ToolMissing(FireplugError):
    """A program fp needs is not installed on this machine."""

    def __init__(self, tool: str) -> None:
        super().__init__(f"'{tool}' is not installed on this machine", hint=f"install it (Debian/Ubuntu: apt-get install {tool})")
        self.tool = tool


class CommandTimedOut(FireplugError):
    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} did not finish within {seconds:g} s")
        self.seconds = seconds


class SshError(FireplugError):
    """ssh could not reach or log in to a host."""

    def __init__(self, host: str, target: str, cause: str, *, hint: str = "") -> None:
        super().__init__(f"ssh to host '{host}' ({target}) failed: {cause}", hint=hint)
        self.host = host
        self.cause = cause


class TlsSetupError(FireplugError):
    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"TLS settings of host '{host}' are unusable: {detail}", hint="check its ca.pem, cert.pem and key.pem")


class CommandNotFound(FireplugError):
    exit_code = EXIT_NOT_FOUND

    def __init__(self, name: str, image: str, path: str) -> None:
        super().__init__(
            f"command '{name}' is not in the image {image} (looked in its PATH: {path})",
            hint="check the spelling, or install it in the image (its Dockerfile, or fp's base image's packages)",
        )


class RegistryError(FireplugError):
    """A push failed, or the registry's credentials could not be read."""


class SyncError(FireplugError):
    def __init__(self, host: str, detail: str, *, hint: str = "", report: SyncReport | None = None) -> None:
        super().__init__(f"syncing data with host '{host}' failed: {detail}", hint=hint)
        self.host = host
        self.report = report


class SyncInterrupted(Interrupted):
    """A signal stopped a sync; ``story`` says how far it got (the transport is already stopped)."""

    def __init__(self, host: str, story: str, cause: KeyboardInterrupt) -> None:
        super().__init__(cause.signum if isinstance(cause, Interrupted) else 2)
        self.host = host
        self.story = story


class HelperFailed(SyncError):
    def __init__(self, host: str, status: int, detail: str) -> None:
        super().__init__(host, f"the sync helper exited with status {status}: {detail}")
        self.status = status


class BackendError(FireplugError):
    """A host of a kind no backend serves."""


class NodeLost(FireplugError):
    """The node running a run's task went down (the swarm does not start a job's task again)."""

    def __init__(self, host: str, node: str) -> None:
        super().__init__(f"node {node[:12]} of swarm '{host}' went down while it ran the task")
        self.node = node


class TaskRejected(FireplugError):
    """The swarm could not start the task (an image it could not pull, a mount, a resource)."""


class NotStarted(Exception):
    """The map stopped between a run's creation and its start (it goes back to the queue)."""


class Withdrawn(Exception):
    """The map stopped before any worker took the run: it did not run."""
