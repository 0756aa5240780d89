"""The test bench: real Docker engines, a real sshd, and a stand-in for the base's FROM image.

    python -m tests.testbed up

No registry is reachable here, so the image Dockerfile.base starts FROM (its ARG default) is
made with `debootstrap --variant=minbase` from the machine's own Debian mirror and
`docker import`ed under exactly that name; fp then builds its base image on it through its
normal first-use path. Everything is reused when present: the engine if it answers, the image
if the engine has it, the root filesystem tarball from /var/cache/fireplug-testbed.

Remote hosts, all on 127.0.0.1 (tests never aim traffic anywhere else):
- "primary": sshd on SSH_PORT in front of the main engine (/var/run/docker.sock), for SSH_USER;
- "second": a second dockerd (own socket, data root, exec root, pidfile and bridge) behind
  its own sshd on SECOND_SSH_PORT, whose sessions get DOCKER_HOST pointing at it;
- "tls": a third dockerd on TLS_PORT with openssl-made CA, server and client certificates,
  described by a docker-machine store (MACHINE_STORE, ConfigVersion 3) whose ssh settings
  reach this machine through the primary sshd.
Each extra engine starts with no images; the stand-in FROM image is loaded into it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
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

STATE = Path(os.environ.get("FP_TESTBED_STATE", "/var/lib/fireplug-testbed"))
RUNTIME = Path("/run/fireplug-testbed")
SSH_DIR = STATE / "ssh"
CLIENT_KEY = SSH_DIR / "id_ed25519"
SSH_PORT = 22022
SECOND_SSH_PORT = 22023
NO_RSYNC_SSH_PORT = 22024  # in front of the main engine, with a PATH that has no rsync
NO_RSYNC_BIN = STATE / "no-rsync-bin"
TLS_PORT = 22376
SECOND_SOCKET = RUNTIME / "second.sock"
TLS_ADMIN_SOCKET = RUNTIME / "tls.sock"
CERTS = STATE / "tls"
MACHINE_STORE = STATE / "machine"
MACHINE_NAME = "fptls"
CLOSED_PORT = 9  # nothing listens on 127.0.0.1:9 (discard): an unreachable host
SSH_USER = "fpuser"  # a plain user in the docker group, with /bin/sh as its shell
WHEELS = STATE / "wheels"  # the package index's wheels (tests/integration/conftest.py serves them)
# For CPython 3.11 on x86_64, the base image's Python: small pure-Python packages (ten of them for
# bench/deps.py), a numpy other than Debian's 1.24, and uv (the installer bench/deps.py compares).
INDEX_PACKAGES = (
    "six==1.16.0",
    "numpy==1.26.4",
    "tqdm==4.66.5",
    "joblib==1.4.2",
    "threadpoolctl==3.5.0",
    "attrs==24.2.0",
    "idna==3.10",
    "packaging==24.1",
    "click==8.1.7",
    "tabulate==0.9.0",
    "toolz==0.12.1",
    "more-itertools==10.5.0",
    "uv==0.4.30",
)
HOST_DATA = STATE / "host-data"  # data roots of the remote hosts live under here, writable by SSH_USER


def say(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1 (for a test's own server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_answers(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def engine_answers(*docker_flags: str) -> bool:
    return subprocess.run(["docker", *docker_flags, "version"], capture_output=True).returncode == 0


def start_dockerd(name: str, argv: list[str], docker_flags: list[str], log_path: Path) -> None:
    """Start ``argv`` (a dockerd) unless the engine ``docker_flags`` address already answers."""
    if engine_answers(*docker_flags):
        say(f"{name} engine already running")
        return
    say(f"starting the {name} dockerd (log: {log_path})")
    with open(log_path, "ab") as log:
        subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while not engine_answers(*docker_flags):
        if time.monotonic() > deadline:
            raise SystemExit(f"testbed: the {name} dockerd did not answer within {ENGINE_START_SECONDS} s; see {log_path}")
        time.sleep(0.5)
    say(f"{name} engine is up")


def ensure_engine() -> None:
    start_dockerd("main", ["dockerd", "--host", f"unix://{SOCKET}"], ["-H", f"unix://{SOCKET}"], DOCKERD_LOG)


def ensure_bridge(name: str, cidr: str) -> None:
    """A bridge of the extra engine's own: sharing docker0 (or --bridge none) breaks the main engine.

    The extra engines run with --iptables=false (two daemons rewriting the same chains fight),
    so the bridge gets the two rules its builds need to reach Debian's mirror, as docker0 has.
    """
    if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
        run(["ip", "link", "add", "name", name, "type", "bridge"])
        run(["ip", "addr", "add", cidr, "dev", name])
    run(["ip", "link", "set", name, "up"])
    network = cidr.rsplit(".", 1)[0] + ".0/" + cidr.split("/")[1]
    ensure_iptables_rule("nat", "POSTROUTING", ["-s", network, "!", "-o", name, "-j", "MASQUERADE"])
    for direction in ("-i", "-o"):
        ensure_iptables_rule("filter", "FORWARD", [direction, name, "-j", "ACCEPT"])


def ensure_iptables_rule(table: str, chain: str, rule: list[str]) -> None:
    if subprocess.run(["iptables", "-t", table, "-C", chain, *rule], capture_output=True).returncode != 0:
        run(["iptables", "-t", table, "-I", chain, "1", *rule])


def extra_dockerd_argv(name: str, bridge: str, hosts: list[str], tls: list[str]) -> list[str]:
    return [
        "dockerd",
        *[f"--host={host}" for host in hosts],
        *tls,
        f"--data-root={STATE / 'engines' / name}",
        f"--exec-root={RUNTIME / name}",
        f"--pidfile={RUNTIME / name}.pid",
        f"--bridge={bridge}",
        "--iptables=false",
        "--ip-masq=false",
    ]


def ensure_second_engine() -> None:
    ensure_bridge("fpbr2", "10.231.2.1/24")
    flags = ["-H", f"unix://{SECOND_SOCKET}"]
    start_dockerd("second", extra_dockerd_argv("second", "fpbr2", [f"unix://{SECOND_SOCKET}"], []), flags, STATE / "second-dockerd.log")
    load_standin_into("second", flags)


def tls_client_flags() -> list[str]:
    return [
        "--tlsverify",
        f"--tlscacert={CERTS / 'ca.pem'}",
        f"--tlscert={CERTS / 'cert.pem'}",
        f"--tlskey={CERTS / 'key.pem'}",
        "-H",
        f"tcp://127.0.0.1:{TLS_PORT}",
    ]


def ensure_tls_engine() -> None:
    ensure_certs()
    ensure_bridge("fpbr3", "10.231.3.1/24")
    tls = ["--tlsverify", f"--tlscacert={CERTS / 'ca.pem'}", f"--tlscert={CERTS / 'server.pem'}", f"--tlskey={CERTS / 'server-key.pem'}"]
    hosts = [f"tcp://127.0.0.1:{TLS_PORT}", f"unix://{TLS_ADMIN_SOCKET}"]
    start_dockerd("tls", extra_dockerd_argv("tls", "fpbr3", hosts, tls), tls_client_flags(), STATE / "tls-dockerd.log")
    load_standin_into("tls", tls_client_flags())
    write_machine_store()


def load_standin_into(name: str, docker_flags: list[str]) -> None:
    image = base_from_image()
    if subprocess.run(["docker", *docker_flags, "image", "inspect", image], capture_output=True).returncode == 0:
        return
    say(f"loading {image} into the {name} engine")
    saved = subprocess.Popen(["docker", "-H", f"unix://{SOCKET}", "save", image], stdout=subprocess.PIPE)
    run(["docker", *docker_flags, "load", "-q"], stdin=saved.stdout, stdout=subprocess.DEVNULL)
    if saved.wait() != 0:
        raise SystemExit(f"testbed: docker save {image} failed")


def ensure_certs() -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    if (CERTS / "key.pem").exists():
        return
    say("making TLS certificates with openssl")
    CERTS.mkdir(parents=True, exist_ok=True)

    def openssl(*argv: str) -> None:
        run(["openssl", *argv], cwd=CERTS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=fireplug test CA", "-keyout", "ca-key.pem", "-out", "ca.pem")
    for name, usage, extra in (("server", "serverAuth", ["subjectAltName=IP:127.0.0.1,DNS:localhost"]), ("client", "clientAuth", [])):
        key, cert = ("server-key.pem", "server.pem") if name == "server" else ("key.pem", "cert.pem")
        (CERTS / f"{name}.ext").write_text("\n".join([*extra, f"extendedKeyUsage={usage}", ""]))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", f"{name}.csr")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            f"{name}.ext",
            "-out",
            cert,
        )


def write_machine_store() -> None:
    """A docker-machine store (ConfigVersion 3, generic driver) describing the TLS engine."""
    folder = MACHINE_STORE / "machines" / MACHINE_NAME
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        shutil.copyfile(CERTS / name, folder / name)
    shutil.copyfile(CLIENT_KEY, folder / "id_rsa")
    (folder / "id_rsa").chmod(0o600)
    config = {
        "ConfigVersion": 3,
        "Driver": {
            "IPAddress": "127.0.0.1",
            "MachineName": MACHINE_NAME,
            "SSHUser": SSH_USER,
            "SSHPort": SSH_PORT,
            "SSHKeyPath": str(folder / "id_rsa"),
            "StorePath": str(MACHINE_STORE),
            "SwarmMaster": False,
            "SwarmHost": "",
            "SwarmDiscovery": "",
            "EnginePort": TLS_PORT,
            "SSHKey": "",
        },
        "DriverName": "generic",
        "HostOptions": {
            "Driver": "",
            "Memory": 0,
            "Disk": 0,
            "EngineOptions": {"TlsVerify": True, "InstallURL": "https://get.docker.com"},
            "AuthOptions": {
                "CertDir": str(MACHINE_STORE / "certs"),
                "CaCertPath": str(folder / "ca.pem"),
                "ClientKeyPath": str(folder / "key.pem"),
                "ClientCertPath": str(folder / "cert.pem"),
                "StorePath": str(folder),
            },
        },
        "Name": MACHINE_NAME,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=4))


def ensure_ssh_user() -> None:
    """The user fp logs in as: not root (as on real hosts), in the docker group, no rc files to run."""
    if subprocess.run(["getent", "group", "docker"], capture_output=True).returncode != 0:
        run(["groupadd", "--system", "docker"])
    if subprocess.run(["getent", "passwd", SSH_USER], capture_output=True).returncode != 0:
        run(["useradd", "--create-home", "--shell", "/bin/sh", "--groups", "docker", SSH_USER])
    run(["usermod", "--password", "*", SSH_USER])  # "!" (locked) would make sshd without PAM refuse it
    HOST_DATA.mkdir(parents=True, exist_ok=True)
    shutil.chown(HOST_DATA, SSH_USER, SSH_USER)


def ensure_ssh_keys() -> None:
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    for key in (CLIENT_KEY, SSH_DIR / "host_ed25519"):
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fireplug-testbed", "-f", str(key)])
    authorized = SSH_DIR / "authorized_keys"
    authorized.write_text(CLIENT_KEY.with_suffix(".pub").read_text())
    authorized.chmod(0o644)  # read by sshd as the logging-in user


def ensure_no_rsync_bin() -> None:
    """The commands a host without rsync still has: a shell, coreutils, findutils (sessions of
    NO_RSYNC_SSH_PORT see only these)."""
    NO_RSYNC_BIN.mkdir(parents=True, exist_ok=True)
    for tool in ("sh", "mkdir", "printf", "test", "cat", "id", "dirname", "df", "date", "find", "mv", "rm", "xargs", "sha256sum", "mktemp", "cut"):
        link = NO_RSYNC_BIN / tool
        if not link.exists():
            link.symlink_to(shutil.which(tool) or f"/bin/{tool}")


def ensure_sshd(port: int, docker_host: str = "", path: str = "") -> None:
    """An sshd on 127.0.0.1:``port`` accepting CLIENT_KEY; ``docker_host`` and ``path`` set in its sessions."""
    if subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.strip():
        return
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    config = SSH_DIR / f"sshd-{port}.conf"
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {SSH_DIR / 'host_ed25519'}",
        f"PidFile {RUNTIME / f'sshd-{port}.pid'}",
        f"AuthorizedKeysFile {SSH_DIR / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "MaxSessions 200",
        "MaxStartups 100:30:200",
    ]
    settings = [f"DOCKER_HOST={docker_host}"] * bool(docker_host) + [f"PATH={path}"] * bool(path)
    if settings:
        lines.append(f"SetEnv {' '.join(settings)}")
    config.write_text("\n".join(lines) + "\n")
    say(f"starting sshd on 127.0.0.1:{port}")
    run(["/usr/sbin/sshd", "-f", str(config), "-E", str(STATE / f"sshd-{port}.log")])


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


def ensure_wheels() -> None:
    """Fetch the index's wheels from PyPI once (the host's pip; containers never reach PyPI)."""
    done = WHEELS / ".complete"
    if done.exists() and done.read_text() == "\n".join(INDEX_PACKAGES):
        return
    say(f"fetching {len(INDEX_PACKAGES)} wheels for the package index into {WHEELS}")
    WHEELS.mkdir(parents=True, exist_ok=True)
    target = ["--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", *target, "-d", str(WHEELS), *INDEX_PACKAGES])
    done.write_text("\n".join(INDEX_PACKAGES))


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    RUNTIME.mkdir(parents=True, exist_ok=True)
    ensure_engine()
    ensure_standin(base_from_image())
    ensure_ssh_user()
    ensure_ssh_keys()
    ensure_sshd(SSH_PORT)
    ensure_second_engine()
    ensure_sshd(SECOND_SSH_PORT, f"unix://{SECOND_SOCKET}")
    ensure_no_rsync_bin()
    ensure_sshd(NO_RSYNC_SSH_PORT, path=str(NO_RSYNC_BIN))
    ensure_tls_engine()
    ensure_wheels()
    from tests import swarmbed  # (it builds on this module)

    swarmbed.up()


if __name__ == "__main__":
    if sys.argv[1:] != ["up"]:
        raise SystemExit("usage: python -m tests.testbed up")
    up()
