"""Runs on the bench's Docker Swarm (tests/swarmbed.py): a manager on 127.0.0.1 and a worker in a
network namespace of the bench's own, a registry on 127.0.0.1 both pull from, and moto as S3 (the
tasks use host networking: the worker's 127.0.0.1 leads to this machine's)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests import swarmbed
from tests.integration.conftest import Project, RemoteBench, containers_of, fp_command, run_fp, start_in_group, wait_for
from tests.integration.test_runs import started_id
from tests.integration.test_s3 import BUCKET, SECRET, S3Server, s3  # noqa: F401  (the s3 fixture)

pytestmark = pytest.mark.engine  # needs the test bench (tests/run sets it up)


def swarm(*argv: str) -> str:
    return subprocess.run(["docker", *swarmbed.MANAGER_FLAGS, *argv], check=True, capture_output=True, text=True).stdout


def services_of(project: Project) -> list[str]:
    return swarm("service", "ls", "-q", "--filter", f"label=io.fireplug.project={project.name}").split()


@pytest.fixture
def lab(project: Project, remote: RemoteBench, s3: S3Server) -> Iterator[str]:  # noqa: F811
    """The swarm as host 'lab', and the project staged through moto; no service or secret is left."""
    if not swarmbed.engine_answers(*swarmbed.MANAGER_FLAGS) or swarmbed.nodes_ready() < 2:
        pytest.fail("the bench's swarm is not up with both nodes; run the tests with tests/run")
    remote.add_hosts(f'[hosts.lab]\nurl = "unix://{swarmbed.MANAGER_SOCKET}"\nkind = "swarm"\nregistry = "{swarmbed.REGISTRY}/fptest"\n')
    project.write(
        "fireplug.toml",
        f'[project]\nname = "{project.name}"\n\n[sync]\nmode = "s3"\ns3 = "s3://{BUCKET}/stage"\nendpoint = "{s3.endpoint}"\nregion = "us-east-1"\n\n'
        '[run]\nnetwork = "host"\n',
    )
    yield "lab"
    # the swarm removes the containers of a removed service's tasks by itself, soon after
    wait_for(lambda: not containers_of(project.name, "swarm"), "the swarm to remove its task containers", timeout=60)
    left = services_of(project)
    for service in left:
        subprocess.run(["docker", *swarmbed.MANAGER_FLAGS, "service", "rm", service], capture_output=True)
    secrets = swarm("secret", "ls", "-q", "--filter", "label=io.fireplug.secret-of").split()
    assert not left, f"fp left services behind: {left}"
    assert not [secret for secret in secrets if project.name in swarm("secret", "inspect", secret)], "fp left a job secret behind"


def test_a_run_shows_its_output_exits_with_its_status_and_its_results_come_back_byte_identical(project: Project, lab: str) -> None:
    payload = os.urandom(3_000_000)
    project.write("data/in.bin", payload)
    project.write(
        "work.py",
        "import sys\ndata = open('data/in.bin', 'rb').read()\nopen('data/out/rev.bin', 'wb').write(data[::-1])\nprint('read', len(data))\nsys.exit(7)\n",
    )
    (project.root / "data/out").mkdir()
    result = run_fp(project.root, "--host", lab, "python", "work.py")
    assert result.returncode == 7, result.stderr.decode()
    assert b"read 3000000" in result.stdout
    assert hashlib.sha256((project.root / "data/out/rev.bin").read_bytes()).digest() == hashlib.sha256(payload[::-1]).digest()
    assert (project.root / "data/in.bin").read_bytes() == payload
    assert services_of(project) == []


def test_a_swarm_run_without_s3_staging_is_refused_in_one_line(project: Project, lab: str) -> None:
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n')
    result = run_fp(project.root, "--host", lab, "true")
    err = result.stderr.decode()
    assert result.returncode == 125 and "Traceback" not in err
    assert "is a swarm" in err and "S3" in err and len([line for line in err.splitlines() if line.startswith("fp: error")]) == 1
    assert services_of(project) == []


def test_a_map_runs_only_what_the_reservations_fit_and_lands_on_both_nodes(project: Project, lab: str, s3: S3Server) -> None:  # noqa: F811
    project.write(
        "fold.py",
        "import json, os, sys, time\nstart = time.time()\ntime.sleep(3)\n"
        "node = 'worker' if 'fpveth1' in os.listdir('/sys/class/net') else 'manager'\n"
        "json.dump({'start': start, 'end': time.time(), 'node': node}, open(f'data/fold{sys.argv[1]}.json', 'w'))\n",
    )
    # each node has 2 CPUs: with 1.5 reserved per run, one run fits on each, two at once in all
    result = run_fp(project.root, "map", "--hosts", lab, "-p", "fold=0,1,2,3,4,5", "--cpus", "1.5", "--", "python", "fold.py", "{fold}", timeout=600)
    assert result.returncode == 0, result.stderr.decode()
    runs = [json.loads((project.root / f"data/fold{index}.json").read_text()) for index in range(6)]
    assert {run["node"] for run in runs} == {"manager", "worker"}
    moments = sorted([(run["start"], 1) for run in runs] + [(run["end"], -1) for run in runs])
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    assert peak <= 2, runs
    assert "6 of 6 runs succeeded" in result.stderr.decode()
    maps = f"stage/{project.key}/maps/"
    assert [key.rsplit("/", 1)[-1] for key in s3.keys_under(maps)] == ["done"], "the map's queue is left in the bucket"
    assert run_fp(project.root, "s3", "gc", "--min-age", "0").returncode == 0
    assert s3.keys_under(maps) == []


def test_a_failing_run_is_not_started_again_and_ps_logs_pull_gc_work_on_it(project: Project, lab: str) -> None:
    run_id = started_id(run_fp(project.root, "--host", lab, "-d", "sh", "-c", "echo tried >> data/tries.txt; echo failing; exit 3"))
    [service] = services_of(project)
    wait_for(lambda: "Failed" in swarm("service", "ps", service, "--format", "{{.CurrentState}}"), "the task to fail", timeout=120)
    time.sleep(5)  # room for a restart, were there one
    assert len(swarm("service", "ps", service, "-q").split()) == 1, "the swarm started it again"
    listed = json.loads(run_fp(project.root, "ps", "--all", "--host", lab, "--json").stdout)
    [mine] = [run for run in listed if run["id"] == run_id]
    assert mine["state"] == "exited" and mine["exit_code"] == 3
    assert b"failing" in run_fp(project.root, "logs", run_id).stdout
    removed = run_fp(project.root, "gc", "--host", lab)
    assert removed.returncode == 0 and f"removing service {run_id}".encode() in removed.stderr
    assert services_of(project) == []
    assert b"failing" in run_fp(project.root, "logs", run_id).stdout, "the output is kept when gc removes the service"
    assert run_fp(project.root, "pull", run_id).returncode == 0
    assert (project.root / "data/tries.txt").read_text() == "tried\n"


def test_a_map_runs_a_failing_command_again_only_as_often_as_retries_says(project: Project, lab: str) -> None:
    project.write("flaky.py", "import sys\nn = sys.argv[1]\nprint('try', n, flush=True)\nsys.exit(3 if n == '0' else 0)\n")
    result = run_fp(project.root, "map", "--hosts", lab, "-p", "n=0,1", "--retries", "2", "--cpus", "0.5", "--", "python", "flaky.py", "{n}", timeout=300)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1, err
    assert out.count("try 0") == 3 and out.count("try 1") == 1, out
    assert "1 of 2 runs succeeded" in err and "trying again" in err


def test_fp_stop_reaches_the_command_from_any_folder_and_its_results_still_come_back(project: Project, lab: str) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *a: (open('data/stopped.txt', 'w').write('saved'), sys.exit(5)))\n"
        "print('ready', flush=True)\ntime.sleep(300)\n"
    )
    project.write("long.py", script)
    run_id = started_id(run_fp(project.root, "--host", lab, "-d", "python", "long.py"))
    wait_for(lambda: b"ready" in run_fp(project.root, "logs", run_id).stdout, "the command to start", timeout=120)
    elsewhere = project.root.parent / "elsewhere"  # (no fireplug.toml: the run's own project names the bucket)
    elsewhere.mkdir()
    stopped = run_fp(elsewhere, "stop", run_id)
    assert stopped.returncode == 0 and b"exit status 5" in stopped.stderr, stopped.stderr.decode()
    assert run_fp(project.root, "pull", run_id).returncode == 0
    assert (project.root / "data/stopped.txt").read_text() == "saved"
    assert services_of(project) == []


def test_a_task_lost_with_its_node_is_started_again_on_another(project: Project, lab: str) -> None:
    project.write(
        "slow.py",
        "import os, sys, time\nnode = 'worker' if 'fpveth1' in os.listdir('/sys/class/net') else 'manager'\nprint('on', node, flush=True)\ntime.sleep(10)\n"
        "open(f'data/slow{sys.argv[1]}.txt', 'a').write(node + '\\n')\n",
    )
    process = subprocess.Popen(
        # (two workers, one per node: four runs leave time for the worker's to start should the
        # swarm still count the last test's tasks there)
        [*fp_command(), "map", "--hosts", lab, "-p", "n=0,1,2,3", "--cpus", "1.5", "--", "python", "slow.py", "{n}"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(task.startswith("Running") for task in _task_states(project, "worker")), "a task to run on the worker", process, timeout=180)
        time.sleep(2)
        swarmbed.kill_worker()
        _, err = process.communicate(timeout=240)
    finally:
        swarmbed.start_worker()
        wait_for(lambda: swarmbed.nodes_ready() >= 2, "the worker to be back", timeout=120)
    assert process.returncode == 0, err.decode()
    assert b"went down while it ran the task" in err
    for n in range(4):
        assert (project.root / f"data/slow{n}.txt").read_text().count("\n") == 1, "each run's results came back once, from the run that ended"


def test_no_credential_in_a_label_an_environment_or_fps_output(project: Project, lab: str) -> None:
    project.write("idle.py", "import time\nprint('up', flush=True)\ntime.sleep(30)\n")
    started = run_fp(project.root, "--host", lab, "-v", "-d", "python", "idle.py")
    run_id = started_id(started)
    [service] = services_of(project)
    inspected = swarm("service", "inspect", service) + "".join(swarm("secret", "inspect", secret) for secret in swarm("secret", "ls", "-q").split())
    assert SECRET not in inspected and "fpkey" not in inspected
    assert SECRET.encode() not in started.stderr + started.stdout
    wait_for(lambda: b"up" in run_fp(project.root, "logs", run_id).stdout, "the command to start", timeout=120)
    assert SECRET.encode() not in run_fp(project.root, "logs", run_id).stdout
    assert run_fp(project.root, "stop", "-t", "1", run_id).returncode == 0
    assert run_fp(project.root, "pull", run_id).returncode == 0


def _task_states(project: Project, role: str) -> list[str]:
    """The current states of the project's tasks on the node of ``role``."""
    listed = swarm("node", "ps", swarmbed.node_ids()[role], "--format", "{{.Name}} {{.CurrentState}}").splitlines()
    return [line.split(" ", 1)[1] for line in listed if line.startswith(f"fp-{project.name}-")]


