"""`fp init`: a commented fireplug.toml and a .dockerignore with safe defaults.

Existing files are never overwritten. Every prompt has a flag, so it runs unattended.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fireplug.config import DEFAULT_BASE_IMAGE, PROJECT_FILE, Source, load, new_id, sanitize_name

Ask = Callable[[str, str], str]  # (question, default) -> answer


@dataclass(frozen=True)
class InitAnswers:
    name: str
    data: str
    results: tuple[str, ...]
    base_image: str
    id: str = ""


@dataclass(frozen=True)
class InitResult:
    written: tuple[Path, ...]
    kept: tuple[Path, ...]


PROJECT_TEMPLATE = """\
# fireplug project settings. fp finds this file by walking up from the current folder.
# Priority, lowest first: these defaults < ~/.config/fireplug/config.toml < this file
# < environment variables FP_<SECTION>_<KEY> (FP_PROJECT_DATA, FP_BUILD_BASE_IMAGE...)
# < command-line flags.

[project]
# Name of the project's images (fp-NAME-ID:HASH) and of its folder on remote hosts (NAME-ID).
name = {name}
# What tells this project apart from any other of the same name (keep it when you move or
# copy the folder; a copy that should be a project of its own needs a new one).
id = {id}
# The data folder: never built into the image; the container sees it at the same relative
# path (on the local engine it is this very folder, mounted, not copied).
data = {data}
# Folders inside the data folder that come back after a run on a remote host;
# an empty list means the whole data folder.
results = {results}
# Where the project sits inside the container; unset = the same absolute path as here,
# so tracebacks and recorded paths match your machine.
# workdir = "/work/project"

[build]
# The image fp's base image is built FROM. The base (Dockerfile.base) adds Python 3,
# numpy, PyTables, blosc, pandas, scipy, boto3, rsync and fireplug itself.
# A Dockerfile in the project replaces fp's generated one; it may start with
#   ARG FP_BASE
#   FROM ${{FP_BASE}}
# to build on fp's base image.
base_image = {base_image}
# dockerfile = "docker/Dockerfile"

[run]
# Environment variables for the command: "NAME" passes your local value, "NAME=value" a fixed one.
# Values never go into images. `fp -e NAME ...` adds more for one run.
env = []
# "auto": on the local engine, run as your own user so files written to the data folder
# stay yours; "root"; or "UID:GID".
user = "auto"

# Remote Docker hosts, each a [hosts.NAME] table:
# [hosts.aws02]
# url = "ssh://ubuntu@aws02"
# data_root = "/data"
"""

DOCKERIGNORE_TEMPLATE = """\
# What fp leaves out of the project's image, with Docker's .dockerignore rules: a pattern is
# anchored at the project folder ("build" is ./build only), ** matches any depth, and a line
# starting with ! brings a path back. `fp --dry-run CMD` lists what is shipped and which
# rule left each path out.
#
# Always left out, whatever this file says: the data folder, .git, virtualenvs, caches and
# secret-looking files (.env*, *.pem, *.key, id_rsa..., .ssh, .aws, .netrc...).
**/*.py[co]
**/.DS_Store
*.egg-info
.tox
.nox
.coverage
htmlcov
# build
# dist
"""


def default_answers(folder: Path) -> InitAnswers:
    return InitAnswers(name=sanitize_name(folder.name), data="data", results=(), base_image=DEFAULT_BASE_IMAGE, id=new_id())


def ask_missing(defaults: InitAnswers, given: Mapping[str, object], ask: Ask | None) -> InitAnswers:
    """Fill every answer from its flag, else from ``ask`` (interactive), else the default."""

    def pick(key: str, question: str, default: str) -> str:
        value = given.get(key)
        if value is not None:
            return str(value)
        return ask(question, default) if ask else default

    name = pick("name", "Project name", defaults.name)
    data = pick("data", "Data folder", defaults.data)
    given_results = given.get("results")
    if given_results is None:
        answer = pick("results", "Result folders inside the data folder (comma-separated; empty = all of it)", "")
        given_results = [part.strip() for part in answer.split(",") if part.strip()]
    listed = given_results if isinstance(given_results, (list, tuple)) else [given_results]
    base_image = pick("base_image", "Base image (what fp's base image is built FROM)", defaults.base_image)
    results = tuple(within_data(str(item), data) for item in listed)
    return InitAnswers(name=name, data=data, results=results, base_image=base_image, id=defaults.id or new_id())


def within_data(result: str, data: str) -> str:
    """A result folder as fireplug.toml holds it (relative to the project), given relative to
    the data folder as the question asks (``output``), or already with it (``data/output``)."""
    cleaned = result.strip().strip("/")
    data = data.strip().strip("/")
    if cleaned == data or cleaned.startswith(data + "/"):
        return cleaned
    return f"{data}/{cleaned}"


def render_project_file(answers: InitAnswers) -> str:
    return PROJECT_TEMPLATE.format(
        name=json.dumps(answers.name),
        data=json.dumps(answers.data),
        results=json.dumps(list(answers.results)),
        base_image=json.dumps(answers.base_image),
        id=json.dumps(answers.id or new_id()),
    )


def init_project(folder: Path, answers: InitAnswers) -> InitResult:
    """Write fireplug.toml and .dockerignore where missing, and create the data folder.

    Raises:
        ConfigError: the answers do not make a valid configuration.
    """
    project_text = render_project_file(answers)
    load([Source(PROJECT_FILE, project_text)], {}, {}, root=folder)  # validate before writing anything
    written, kept = [], []
    for path, text in ((folder / PROJECT_FILE, project_text), (folder / ".dockerignore", DOCKERIGNORE_TEMPLATE)):
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            kept.append(path)
            continue
        written.append(path)
    (folder / answers.data).mkdir(parents=True, exist_ok=True)
    return InitResult(tuple(written), tuple(kept))
