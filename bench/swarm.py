"""fp map on a swarm: 16 runs of a 1-second command with room for 4 at a time.

    python bench/swarm.py [--runs 16] [--seconds 1] [--rounds 3]

Uses the test bench (tests/run starts it): the swarm of tests/swarmbed.py (a manager and a worker
in its own network namespace, 2 CPUs each: --cpus 1 leaves room for 2 runs on each node, 4 in
all), its registry, and moto as S3 (started here, on 127.0.0.1). In one run, interleaved:

- fp map --hosts lab --cpus 1: its makespan against the ideal (runs x seconds / 4), and fp's cost
  per run, (makespan - ideal) / runs x 4 (a run's own overhead: submit, schedule, the task's
  data in and out, its end noticed).
- the same sweep through fp map over the two plain hosts ('primary', 'second', over ssh, rsync),
  2 per host: 4 at a time too.

A first, unmeasured map on each builds and pushes the image (as a user's first map does).

Target (issue 15): makespan <= 1.5x the ideal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.map import ENGINES, FP, clean_up, environment, rounds, timed
from tests import swarmbed, testbed

TARGET = 1.5
SLEEP = "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('run', sys.argv[2], 'done')\n"
BUCKET = "fp-bench-swarm"


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    moto = Path(sys.executable).with_name("moto_server")
    with log.open("ab") as out:
        process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 30
    while not testbed.port_answers(port):
        if time.monotonic() > deadline:
            raise SystemExit("moto did not start")
        time.sleep(0.1)
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s").create_bucket(
        Bucket=BUCKET
    )
    return process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fp-bench-swarm-"))
    root.chmod(0o755)
    name = f"fp-bench-swarm-{os.getpid()}"
    port = testbed.free_port()
    moto = start_moto(port, root / "moto.log")
    try:
        env = environment(root)
        env.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_CONFIG_FILE=str(root / "none"), AWS_SHARED_CREDENTIALS_FILE=str(root / "none"))
        with open(Path(env["HOME"]) / ".config" / "fireplug" / "config.toml", "a") as config:
            config.write(f'\n[hosts.lab]\nurl = "unix://{swarmbed.MANAGER_SOCKET}"\nkind = "swarm"\nregistry = "{swarmbed.REGISTRY}/bench"\n')
        project = root / name
        (project / "data").mkdir(parents=True)
        (project / "sleep.py").write_text(SLEEP)
        staged = (
            f'[project]\nname = "{name}"\n\n[sync]\nmode = "s3"\ns3 = "s3://{BUCKET}/stage"\nendpoint = "http://127.0.0.1:{port}"\nregion = "us-east-1"\n\n'
            '[run]\nnetwork = "host"\n'
        )
        plain = f'[project]\nname = "{name}"\n'
        sweep = ["-p", "i=" + ",".join(str(index) for index in range(args.runs))]
        command = ["--", "python", "sleep.py", str(args.seconds), "{i}"]
        on_swarm = [FP, "map", *sweep, "--hosts", "lab", "--cpus", "1", *command]
        on_hosts = [FP, "map", *sweep, "--hosts", "primary,second", "--per-host", "2", *command]
        ideal = args.runs * args.seconds / 4

        def swarm_map() -> float:
            (project / "fireplug.toml").write_text(staged)
            return timed(on_swarm, project, env)[0]

        def hosts_map() -> float:
            (project / "fireplug.toml").write_text(plain)
            return timed(on_hosts, project, env)[0]

        first_swarm, first_hosts = swarm_map(), hosts_map()
        swarm_times, host_times = [], []
        for _ in range(args.rounds):
            time.sleep(1)
            swarm_times.append(swarm_map())
            time.sleep(1)
            host_times.append(hosts_map())
        swarm, hosts = statistics.median(swarm_times), statistics.median(host_times)
        ratio = swarm / ideal
        verdict = "OK" if ratio <= TARGET else "MISSED"
        print(f"{args.runs} runs of {args.seconds:g} s, 4 at a time; ideal {ideal:.2f} s; medians of {args.rounds} rounds, interleaved")
        print(f"fp map on the swarm, first (build and push)     {first_swarm:7.2f} s")
        print(f"fp map on the swarm (--cpus 1: 2 per node)      {swarm:7.2f} s   {ratio:.2f}x ideal   target <= {TARGET}x {verdict}")
        print(f"  fp's cost per run (4 slots)                   {(swarm - ideal) / args.runs * 4:7.3f} s   rounds: {rounds(swarm_times)}")
        print(f"fp map on 2 plain hosts, first (build)          {first_hosts:7.2f} s")
        print(f"fp map on 2 plain hosts (--per-host 2)          {hosts:7.2f} s   {hosts / ideal:.2f}x ideal   swarm/hosts {swarm / hosts:.2f}x")
        print(f"  its cost per run (4 slots)                    {(hosts - ideal) / args.runs * 4:7.3f} s   rounds: {rounds(host_times)}")
        return 0 if ratio <= TARGET else 1
    finally:
        moto.kill()
        clean_up((swarmbed.MANAGER_FLAGS, *ENGINES), name, root)


if __name__ == "__main__":
    sys.exit(main())