def test_ctrl_c_reaches_the_command_its_results_come_back_and_no_line_is_shown_twice(project: Project, lab: str) -> None:
    project.write(
        "trap.py",
        "import signal, sys, time\n"
        "def stop(*_):\n    print('saving', flush=True)\n    open('data/stopped.txt', 'w').write('saved')\n    sys.exit(5)\n"
        "signal.signal(signal.SIGINT, stop)\nprint('ready', flush=True)\ntime.sleep(300)\n",
    )
    process = start_in_group(project, "--host", lab, "python", "trap.py")
    wait_for(lambda: any("ready" in swarm("service", "logs", service) for service in services_of(project)), "the command to start", process, timeout=180)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 5, err.decode()
    assert out.decode().count("ready") == 1 and "saving" in out.decode()
    assert (project.root / "data/stopped.txt").read_text() == "saved"
    assert services_of(project) == []


# a run that says "ready N", and on SIGINT saves data/stoppedN.txt and exits 5
TRAP_AND_SAVE = (
    "import signal, sys, time\nn = sys.argv[1]\n"
    "def stop(*_):\n    open(f'data/stopped{n}.txt', 'w').write('saved ' + n)\n    sys.exit(5)\n"
    "signal.signal(signal.SIGINT, stop)\nprint('ready', n, flush=True)\ntime.sleep(300)\n"
)


