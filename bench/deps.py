"""The dependency layer, measured in one run on the bench's engine and package index:

    python bench/deps.py [--runs 15] [--builds 3]

1. Warm `fp true` in a project with a 10-package requirements file against the same project
   without one (interleaved, median of --runs each). Target: within 1.05x.
2. The first dependency build: `fp true` with requirements never installed before, against the
   same by hand, `docker build` of a Dockerfile that installs them the usual way (COPY
   requirements.txt, RUN venv + pip install, COPY the code) and `docker run --rm IMAGE true`
   (interleaved, median of --builds each).
3. The installer: the same install with pip and with uv (`uv pip install`), uv either fetched
   into the build first (as fp would have to: the base image has no uv) or already there.

Needs tests/run's bench (the engine, fp's base image, the wheels of tests/testbed.py) and the
test venv (pypiserver).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import remove_images, timed
from tests import testbed
from tests.package_index import PackageIndex

FP = str(Path(sys.executable).with_name("fp"))
TARGET_WARM_RATIO = 1.05
PACKAGES = tuple(package for package in testbed.INDEX_PACKAGES if package.split("==")[0] not in ("six", "numpy", "uv"))  # ten pure-Python ones
HAND_DOCKERFILE = """\
FROM {base}
COPY requirements.txt /tmp/requirements/requirements.txt
RUN python3 -m venv --system-site-packages /opt/venv \\
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --index-url {index} -r /tmp/requirements/requirements.txt
ENV PATH=/opt/venv/bin:$PATH
COPY . /app
WORKDIR /app
"""
INSTALLER_DOCKERFILE = """\
FROM {base}
RUN python3 -m venv --system-site-packages /opt/venv{uv_bootstrap}
ARG BUST
COPY requirements.txt /tmp/requirements.txt
RUN {install} -r /tmp/requirements.txt
"""
PIP_INSTALL = "/opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --index-url {index}"
UV_INSTALL = "/opt/venv/bin/uv pip install --no-cache --python /opt/venv/bin/python --index-url {index}"
UV_BOOTSTRAP = " && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --index-url {index} uv==0.4.30"


def make_project(folder: Path, name: str, index: str, requirements: bool) -> Path:
    (folder / "src").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "src" / "model.py").write_text("print('model')\n")
    build = f'\n[build]\npip_index_url = "{index}"\nnetwork = "host"\n' if requirements else ""
    (folder / "fireplug.toml").write_text(f'[project]\nname = "{name}"\n{build}')
    if requirements:
        fresh_requirements(folder)
    return folder


def fresh_requirements(folder: Path) -> None:
    """The same packages under a new hash: a layer no build made before."""
    (folder / "requirements.txt").write_text(f"# {uuid.uuid4().hex}\n" + "\n".join(PACKAGES) + "\n")


def docker_build(context: Path, tag: str, *extra: str) -> float:
    return timed(["docker", "build", "-q", "--network", "host", "-t", tag, *extra, "."], context)


def label(image: str, name: str) -> str:
    template = f'{{{{index .Config.Labels "{name}"}}}}'
    return subprocess.run(["docker", "image", "inspect", "--format", template, image], capture_output=True, text=True).stdout.strip()


def base_under(project: str) -> str:
    """fp's base image, as the project's dependency layer names it (the one fp really used)."""
    image = subprocess.run(["docker", "images", "-q", "--filter", f"label=io.fireplug.project={project}"], capture_output=True, text=True).stdout.split()[0]
    return label(label(image, "io.fireplug.image.deps"), "io.fireplug.from")


def warm(with_deps: Path, without: Path, runs: int) -> tuple[float, float]:
    for project in (with_deps, without):
        timed([FP, "--host", "local", "true"], project)
    time.sleep(2.5)  # past the scan cache's racy window
    for project in (with_deps, without):
        timed([FP, "--host", "local", "true"], project)
    deps_times, plain_times = [], []
    for _ in range(runs):
        deps_times.append(timed([FP, "--host", "local", "true"], with_deps))
        plain_times.append(timed([FP, "--host", "local", "true"], without))
    return statistics.median(deps_times), statistics.median(plain_times)


def first_builds(project: Path, hand: Path, index: str, base: str, builds: int) -> tuple[float, float]:
    (hand / "Dockerfile").write_text(HAND_DOCKERFILE.format(base=base, index=index))
    (hand / "model.py").write_text("print('model')\n")
    fp_times, hand_times = [], []
    for attempt in range(builds):
        fresh_requirements(project)
        fp_times.append(timed([FP, "--host", "local", "true"], project))
        shutil.copy(project / "requirements.txt", hand / "requirements.txt")
        tag = f"fp-bench-hand:{attempt}"
        hand_times.append(docker_build(hand, tag) + timed(["docker", "run", "--rm", tag, "true"], hand))
    return statistics.median(fp_times), statistics.median(hand_times)


def installers(folder: Path, index: str, base: str, builds: int) -> dict[str, float]:
    variants = {
        "pip": (PIP_INSTALL.format(index=index), ""),
        "uv, fetched first": (UV_INSTALL.format(index=index), UV_BOOTSTRAP.format(index=index)),
        "uv, already there": (UV_INSTALL.format(index=index), UV_BOOTSTRAP.format(index=index)),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    contexts = {}
    for number, (name, (install, bootstrap)) in enumerate(variants.items()):
        context = folder / f"installer-{number}"
        context.mkdir()
        (context / "Dockerfile").write_text(INSTALLER_DOCKERFILE.format(base=base, install=install, uv_bootstrap=bootstrap))
        (context / "requirements.txt").write_text("\n".join(PACKAGES) + "\n")
        contexts[name] = context
    docker_build(contexts["uv, already there"], "fp-bench-installer:uv-ready", "--build-arg", "BUST=warm")  # its uv step is cached after this
    for attempt in range(builds):
        for number, name in enumerate(variants):
            options = ["--build-arg", f"BUST={uuid.uuid4().hex}"] if name == "uv, already there" else ["--no-cache"]
            times[name].append(docker_build(contexts[name], f"fp-bench-installer:{number}-{attempt}", *options))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--builds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fp-bench-deps-"))
    server = PackageIndex(workdir).start()
    stamp = uuid.uuid4().hex[:6]
    names = [f"fp-bench-deps-{stamp}", f"fp-bench-plain-{stamp}"]
    try:
        with_deps = make_project(workdir / names[0], names[0], server.url, requirements=True)
        without = make_project(workdir / names[1], names[1], server.url, requirements=False)
        deps_warm, plain_warm = warm(with_deps, without, args.runs)
        base = base_under(names[0])
        hand = workdir / "by-hand"
        hand.mkdir()
        fp_first, hand_first = first_builds(with_deps, hand, server.url, base, args.builds)
        installs = installers(workdir, server.url, base, args.builds)
    finally:
        server.stop()
        remove_images(*(f"label=io.fireplug.project={name}" for name in names), "reference=fp-bench-hand", "reference=fp-bench-installer")
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{len(PACKAGES)} packages from a pypiserver index on 127.0.0.1 (medians; warm: {args.runs} runs each, builds: {args.builds} each)")
    print(f"warm fp true, with requirements    {deps_warm:7.3f} s")
    print(f"warm fp true, without              {plain_warm:7.3f} s")
    ratio = deps_warm / plain_warm
    print(f"ratio                              {ratio:7.3f}x  (target <= {TARGET_WARM_RATIO}x: {'met' if ratio <= TARGET_WARM_RATIO else 'NOT met'})")
    print(f"first build, fp true               {fp_first:7.2f} s")
    print(f"first build, docker build + run    {hand_first:7.2f} s")
    print(f"ratio                              {fp_first / hand_first:7.3f}x")
    pip = installs["pip"]
    for name, seconds in installs.items():
        print(f"installer: {name:<22}  {seconds:7.2f} s  ({seconds / pip:.2f}x pip)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
