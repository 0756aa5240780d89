"""A fake Docker engine on a unix socket: one thread accepts, ``respond`` decides what each
connection gets (tests of the engine client's handling of odd, cut or missing answers)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class FakeEngine:
    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self.url = f"unix://{path}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.respond(connection)

    def respond(self, connection: socket.socket) -> None:
        """Read the request and answer it; the connection is the method's to close (or keep)."""
        raise NotImplementedError

    def close(self) -> None:
        self.server.close()