def test_ctrl_c_to_a_map_stops_its_running_runs_keeps_their_results_and_starts_no_other(project: Project, lab: str) -> None:
    project.write("trap.py", TRAP_AND_SAVE)
    # 1.5 CPUs each on two 2-CPU nodes: two workers, one run each; four runs wait in the queue
    process = start_in_group(project, "map", "--hosts", lab, "-p", "n=0,1,2,3,4,5", "--cpus", "1.5", "--", "python", "trap.py", "{n}")
    wait_for(lambda: _sweep_output(project).count("ready") == 2, "two runs to start", process, timeout=180)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err.decode()
    stopped = {path.name: path.read_text() for path in (project.root / "data").glob("stopped*.txt")}
    assert len(stopped) == 2 and all(text == f"saved {name[7]}" for name, text in stopped.items()), stopped
    assert out.decode().count("ready") == 2, "a run the map had not started yet ran after Ctrl-C"
    assert services_of(project) == []


def test_ps_logs_and_stop_reach_the_runs_of_a_map_going_on_in_the_background(project: Project, lab: str) -> None:
    project.write("trap.py", TRAP_AND_SAVE)
    map_id = started_id(run_fp(project.root, "map", "-d", "--hosts", lab, "-p", "n=0,1", "--cpus", "0.5", "--", "python", "trap.py", "{n}"))

    def listed() -> list[dict[str, object]]:
        return [run for run in json.loads(run_fp(project.root, "ps", "--json").stdout) if run.get("map") == map_id]

    try:
        wait_for(lambda: len(listed()) == 2 and _sweep_output(project).count("ready") == 2, "both runs to start", timeout=180)
        assert {run["state"] for run in listed()} == {"running"}
        first = str(min(listed(), key=lambda run: str(run["id"]))["id"])
        wait_for(lambda: b"ready" in run_fp(project.root, "logs", first).stdout, "the run's output to be kept", timeout=30)
        stopped = run_fp(project.root, "stop", first)
        assert stopped.returncode == 0 and b"exit status 5" in stopped.stderr, stopped.stderr.decode()
        assert [run["id"] for run in listed()] != [first] and len(listed()) == 1, "the stopped run is still listed as running"
    finally:
        assert run_fp(project.root, "stop", map_id).returncode == 0
    wait_for(lambda: len(list((project.root / "data").glob("stopped*.txt"))) == 2, "both runs' results to land", timeout=60)
    wait_for(lambda: services_of(project) == [], "the map's service to go", timeout=60)


