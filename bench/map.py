"""fp map's scheduling cost: 16 runs of a 2-second CPU-bound command over 2 hosts at 1 per host.

    python bench/map.py [--runs 16] [--seconds 2] [--rounds 3]

Uses the test bench's two ssh hosts (tests/run starts them): 'primary' (sshd on 127.0.0.1 in
front of the main engine) and 'second' (its own sshd in front of the second engine). In one run:

- fp map -p i=0..15 --hosts primary,second --per-host 1 -- python -c BUSY {i}: its makespan
  against the ideal (runs x seconds / 2 hosts), and fp's own cost per run: (makespan - ideal) / runs.
  A first, unmeasured map builds the project's image on both hosts (as a user's first map does);
  the measured ones find it, sync the (empty) data folder in and bring results back, as any map.
- GNU parallel over the same two hosts (--sshlogin 1/primary,1/second, so one job at a time on
  each), running the same commands with `docker run --rm IMAGE ...` on each host (the image fp
  built there): the same work without fp.

The command busy-waits for its seconds of wall time, so that it takes exactly that long however
the 2 CPUs of this machine are shared with the engines, sshd and fp itself.

Target (issue 13): makespan <= 1.3x the ideal (goal 1.1x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import testbed  # the bench's ports, key and paths

FP = str(Path(sys.executable).with_name("fp"))
TARGET = 1.3
ENGINES = (["-H", "unix:///var/run/docker.sock"], ["-H", f"unix://{testbed.SECOND_SOCKET}"])
GOAL = 1.1
BUSY = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\nprint('run', sys.argv[2], 'done')\n"


def environment(root: Path) -> dict[str, str]:
    """An isolated HOME with the two hosts, and an ssh config holding the test bench's key (also for parallel's ssh)."""
    home = root / "home"
    (home / ".config" / "fireplug").mkdir(parents=True)
    data = root / "host-data"
    data.mkdir()
    shutil.chown(data, testbed.SSH_USER, testbed.SSH_USER)
    (home / ".config" / "fireplug" / "config.toml").write_text(
        f'[hosts.primary]\nurl = "ssh://{testbed.SSH_USER}@127.0.0.1:{testbed.SSH_PORT}"\ndata_root = "{data / "primary"}"\n\n'
        f'[hosts.second]\nurl = "ssh://second"\ndata_root = "{data / "second"}"\n'
    )
    (home / "ssh_config").write_text(
        f"Host primary\n  HostName 127.0.0.1\n  Port {testbed.SSH_PORT}\n  User {testbed.SSH_USER}\n"
        f"Host second\n  HostName 127.0.0.1\n  Port {testbed.SECOND_SSH_PORT}\n  User {testbed.SSH_USER}\n"
        f"Host *\n  IdentityFile {testbed.CLIENT_KEY}\n  IdentitiesOnly yes\n  UserKnownHostsFile {home / 'known_hosts'}\n"
        "  StrictHostKeyChecking accept-new\n  ControlMaster auto\n  ControlPath /tmp/fp-bench-map-%C\n  ControlPersist 60\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FP_", "DOCKER_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"), XDG_STATE_HOME=str(home / "state"))
    env["FP_SSH_CONFIG"] = str(home / "ssh_config")
    return env


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({done.returncode}): {done.stderr[-1500:]}")
    return elapsed, done.stdout + done.stderr


def rounds(times: list[float]) -> str:
    return ", ".join(f"{seconds:.2f}" for seconds in times)


def ensure_parallel() -> str:
    found = shutil.which("parallel")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "parallel"], check=True, capture_output=True)
        found = shutil.which("parallel")
    assert found is not None
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="measured maps and parallel runs, interleaved (medians)")
    args = parser.parse_args()
    parallel = ensure_parallel()
    root = Path(tempfile.mkdtemp(prefix="fp-bench-map-"))
    root.chmod(0o755)
    name = f"fp-bench-map-{os.getpid()}"
    try:
        env = environment(root)
        project = root / name
        (project / "data").mkdir(parents=True)
        (project / "fireplug.toml").write_text(f'[project]\nname = "{name}"\n')
        (project / "busy.py").write_text(BUSY)
        ideal = args.runs * args.seconds / 2
        map_argv = [FP, "map", "-p", "i=" + ",".join(str(index) for index in range(args.runs)), "--hosts", "primary,second", "--per-host", "1"]
        map_argv += ["--", "python", "busy.py", str(args.seconds), "{i}"]
        first, _ = timed(map_argv, project, env)  # builds the image on both hosts
        image = f"{name}:parallel"  # each host's image has its own tag (its base image differs): one name for both
        for engine in ENGINES:
            built = subprocess.run(["docker", *engine, "images", "-q", "--filter", f"label=io.fireplug.project={name}"], capture_output=True, text=True)
            subprocess.run(["docker", *engine, "tag", built.stdout.split()[0], image], check=True, capture_output=True)
        jobs = root / "jobs.txt"
        jobs.write_text("".join(f"docker run --rm {image} python busy.py {args.seconds} {index}\n" for index in range(args.runs)))
        parallel_argv = [parallel, "--ssh", f"ssh -F {env['FP_SSH_CONFIG']}", "--sshlogin", "1/primary,1/second", "-a", str(jobs)]
        fp_times, parallel_times = [], []
        for _ in range(args.rounds):
            time.sleep(1)
            fp_times.append(timed(map_argv, project, env)[0])
            time.sleep(1)
            seconds, out = timed(parallel_argv, project, env)
            if out.count("done") != args.runs:
                raise SystemExit(f"GNU parallel ran {out.count('done')} of {args.runs} runs:\n{out}")
            parallel_times.append(seconds)
        fp_map, gnu = statistics.median(fp_times), statistics.median(parallel_times)
        ratio = fp_map / ideal
        verdict = "OK" if ratio <= TARGET else "MISSED"
        print(f"{args.runs} runs of {args.seconds:g} s over 2 hosts, 1 per host; ideal {ideal:.2f} s; medians of {args.rounds} rounds, interleaved")
        print(f"fp map, first (builds the image on both hosts)   {first:7.2f} s")
        print(f"fp map                                           {fp_map:7.2f} s   {ratio:.2f}x ideal   target <= {TARGET}x {verdict} (goal {GOAL}x)")
        print(f"  fp's own cost per run                          {(fp_map - ideal) / args.runs:7.3f} s   rounds: {rounds(fp_times)}")
        print(f"GNU parallel --sshlogin, docker run --rm         {gnu:7.2f} s   {gnu / ideal:.2f}x ideal   rounds: {rounds(parallel_times)}")
        print(f"  its cost per run                               {(gnu - ideal) / args.runs:7.3f} s")
        return 0 if ratio <= TARGET else 1
    finally:
        clean_up(ENGINES, name, root)


def clean_up(engines: tuple[list[str], ...], project: str, root: Path) -> None:
    """The project's images on each engine, the ssh masters, the bench's folder."""
    for engine in engines:
        listing = ["docker", *engine, "images", "-q", "--filter", f"label=io.fireplug.project={project}"]
        ids = subprocess.run(listing, capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", *engine, "rmi", "-f", *ids], capture_output=True)
    subprocess.run(["sh", "-c", "for socket in /tmp/fp-bench-map-*; do ssh -O exit -o ControlPath=$socket x 2>/dev/null; done"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
