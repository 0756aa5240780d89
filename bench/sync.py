"""fp's two-way data sync against full copies, and a warm remote run against the docker CLI.

    python bench/sync.py [--files 10000] [--mib 1024] [--runs 5] [--rounds 3] [--scratch /dev/shm]

Uses the test bench's ssh host (sshd on 127.0.0.1:SSH_PORT in front of the main engine) and
its TLS engine (the Docker API path); tests/run starts both. In one run, on a generated data
folder (random bytes, so nothing compresses):
- full-copy baselines: `docker cp` of the folder into a container (through the local engine's
  socket, no ssh at all), and a tar stream over the same ssh;
- rsync path (`fp --host bench --sync-in-only`): the first sync, a no-op re-sync (median of
  --runs; the host listing is part of it), and a re-sync after rewriting one 1 MiB file, with
  the bytes rsync moved and the bytes of the host listing;
- API path (`fp --host benchapi`): the first sync, a no-op re-sync, and a sync out of the
  whole folder into an empty local data folder;
- warm `fp --host bench true` in a small project against
  `docker -H ssh://fpuser@127.0.0.1:PORT run --rm <its image> true` (median of --runs, interleaved).

The local project and the hosts' data roots live under --scratch, by default a RAM disk
(/dev/shm): on this VM the disk's speed under repeated 1 GiB writes and deletions drifts by 2x
within one run, which moves the baselines and fp's copies apart at random. On a RAM disk the
ratios measure what fp adds to a copy (CPU, protocol, round trips); pass a folder on disk
(e.g. --scratch /var/tmp) to include the disk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fireplug.config import derived_id
from fireplug.hosts.ssh import FAST_CIPHERS
from tests import testbed  # the bench's ports, key and paths

FP = str(Path(sys.executable).with_name("fp"))
HOST_URL = f"ssh://{testbed.SSH_USER}@127.0.0.1:{testbed.SSH_PORT}"
CHANGED_FILE_BYTES = 1 << 20
TARGETS = {
    "first_ratio_tar": 1.0,
    "noop_seconds": 1.0,
    "noop_ratio": 0.05,
    "one_file_wire_mib": 1.1,
    "api_noop_seconds": 1.0,
    "api_first_ratio": 1.5,
    "api_out_ratio": 1.5,
    "warm_ratio": 1.5,
}


def timed(argv: list[str], cwd: Path, env: dict[str, str], *, shell: bool = False) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv if not shell else " ".join(argv), cwd=cwd, env=env, shell=shell, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed ({done.returncode}): {done.stderr[-800:]}")
    return elapsed, done.stderr


def wire_bytes(stderr: str) -> int:
    """Bytes the copies moved (rsync's or the API streams' count), from fp -v."""
    found = re.search(r"sync with '[^']+': (\d+) bytes over the wire", stderr)
    if not found:
        raise SystemExit(f"no sync report in fp's output:\n{stderr}")
    return int(found.group(1))


def listing_bytes(stderr: str) -> int:
    found = re.search(r"host listing: (\d+) bytes", stderr)
    return int(found.group(1)) if found else 0


def settle() -> None:
    """Flush what the previous step wrote, so that its writeback does not slow the next one down."""
    os.sync()
    time.sleep(2)


def generate(data: Path, files: int, total: int) -> Path:
    """``files`` files of random bytes adding up to about ``total``; the middle one is 1 MiB (returned)."""
    per_directory = 100
    size = total // files
    middle = files // 2
    for index in range(files):
        folder = data / f"d{index // per_directory:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:05d}.bin").write_bytes(os.urandom(CHANGED_FILE_BYTES if index == middle else size))
    return data / f"d{middle // per_directory:03d}" / f"f{middle:05d}.bin"


def environment(root: Path, host_data: Path) -> tuple[dict[str, str], dict[str, str]]:
    """An isolated HOME with one host, 'bench', and an ssh config holding the test bench's key.

    Returns fp's environment (FP_SSH_CONFIG) and the baselines' (plain `ssh` on PATH wrapped).
    """
    home = root / "home"
    (home / ".config" / "fireplug").mkdir(parents=True)
    (home / ".config" / "fireplug" / "config.toml").write_text(
        f'[hosts.bench]\nurl = "{HOST_URL}"\ndata_root = "{host_data}"\n\n'
        f'[hosts.benchapi]\nurl = "tcp://127.0.0.1:{testbed.TLS_PORT}"\ncert_path = "{testbed.CERTS}"\ndata_root = "{host_data}/api"\n'
    )
    ssh_config = home / "ssh_config"
    ssh_config.write_text(
        f"Host *\n  IdentityFile {testbed.CLIENT_KEY}\n  IdentitiesOnly yes\n  UserKnownHostsFile {home / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
    )
    # The docker CLI runs plain `ssh`: a wrapper first on PATH gives it the same config.
    wrapper = root / "bin" / "ssh"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {ssh_config} "$@"\n')
    wrapper.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FP_", "DOCKER_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"), FP_SSH_CONFIG=str(ssh_config))
    return env, {**env, "PATH": f"{wrapper.parent}:{env['PATH']}"}


def project(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "fireplug.toml").write_text(f'[project]\nname = "{name}"\n')
    (folder / "main.py").write_text("print('bench')\n")
    (folder / "data").mkdir()
    return folder


def docker_cp_seconds(data: Path, destination: Path, env: dict[str, str]) -> float:
    destination.mkdir()
    container = subprocess.run(
        ["docker", "create", "-v", f"{destination}:/dst", "debian:bookworm-slim", "true"], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    try:
        return timed(["docker", "cp", f"{data}/.", f"{container}:/dst/"], data, env)[0]
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, env=env)


def tar_over_ssh_seconds(data: Path, destination: Path, env: dict[str, str], cipher: str = "") -> float:
    destination.mkdir()
    shutil.chown(destination, testbed.SSH_USER, testbed.SSH_USER)
    choice = f"-c {cipher} " if cipher else ""
    remote = f"ssh {choice}-p {testbed.SSH_PORT} {testbed.SSH_USER}@127.0.0.1 tar -C {destination} -xf -"
    return timed(["tar", "-C", str(data), "-cf", "-", ".", "|", remote], data, env, shell=True)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="full copies and first syncs of each kind, interleaved (medians)")
    parser.add_argument("--scratch", type=Path, default=Path("/dev/shm"), help="where the data folders live (default: a RAM disk)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fp-bench-sync-", dir=args.scratch))
    host_data = root / "host-data"  # where the ssh user may write
    host_data.mkdir()
    root.chmod(0o755)
    shutil.chown(host_data, testbed.SSH_USER, testbed.SSH_USER)
    name = f"fp-bench-sync-{os.getpid()}"
    small_name = f"{name}-small"
    try:
        env, baseline_env = environment(root, host_data)
        big = project(root / name, name)
        changed = generate(big / "data", args.files, args.mib << 20)
        print(f"data: {args.files} files, {args.mib} MiB of random bytes under {args.scratch}; host {HOST_URL}; {os.cpu_count()} CPUs", flush=True)

        key = f"{name}-{derived_id(big.resolve())}"
        state = root / "home" / ".local" / "state" / "fireplug" / "sync" / key

        def first_sync(host: str, host_folder: Path) -> tuple[float, str]:
            """A first sync: the host has nothing of the project, fp no record of it."""
            shutil.rmtree(host_folder, ignore_errors=True)
            shutil.rmtree(state / host, ignore_errors=True)
            settle()
            return timed([FP, "--host", host, "--sync-in-only", "-v"], big, env)

        copies: dict[str, list[float]] = {"docker_cp": [], "tar_ssh": [], "tar_gcm": [], "first": [], "api_first": []}
        for round_number in range(args.rounds):  # interleaved: the VM's disk speed drifts a lot
            settle()
            copies["docker_cp"].append(docker_cp_seconds(big / "data", root / f"cp-dest-{round_number}", env))
            shutil.rmtree(root / f"cp-dest-{round_number}")
            settle()
            copies["tar_ssh"].append(tar_over_ssh_seconds(big / "data", host_data / f"tar-dest-{round_number}", baseline_env))
            shutil.rmtree(host_data / f"tar-dest-{round_number}")
            settle()
            copies["tar_gcm"].append(tar_over_ssh_seconds(big / "data", host_data / f"tar-dest-{round_number}", baseline_env, FAST_CIPHERS[0]))
            shutil.rmtree(host_data / f"tar-dest-{round_number}")
            seconds, first_output = first_sync("bench", host_data / key)
            copies["first"].append(seconds)
            copies["api_first"].append(first_sync("benchapi", host_data / "api" / key)[0])
        docker_cp, tar_ssh, tar_gcm, first, api_first = (statistics.median(copies[kind]) for kind in ("docker_cp", "tar_ssh", "tar_gcm", "first", "api_first"))
        settle()
        noop_runs = [timed([FP, "--host", "bench", "--sync-in-only", "-v"], big, env) for _ in range(args.runs)]
        noop = statistics.median(seconds for seconds, _ in noop_runs)
        noop_wire = wire_bytes(noop_runs[-1][1])
        changed.write_bytes(os.urandom(CHANGED_FILE_BYTES))
        one, one_output = timed([FP, "--host", "bench", "--sync-in-only", "-v"], big, env)
        one_wire, one_listing = wire_bytes(one_output), listing_bytes(one_output)
        api_noop = statistics.median(timed([FP, "--host", "benchapi", "--sync-in-only"], big, env)[0] for _ in range(args.runs))
        api_outs = []
        for _ in range(args.rounds):  # as on a new machine: no record, an empty data folder
            shutil.rmtree(big / "data")
            (big / "data").mkdir()
            shutil.rmtree(state, ignore_errors=True)
            settle()
            api_outs.append(timed([FP, "--host", "benchapi", "--sync-out-only"], big, env)[0])
            got = sum(1 for _ in (big / "data").rglob("*.bin"))
            if got != args.files:
                raise SystemExit(f"the API sync out brought {got} of {args.files} files back")
        api_out = statistics.median(api_outs)

        small = project(root / small_name, small_name)
        timed([FP, "--host", "bench", "true"], small, env)  # builds the one-time image on the host
        image = subprocess.run(
            ["docker", "images", "--filter", f"label=io.fireplug.project={small_name}", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
        time.sleep(2.5)  # past the scan cache's racy window
        timed([FP, "--host", "bench", "true"], small, env)
        fp_times, docker_times = [], []
        for _ in range(args.runs):
            fp_times.append(timed([FP, "--host", "bench", "true"], small, env)[0])
            docker_times.append(timed(["docker", "-H", HOST_URL, "run", "--rm", image, "true"], small, baseline_env)[0])
        fp_warm, docker_warm = statistics.median(fp_times), statistics.median(docker_times)

        def verdict(ok: bool) -> str:
            return "OK" if ok else "MISSED"

        results = {
            "first_ratio_tar": first / tar_ssh <= TARGETS["first_ratio_tar"],
            "noop_seconds": noop <= TARGETS["noop_seconds"],
            "noop_ratio": noop / docker_cp <= TARGETS["noop_ratio"],
            "one_file_wire_mib": one_wire / (1 << 20) <= TARGETS["one_file_wire_mib"],
            "api_noop_seconds": api_noop <= TARGETS["api_noop_seconds"],
            "api_first_ratio": api_first / docker_cp <= TARGETS["api_first_ratio"],
            "api_out_ratio": api_out / docker_cp <= TARGETS["api_out_ratio"],
            "warm_ratio": fp_warm / docker_warm <= TARGETS["warm_ratio"],
        }

        def spread(kind: str) -> str:
            return "(" + ", ".join(f"{seconds:.2f}" for seconds in copies[kind]) + ")"

        print(f"medians of {args.rounds} interleaved rounds for the full copies and first syncs; each round in brackets")
        print(f"full copy, docker cp (local socket)   {docker_cp:7.2f} s   {spread('docker_cp')}")
        print(f"full copy, tar | ssh                  {tar_ssh:7.2f} s   {spread('tar_ssh')}")
        print(f"full copy, tar | ssh -c {FAST_CIPHERS[0].split('@')[0]}   {tar_gcm:7.2f} s   {spread('tar_gcm')}   (fp's cipher on this CPU: like for like)")
        first_mib = wire_bytes(first_output) / (1 << 20)
        print(
            f"fp first sync                         {first:7.2f} s   {first / tar_ssh:5.2f}x tar | ssh   {first_mib:8.1f} MiB moved"
            f"   target <= {TARGETS['first_ratio_tar']}x {verdict(results['first_ratio_tar'])}   {spread('first')}"
            f"   ({first / tar_gcm:.2f}x tar | ssh -c {FAST_CIPHERS[0].split('@')[0]})"
        )
        print(
            f"fp no-op re-sync (median of {args.runs})        {noop:7.2f} s   {noop / docker_cp:5.3f}x docker cp   {noop_wire / 1024:8.1f} KiB moved"
            f"   targets <= {TARGETS['noop_seconds']} s {verdict(results['noop_seconds'])}, <= {TARGETS['noop_ratio']}x {verdict(results['noop_ratio'])}"
        )
        print(
            f"fp re-sync, one 1 MiB file rewritten  {one:7.2f} s   {one / docker_cp:5.3f}x docker cp   {one_wire / (1 << 20):8.3f} MiB moved"
            f"   target <= {TARGETS['one_file_wire_mib']} MiB {verdict(results['one_file_wire_mib'])}"
            f"   (+ {one_listing / 1024:.1f} KiB of host listing)"
        )
        print(
            f"API first sync                        {api_first:7.2f} s   {api_first / docker_cp:5.2f}x docker cp"
            f"   target <= {TARGETS['api_first_ratio']}x {verdict(results['api_first_ratio'])}   {spread('api_first')}"
        )
        print(
            f"API no-op re-sync (median of {args.runs})       {api_noop:7.2f} s"
            f"   target <= {TARGETS['api_noop_seconds']} s {verdict(results['api_noop_seconds'])}"
        )
        print(
            f"API sync out of the whole folder      {api_out:7.2f} s   {api_out / docker_cp:5.2f}x docker cp"
            f"   target <= {TARGETS['api_out_ratio']}x {verdict(results['api_out_ratio'])}   ({', '.join(f'{seconds:.2f}' for seconds in api_outs)})"
        )
        print(f"docker -H ssh:// run --rm IMAGE true  {docker_warm:7.2f} s   (median of {args.runs})")
        print(
            f"fp --host bench true, warm            {fp_warm:7.2f} s   {fp_warm / docker_warm:5.2f}x docker -H ssh://"
            f"   target <= {TARGETS['warm_ratio']}x {verdict(results['warm_ratio'])}"
        )
        return 0 if all(results.values()) else 1
    finally:
        for project_name in (name, small_name):
            listing = ["docker", "images", "-q", "--filter", f"label=io.fireplug.project={project_name}"]
            ids = subprocess.run(listing, capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "rmi", "-f", *ids], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(host_data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