def _sweep_output(project: Project) -> str:
    return "".join(swarm("service", "logs", service) for service in services_of(project))


def test_a_registry_behind_a_password_gets_the_docker_configs_credentials_and_no_one_sees_them(project: Project, remote: RemoteBench, lab: str) -> None:
    remote.add_hosts(f'[hosts.locked]\nurl = "unix://{swarmbed.MANAGER_SOCKET}"\nkind = "swarm"\nregistry = "{swarmbed.AUTH_REGISTRY}/fpauth"\n')
    project.write("hello.py", "print('pulled with a password')\n")
    refused = run_fp(project.root, "--host", "locked", "python", "hello.py")
    assert refused.returncode == 125 and b"Traceback" not in refused.stderr, refused.stderr.decode()
    assert f"pushing {swarmbed.AUTH_REGISTRY}/fpauth/".encode() in refused.stderr and b"docker login" in refused.stderr
    auth = base64.b64encode(f"{swarmbed.AUTH_USER}:{swarmbed.AUTH_PASSWORD}".encode()).decode()
    (remote.home / ".docker").mkdir(exist_ok=True)
    (remote.home / ".docker" / "config.json").write_text(json.dumps({"auths": {swarmbed.AUTH_REGISTRY: {"auth": auth}}}))
    started = run_fp(project.root, "--host", "locked", "-v", "-d", "python", "hello.py")
    run_id = started_id(started)
    [service] = services_of(project)
    inspected = swarm("service", "inspect", service)
    wait_for(lambda: b"pulled with a password" in run_fp(project.root, "logs", run_id).stdout, "the nodes to pull it", timeout=120)
    for secret in (swarmbed.AUTH_PASSWORD, auth):
        assert secret not in inspected and secret.encode() not in started.stdout + started.stderr
    wait_for(lambda: run_state(project, run_id) == "exited", "the run to end", timeout=60)
    assert run_fp(project.root, "pull", run_id).returncode == 0


def run_state(project: Project, run_id: str) -> str:
    listed = json.loads(run_fp(project.root, "ps", "--all", "--json").stdout)
    return next((run["state"] for run in listed if run["id"] == run_id), "")


def test_a_run_no_node_has_room_for_is_refused_before_anything_is_built(project: Project, lab: str) -> None:
    result = run_fp(project.root, "--host", lab, "--cpus", "8", "true")
    err = result.stderr.decode()
    assert result.returncode == 125 and "Traceback" not in err
    assert "no node of swarm 'lab' has room for a run reserving 8 CPUs" in err and "building" not in err
    assert services_of(project) == []
