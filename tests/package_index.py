"""A real package index on 127.0.0.1: pypiserver over the wheels the test bench fetched
(tests/testbed.py), with no fallback to PyPI; optionally behind a password."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from tests import testbed

PYPI_SERVER = Path(sys.executable).with_name("pypi-server")
USER = "fpindex"


@dataclass
class PackageIndex:
    folder: Path  # where its log and password file go
    password: str = ""  # "": open; else downloads and listings need USER and it
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The simple index's URL, with the credentials when there are some."""
        credentials = f"{USER}:{self.password}@" if self.password else ""
        return f"http://{credentials}127.0.0.1:{self.port}/simple/"

    @property
    def log(self) -> Path:
        return self.folder / f"pypiserver-{self.port}.log"

    def start(self) -> PackageIndex:
        if not PYPI_SERVER.exists():
            raise RuntimeError("pypi-server is not installed in the test venv; run the tests with tests/run")
        self.port = self.port or testbed.free_port()
        auth = [".", "-P", "."]
        if self.password:
            with warnings.catch_warnings():  # passlib imports crypt, deprecated since 3.11
                warnings.simplefilter("ignore", DeprecationWarning)
                from passlib.apache import HtpasswdFile

            passwords = HtpasswdFile(str(self.folder / f"htpasswd-{self.port}"), new=True)
            passwords.set_password(USER, self.password)
            passwords.save()
            auth = ["download,list,update", "-P", str(self.folder / f"htpasswd-{self.port}")]
        argv = [str(PYPI_SERVER), "run", "-i", "127.0.0.1", "-p", str(self.port), "--disable-fallback", "-a", *auth, str(testbed.WHEELS)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while not testbed.port_answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pypiserver did not start: {self.log.read_text(errors='replace')[-500:]}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
