"""The project's own dependencies, on the real bench: a real package index on 127.0.0.1
(pypiserver over wheels the bench fetched), installs with host networking, the layer
``fp-deps-<hash>`` built once per host and kept across code edits, and index passwords that
never reach an image."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ENGINE_FLAGS, Project, RemoteBench, containers_of, docker, finish, images_of, run_fp, start_in_group, wait_for
from tests.package_index import PackageIndex

pytestmark = pytest.mark.engine  # needs the test bench (tests/run sets it up)

PASSWORD = "fpIDXsecret7741"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageIndex]:
    server = PackageIndex(tmp_path_factory.mktemp("index")).start()
    yield server
    server.stop()


@pytest.fixture
def layers(project: Project) -> Iterator[dict[str, set[str]]]:
    """The fp-deps images each engine had before the test; those the test made are removed after
    it (after the project's images built on them)."""
    before = {engine: deps_images(engine) for engine in ("main", "second")}
    yield before
    for engine, known in before.items():
        made = deps_images(engine) - known
        if made:
            subprocess.run(["docker", *ENGINE_FLAGS[engine], "rmi", "-f", *images_of(project.name, engine)], capture_output=True)
            subprocess.run(["docker", *ENGINE_FLAGS[engine], "rmi", "-f", *made], capture_output=True, check=True)


def deps_images(engine: str = "main") -> set[str]:
    return set(docker("images", "-q", "--no-trunc", "--filter", "label=io.fireplug.kind=deps", engine=engine).split())


def deps_build_containers(engine: str = "main") -> list[str]:
    return docker("ps", "-aq", "--filter", "label=io.fireplug.kind=deps-build", engine=engine).split()


def with_requirements(project: Project, index: PackageIndex, requirements: str, extra_config: str = "") -> None:
    """Requirements with a line of this test's own: its layer is its own, never one a test before left."""
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n\n[build]\npip_index_url = "{index.url}"\nnetwork = "host"\n{extra_config}')
    project.write("requirements.txt", f"# {uuid.uuid4().hex}\n{requirements}")


def fp_ok(project: Project, *argv: str) -> subprocess.CompletedProcess[bytes]:
    result = run_fp(project.root, *argv)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


def test_requirements_are_installed_once_per_host_and_a_code_edit_reinstalls_nothing(
    project: Project, index: PackageIndex, remote: RemoteBench, layers: dict[str, set[str]]
) -> None:
    with_requirements(project, index, "six==1.16.0\ntqdm==4.66.5\n")
    probe = ("--host", "local", "python", "-c", "import six, tqdm; print(six.__version__, tqdm.__version__)")  # with hosts configured, fp would pick one
    first = fp_ok(project, *probe)
    assert first.stdout.decode() == "1.16.0 4.66.5\n"
    assert b"installing the project's dependencies (2 requirements from requirements.txt)" in first.stderr
    [layer] = deps_images() - layers["main"]

    project.write("src/app.py", "print('edited')\n")
    edited = fp_ok(project, *probe)
    assert edited.stdout.decode() == "1.16.0 4.66.5\n"
    assert b"installing the project's dependencies" not in edited.stderr, "a code edit reinstalls nothing"
    assert b"building image" in edited.stderr, "the code layer is rebuilt"
    assert deps_images() - layers["main"] == {layer}

    requirements = (project.root / "requirements.txt").read_text()
    project.write("requirements.txt", requirements + "joblib==1.4.2\n")
    changed = fp_ok(project, "--host", "local", "python", "-c", "import joblib, six; print(joblib.__version__)")
    assert changed.stdout.decode() == "1.4.2\n"
    assert b"installing the project's dependencies (3 requirements" in changed.stderr
    assert len(deps_images() - layers["main"]) == 2

    for attempt in range(2):  # another host: installed there once
        on_second = fp_ok(project, "--host", "second", "python", "-c", "import joblib; print(joblib.__version__)")
        assert on_second.stdout.decode() == "1.4.2\n"
        assert (b"installing the project's dependencies" in on_second.stderr) == (attempt == 0), on_second.stderr
    assert len(deps_images("second") - layers["second"]) == 1


def test_a_pinned_numpy_wins_over_debians_and_debians_packages_stay_usable(project: Project, index: PackageIndex, layers: dict[str, set[str]]) -> None:
    with_requirements(project, index, "numpy==1.26.4\n")
    script = "import numpy, scipy, sys; print(numpy.__version__, numpy.__file__.startswith('/opt/fp-venv/'), sys.prefix)"
    result = fp_ok(project, "python", "-c", script)
    assert result.stdout.decode() == "1.26.4 True /opt/fp-venv\n"
    marker = fp_ok(project, "sh", "-c", "ls /usr/lib/python3*/EXTERNALLY-MANAGED && pip --version")
    assert b"EXTERNALLY-MANAGED" in marker.stdout, "Debian's PEP 668 marker is left in place"
    assert b"/opt/fp-venv/" in marker.stdout, "pip in the container is the project's environment's"


def test_a_missing_package_fails_in_one_line_with_125_and_leaves_no_image(project: Project, index: PackageIndex, layers: dict[str, set[str]]) -> None:
    with_requirements(project, index, "six==1.16.0\nnosuchpackage-fp==1.0\n")
    dangling_before = set(docker("images", "-q", "--no-trunc", "--filter", "dangling=true").split())
    result = run_fp(project.root, "true")
    err = result.stderr.decode()
    assert result.returncode == 125, err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("fp: error")]
    assert "nosuchpackage-fp" in line and "exit status 1" in line, line
    assert deps_images() == layers["main"], "no layer is kept"
    assert deps_build_containers() == []
    assert set(docker("images", "-q", "--no-trunc", "--filter", "dangling=true").split()) == dangling_before


