"""The test bench: a real Docker engine on this machine and a stand-in for the base's FROM image.

    python -m tests.testbed up

No registry is reachable here, so the image Dockerfile.base starts FROM (its ARG default) is
made with `debootstrap --variant=minbase` from the machine's own Debian mirror and
`docker import`ed under exactly that name; fp then builds its base image on it through its
normal first-use path. Everything is reused when present: the engine if it answers, the image
if the engine has it, the root filesystem tarball from /var/cache/fireplug-testbed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOCKET = "/var/run/docker.sock"
CACHE = Path(os.environ.get("FP_TESTBED_CACHE", "/var/cache/fireplug-testbed"))
DOCKERD_LOG = Path("/var/log/fireplug-testbed-dockerd.log")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ENGINE_START_SECONDS = 60


def say(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def engine_answers() -> bool:
    return subprocess.run(["docker", "-H", f"unix://{SOCKET}", "version"], capture_output=True).returncode == 0


def ensure_engine() -> None:
    if engine_answers():
        say("engine already running")
        return
    say(f"starting dockerd (log: {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as log:
        subprocess.Popen(["dockerd", "--host", f"unix://{SOCKET}"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while not engine_answers():
        if time.monotonic() > deadline:
            raise SystemExit(f"testbed: dockerd did not answer within {ENGINE_START_SECONDS} s; see {DOCKERD_LOG}")
        time.sleep(0.5)
    say("engine is up")


def base_from_image() -> str:
    """The FROM image Dockerfile.base uses by default (its ARG BASE_IMAGE)."""
    text = (REPO / "Dockerfile.base").read_text()
    found = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.MULTILINE)
    if not found:
        raise SystemExit("testbed: Dockerfile.base has no ARG BASE_IMAGE default")
    return found.group(1)


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        found = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", sources.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        found = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)/?\s", legacy.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    return DEFAULT_MIRROR


def ensure_standin(image: str) -> None:
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
        say(f"stand-in {image} already loaded")
        return
    suite = image.split(":")[1].split("-")[0] if ":" in image else "bookworm"
    tarball = CACHE / f"{suite}-minbase.tar"
    if not tarball.exists():
        make_rootfs_tarball(suite, tarball)
    say(f"importing {tarball} as {image}")
    run(["docker", "import", "--change", 'CMD ["bash"]', str(tarball), image], stdout=subprocess.DEVNULL)


def make_rootfs_tarball(suite: str, tarball: Path) -> None:
    mirror = debian_mirror()
    say(f"debootstrap --variant=minbase {suite} from {mirror} (about a minute)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="fp-rootfs-"))
    try:
        run(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror], stdout=subprocess.DEVNULL)
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."])
        partial.replace(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def up() -> None:
    ensure_engine()
    ensure_standin(base_from_image())


if __name__ == "__main__":
    if sys.argv[1:] != ["up"]:
        raise SystemExit("usage: python -m tests.testbed up")
    up()
