"""fp's start-up overhead against a bare `docker run`, measured in one run on the same engine.

    python bench/overhead.py [--runs 15] [--cold 5]

Warm: `fp true` in an unchanged project (the image exists) against
`docker run --rm <that image> true`, interleaved, median of --runs each (target <= 1.15x,
goal 1.05x).
Cold: `fp true` in a fresh 20 KB project (scan, build the one-time image, run) against a
hand-written `docker build` (FROM fp's base image, COPY the same files) + `docker run --rm`
of a copy of it, interleaved, median of --cold each (target <= 1.0x).
Then the slowest imports of a warm `fp true` (`python -X importtime`, cumulative).
Needs a running engine where fp's base image can be built (tests/run prepares one).
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

FP = str(Path(sys.executable).with_name("fp"))
TARGET_WARM_RATIO = 1.15
TARGET_COLD_RATIO = 1.0


def timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed


def make_project(folder: Path, name: str) -> Path:
    """A 20 KB project: ten 2 KB modules and a data folder."""
    (folder / "src").mkdir(parents=True)
    (folder / "data").mkdir()
    for index in range(10):
        body = f"# module {index} of project {name}\n" + "VALUES = [\n" + "    1.0,\n" * 220 + "]\n"
        (folder / "src" / f"module_{index}.py").write_text(body[:2048])
    (folder / "fireplug.toml").write_text(f'[project]\nname = "{name}"\n')
    return folder


def project_image(name: str) -> str:
    listing = subprocess.run(
        ["docker", "images", "--filter", f"label=io.fireplug.project={name}", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return listing[0]


def base_image() -> str:
    """The newest fp base image on the engine (the one the projects' images were built on)."""
    listing = subprocess.run(
        ["docker", "images", "--filter", "label=io.fireplug.kind=base", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return listing[0]


def by_hand(project: Path, base: str, tag: str) -> float:
    """What a person would type instead: build the same files on fp's base image, run once."""
    copy = project.with_name(project.name + "-by-hand")
    shutil.copytree(project, copy)
    (copy / "Dockerfile").write_text(f"FROM {base}\nCOPY . /project\nWORKDIR /project\n")
    started = time.perf_counter()
    timed(["docker", "build", "-q", "-t", tag, "."], copy)
    timed(["docker", "run", "--rm", tag, "true"], copy)
    return time.perf_counter() - started


def slowest_imports(project: Path, count: int = 12) -> list[str]:
    """The imports of a warm `fp true` that took longest, cumulative (``-X importtime``)."""
    done = subprocess.run([FP, "true"], cwd=project, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True)
    rows, top_level = [], 0
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, raw = line.removeprefix("import time:").split("|")
            name = raw.strip()
            rows.append((int(cumulative), name))
            if raw.startswith(" fireplug") and not raw.startswith("  "):  # a top-level import of fp's own
                top_level += int(cumulative)
    top = sorted(rows, reverse=True)[:count]
    return [f"{cumulative / 1000:7.1f} ms  {name}" for cumulative, name in top] + [f"(fp's own imports in all: {top_level / 1000:.1f} ms)"]


def remove_project_images(names: list[str]) -> None:
    remove_images(*(f"label=io.fireplug.project={name}" for name in names))


def remove_images(*filters: str) -> None:
    """Remove the images each ``docker images --filter`` matches."""
    for wanted in filters:
        ids = subprocess.run(["docker", "images", "-q", "--filter", wanted], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rmi", "-f", *dict.fromkeys(ids)], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cold", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fp-bench-"))
    names = []
    try:
        cold, hand = [], []
        for index in range(args.cold):
            names.append(f"fp-bench-{os.getpid()}-{index}")
            project = make_project(workdir / names[-1], names[-1])
            cold.append(timed([FP, "true"], project))
            hand.append(by_hand(project, base_image(), f"fp-bench-by-hand-{os.getpid()}-{index}"))
        warm_project = workdir / names[0]
        image = project_image(names[0])
        time.sleep(2.5)  # let the files settle past the scan cache's racy window
        timed([FP, "true"], warm_project)  # warm-up: records the settled scan
        fp_times, docker_times = [], []
        for _ in range(args.runs):
            fp_times.append(timed([FP, "true"], warm_project))
            docker_times.append(timed(["docker", "run", "--rm", image, "true"], warm_project))
        fp_warm, docker_warm, fp_cold, hand_cold = (statistics.median(times) for times in (fp_times, docker_times, cold, hand))
        ratio, cold_ratio = fp_warm / docker_warm, fp_cold / hand_cold
        version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True).stdout.strip()
        verdict = "OK" if ratio <= TARGET_WARM_RATIO else "MISSED"
        print(f"engine: docker {version}; {os.cpu_count()} CPUs")
        print(f"docker run --rm IMAGE true   median {docker_warm * 1000:7.0f} ms  (n={args.runs})")
        print(f"fp true, warm                median {fp_warm * 1000:7.0f} ms  (n={args.runs})  ratio {ratio:.2f}x  target <= {TARGET_WARM_RATIO}x  {verdict}")
        print(f"docker build + run, by hand  median {hand_cold * 1000:7.0f} ms  (n={args.cold})")
        cold_verdict = "OK" if cold_ratio <= TARGET_COLD_RATIO else "MISSED"
        cold_line = f"median {fp_cold * 1000:7.0f} ms  (n={args.cold})  ratio {cold_ratio:.2f}x  target <= {TARGET_COLD_RATIO}x  {cold_verdict}"
        print(f"fp true, cold (fresh 20 KB)  {cold_line}")
        print("slowest imports of a warm fp true (cumulative):")
        print("\n".join(f"  {line}" for line in slowest_imports(warm_project)))
        return 0 if ratio <= TARGET_WARM_RATIO and cold_ratio <= TARGET_COLD_RATIO else 1
    finally:
        remove_project_images(names)
        remove_images(f"reference=fp-bench-by-hand-{os.getpid()}-*")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