def test_an_index_password_is_in_no_layer_history_label_or_output(project: Project, tmp_path: Path, layers: dict[str, set[str]]) -> None:
    locked = PackageIndex(tmp_path, password=PASSWORD).start()
    try:
        project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n\n[build]\nnetwork = "host"\n')
        project.write("requirements.txt", f"# {uuid.uuid4().hex}\nsix==1.16.0\n")
        env = {**os.environ, "FP_BUILD_PIP_INDEX_URL": locked.url}
        refused = run_fp(project.root, "--dry-run", "true", env={**os.environ, "FP_BUILD_PIP_INDEX_URL": locked.url})
        assert refused.returncode == 0 and PASSWORD.encode() not in refused.stdout + refused.stderr
        assert b"PIP_INDEX_URL=http://****@127.0.0.1" in refused.stdout
        result = run_fp(project.root, "-v", "python", "-c", "import six; print(six.__version__)", env=env)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert result.stdout == b"1.16.0\n", "the install went through the password-protected index"
        assert PASSWORD.encode() not in result.stdout + result.stderr
    finally:
        locked.stop()
    [layer] = deps_images() - layers["main"]
    project_images = docker("images", "-q", "--no-trunc", "--filter", f"label=io.fireplug.project={project.name}").split()
    for image in [layer, *project_images]:
        assert PASSWORD not in docker("history", "--no-trunc", image)
        assert PASSWORD not in docker("image", "inspect", image)
        saved = subprocess.run(["docker", *ENGINE_FLAGS["main"], "save", image], capture_output=True, check=True).stdout
        assert PASSWORD.encode() not in saved, "not in any layer of the saved image"


def test_pyproject_dependencies_with_an_extra_and_apt_packages(project: Project, index: PackageIndex, layers: dict[str, set[str]]) -> None:
    project.write(
        "pyproject.toml",
        '[project]\nname = "demo"\nversion = "1"\ndependencies = ["six==1.16.0"]\n\n'
        '[project.optional-dependencies]\ncli = ["click==8.1.7"]\nweb = ["nosuch-web"]\n',
    )
    project.write(
        "fireplug.toml",
        f'[project]\nname = "{project.name}"\n\n[build]\npip_index_url = "{index.url}"\nnetwork = "host"\nextras = ["cli"]\napt = ["jq"]\n'
        f'pip = ["toolz==0.12.1"]  # {uuid.uuid4().hex}\n',
    )
    dry = fp_ok(project, "--dry-run", "true")
    assert b"deps      3 requirements from pyproject.toml [project.dependencies] [cli] + [build] pip; apt: jq" in dry.stdout, dry.stdout
    result = fp_ok(project, "sh", "-c", "echo '{\"a\": 7}' | jq .a && python -c 'import six, click, toolz; print(click.__version__)'")
    assert result.stdout.decode() == "7\n8.1.7\n"


def test_ctrl_c_during_the_install_leaves_no_container_and_no_image(project: Project, index: PackageIndex, layers: dict[str, set[str]]) -> None:
    with_requirements(project, index, "numpy==1.26.4\n")
    process = start_in_group(project, "true")
    wait_for(lambda: bool(deps_build_containers()), "the install to start", process, timeout=240)
    os.killpg(process.pid, signal.SIGINT)
    code, err, _ = finish(process)
    assert code == 130, err
    assert "Traceback" not in err
    assert deps_build_containers() == []
    assert deps_images() == layers["main"]
    assert containers_of(project.name) == []


def test_a_project_dockerfile_gets_the_layer_through_fp_base_or_keeps_its_requirements(
    project: Project, index: PackageIndex, layers: dict[str, set[str]]
) -> None:
    with_requirements(project, index, "tqdm==4.66.5\n")
    project.write("Dockerfile", "ARG FP_BASE\nFROM ${FP_BASE}\nWORKDIR /app\nCOPY . /app\n")
    on_layer = fp_ok(project, "python", "-c", "import tqdm; print(tqdm.__version__)")
    assert on_layer.stdout == b"4.66.5\n"
    assert b"builds FROM ${FP_BASE}: fp's dependency layer, with requirements.txt installed" in on_layer.stderr

    project.write("Dockerfile", "FROM debian:bookworm-slim\nWORKDIR /app\nCOPY . /app\n")
    own = fp_ok(project, "sh", "-c", "test -f /app/requirements.txt && ! test -e /opt/fp-venv && echo mine")
    assert own.stdout == b"mine\n"
    assert b"does not build FROM ${FP_BASE}, so fp leaves requirements.txt to it" in own.stderr
    assert b"installing the project's dependencies" not in own.stderr
