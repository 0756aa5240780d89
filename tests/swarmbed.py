"""The test bench's Docker Swarm: a manager engine on 127.0.0.1, a worker engine in a network
namespace of the bench's own, and a registry on 127.0.0.1 that both pull from.

    manager   dockerd on RUNTIME/swarm.sock (bridge fpbr4), `swarm init --advertise-addr 127.0.0.1`,
              the cluster port on 127.0.0.1:2377 only
    worker    dockerd in the namespace fpworker, started with nsenter (`ip netns exec` remounts
              /sys, and dockerd then finds no cgroups), joined as a worker
    registry  Debian's docker-registry on 127.0.0.1:REGISTRY_PORT, and another behind a
              password (htpasswd) on AUTH_REGISTRY

The namespace has a veth pair (10.231.5.1 here, 10.231.5.2 there) and no default route:
nothing in it reaches anything but this machine. Its 127.0.0.1 is sent to this machine's
127.0.0.1 (DNAT there to 10.231.5.1, DNAT here from 10.231.5.1 back to 127.0.0.1, with
route_localnet on both ends), so the worker joins 127.0.0.1:2377, pulls from the registry on
127.0.0.1 and its host-network tasks reach the bench's S3 on 127.0.0.1, as the manager's do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

from tests.testbed import (
    ENGINE_START_SECONDS,
    RUNTIME,
    STATE,
    engine_answers,
    ensure_bridge,
    ensure_iptables_rule,
    extra_dockerd_argv,
    load_standin_into,
    run,
    say,
    start_dockerd,
)

MANAGER_SOCKET = RUNTIME / "swarm.sock"
WORKER_SOCKET = RUNTIME / "worker.sock"
MANAGER_FLAGS = ["-H", f"unix://{MANAGER_SOCKET}"]
WORKER_FLAGS = ["-H", f"unix://{WORKER_SOCKET}"]
NAMESPACE = "fpworker"
HOST_VETH, WORKER_VETH = "fpveth0", "fpveth1"
HOST_ADDRESS, WORKER_ADDRESS = "10.231.5.1", "10.231.5.2"
REGISTRY_PORT = 22500
REGISTRY = f"127.0.0.1:{REGISTRY_PORT}"
REGISTRY_DIR = STATE / "registry"
AUTH_REGISTRY = "127.0.0.1:22501"  # the same, behind a password (htpasswd)
AUTH_USER, AUTH_PASSWORD = "fpregistry", "fpREGISTRYsecret0123456789"
WORKER_PIDFILE = RUNTIME / "worker.pid"
WORKER_LOG = STATE / "worker-dockerd.log"


def in_namespace(argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/var/run/netns/{NAMESPACE}", *argv]


def ensure_namespace() -> None:
    if NAMESPACE not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
        run(["ip", "netns", "add", NAMESPACE])
    if subprocess.run(["ip", "link", "show", HOST_VETH], capture_output=True).returncode != 0:
        run(["ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", WORKER_VETH, "netns", NAMESPACE])
        run(["ip", "addr", "add", f"{HOST_ADDRESS}/30", "dev", HOST_VETH])
        run(in_namespace(["ip", "addr", "add", f"{WORKER_ADDRESS}/30", "dev", WORKER_VETH]))
    run(["ip", "link", "set", HOST_VETH, "up"])
    run(in_namespace(["ip", "link", "set", WORKER_VETH, "up"]))
    run(in_namespace(["ip", "link", "set", "lo", "up"]))
    run(["sysctl", "-q", f"net.ipv4.conf.{HOST_VETH}.route_localnet=1"])
    run(in_namespace(["sysctl", "-q", "net.ipv4.conf.all.route_localnet=1"]))
    ensure_iptables_rule("nat", "PREROUTING", ["-i", HOST_VETH, "-d", HOST_ADDRESS, "-p", "tcp", "-j", "DNAT", "--to-destination", "127.0.0.1"])
    ensure_iptables_rule("filter", "INPUT", ["-i", HOST_VETH, "-j", "ACCEPT"])
    for chain, rule in (
        ("OUTPUT", ["-d", "127.0.0.1", "-p", "tcp", "-j", "DNAT", "--to-destination", HOST_ADDRESS]),
        ("POSTROUTING", ["-s", "127.0.0.0/8", "-o", WORKER_VETH, "-j", "SNAT", "--to-source", WORKER_ADDRESS]),  # (127.0.0.1 is no source on a wire)
    ):
        if subprocess.run(in_namespace(["iptables", "-t", "nat", "-C", chain, *rule]), capture_output=True).returncode != 0:
            run(in_namespace(["iptables", "-t", "nat", "-A", chain, *rule]))


def registry_answers(address: str) -> bool:
    """Its API root answers (200, or 401 behind a password)."""
    answer = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{address}/v2/"], capture_output=True, text=True)
    return answer.stdout in ("200", "401")


def ensure_registry(address: str, name: str, *, password: bool = False) -> None:
    if registry_answers(address):
        return
    folder = STATE / name
    folder.mkdir(parents=True, exist_ok=True)
    auth = ""
    if password:
        import crypt  # (bcrypt, as the registry wants; Python < 3.13 has it)

        (STATE / f"{name}.htpasswd").write_text(f"{AUTH_USER}:{crypt.crypt(AUTH_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
        auth = f"auth:\n  htpasswd:\n    realm: fp-bench\n    path: {STATE / f'{name}.htpasswd'}\n"
    config = STATE / f"{name}.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n{auth}")
    say(f"starting the registry on {address}{' (with a password)' if password else ''}")
    with open(STATE / f"{name}.log", "ab") as log:
        subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: registry_answers(address), "the registry")


def ensure_manager() -> None:
    ensure_bridge("fpbr4", "10.231.4.1/24")
    start_dockerd("swarm manager", extra_dockerd_argv("swarm", "fpbr4", [f"unix://{MANAGER_SOCKET}"], []), MANAGER_FLAGS, STATE / "swarm-dockerd.log")
    load_standin_into("swarm manager", MANAGER_FLAGS)
    if swarm_state(MANAGER_FLAGS) != "active":
        run(["docker", *MANAGER_FLAGS, "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377"], stdout=subprocess.DEVNULL)


def worker_argv() -> list[str]:
    return in_namespace(
        [
            "dockerd",
            f"--host=unix://{WORKER_SOCKET}",
            f"--data-root={STATE / 'engines' / 'worker'}",
            f"--exec-root={RUNTIME / 'worker'}",
            f"--pidfile={WORKER_PIDFILE}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
        ]
    )


def start_worker() -> None:
    start_dockerd("swarm worker", worker_argv(), WORKER_FLAGS, WORKER_LOG)


def kill_worker() -> None:
    """A node's crash: every process of the worker (its engine, containerd, the tasks' commands:
    all live in its network namespace) gone at once. (Killing the engine alone leaves the tasks
    running under containerd, and their runs finish and publish as if nothing happened.)"""
    pids = subprocess.run(["ip", "netns", "pids", NAMESPACE], check=True, capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    wait_for(lambda: not engine_answers(*WORKER_FLAGS), "the worker's engine to go")


def ensure_worker() -> None:
    ensure_namespace()
    start_worker()
    if swarm_state(WORKER_FLAGS) == "error":  # a join that failed (the manager was not there yet)
        run(["docker", *WORKER_FLAGS, "swarm", "leave", "--force"], stdout=subprocess.DEVNULL)
    if swarm_state(WORKER_FLAGS) not in ("active", "pending"):  # (pending: a join goes on in the background)
        token = subprocess.run(["docker", *MANAGER_FLAGS, "swarm", "join-token", "-q", "worker"], check=True, capture_output=True, text=True).stdout.strip()
        run(["docker", *WORKER_FLAGS, "swarm", "join", "--token", token, "--advertise-addr", WORKER_ADDRESS, "127.0.0.1:2377"], stdout=subprocess.DEVNULL)
    wait_for(lambda: nodes_ready() >= 2, "both swarm nodes to be ready")


def swarm_state(flags: list[str]) -> str:
    answer = subprocess.run(["docker", *flags, "info", "--format", "{{json .Swarm.LocalNodeState}}"], capture_output=True, text=True)
    return json.loads(answer.stdout) if answer.returncode == 0 and answer.stdout.strip() else ""


def nodes_ready() -> int:
    listed = subprocess.run(["docker", *MANAGER_FLAGS, "node", "ls", "--format", "{{.Status}}"], capture_output=True, text=True).stdout.split()
    return listed.count("Ready")


def wait_for(done: object, what: str) -> None:
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"testbed: waited {ENGINE_START_SECONDS} s for {what}")
        time.sleep(0.5)


def up() -> None:
    ensure_registry(REGISTRY, "registry")
    ensure_registry(AUTH_REGISTRY, "auth-registry", password=True)
    ensure_manager()
    ensure_worker()


def node_ids() -> dict[str, str]:
    """Hostname -> node id isn't unique here (both nodes share this machine's name): role -> id."""
    listed = subprocess.run(
        ["docker", *MANAGER_FLAGS, "node", "ls", "--format", "{{.ID}} {{.ManagerStatus}}"], check=True, capture_output=True, text=True
    ).stdout
    return {("manager" if rest.strip() else "worker"): node for node, _, rest in (line.partition(" ") for line in listed.splitlines())}
