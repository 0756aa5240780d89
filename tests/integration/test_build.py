"""The one-time image and the base image on the real engine: caching, secrets, recipes, failures."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from fireplug.config import discover
from fireplug.image.base import base_image_tag, remembered_digest
from fireplug.image.build import generated_recipe, scan_rules
from fireplug.image.context import tar_stream
from fireplug.image.scan import scan
from tests.integration.conftest import Project, docker, error_lines, images_of
from tests.unit.test_secrets import SECRET_FILES, TOKEN_FILES, notebook_with_output

pytestmark = pytest.mark.engine  # needs the test bench (tests/run sets it up)


def test_second_run_builds_nothing(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    first = fp(project.root, "true")
    assert first.code == 0 and "building image" in first.err
    second = fp(project.root, "python", "src/app.py")
    assert second.code == 0 and second.out == "app\n"
    assert "building" not in second.err
    assert len(images_of(project.name)) == 1


def test_one_byte_change_rebuilds_and_ships_the_new_byte(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    assert fp(project.root, "true").code == 0
    before = (project.root / "src" / "app.py").stat()
    project.write("src/app.py", "print('apq')\n")  # same size
    os.utime(project.root / "src" / "app.py", ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime
    result = fp(project.root, "python", "src/app.py")
    assert "building image" in result.err
    assert result.out == "apq\n"
    assert len(images_of(project.name)) == 2


def test_touching_code_or_changing_data_does_not_rebuild(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    assert fp(project.root, "true").code == 0
    os.utime(project.root / "src" / "app.py")
    project.write("data/big.csv", "1,2,3\n" * 1000)
    result = fp(project.root, "wc", "-l", "data/big.csv")
    assert result.out == "1000 data/big.csv\n"
    assert "building" not in result.err
    assert len(images_of(project.name)) == 1


def image_paths(image_id: str) -> set[str]:
    """Every path in every layer of the image, from `docker save`."""
    saved = subprocess.run(["docker", "save", image_id], check=True, capture_output=True).stdout
    paths: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        for member in outer.getmembers():
            if member.name.endswith("layer.tar") or member.name.startswith("blobs/"):
                layer = outer.extractfile(member)
                if layer is None:
                    continue
                try:
                    with tarfile.open(fileobj=io.BytesIO(layer.read())) as inner:
                        paths.update(inner.getnames())
                except tarfile.ReadError:
                    continue  # a config or manifest blob
    return paths


def test_secrets_never_reach_the_image(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    secrets = [".env", ".env.production", "id_rsa", "keys/id_ed25519", ".aws/credentials", ".ssh/config", "certs/server.pem", "tls.key", ".netrc"]
    for path in secrets:
        project.write(path, "SECRET-VALUE\n")
    project.write(".git/config", "[core]\n")
    project.write("venv/pyvenv.cfg", "home = /usr\n")
    project.write("venv/lib/site.py", "x\n")
    project.write(".dockerignore", "".join(f"!{path}\n" for path in secrets))  # trying to bring them back
    result = fp(project.root, "true")
    assert result.code == 0, result.err
    assert "kept secret-looking" in result.err
    [image_id] = images_of(project.name)
    relative = project.root.as_posix().lstrip("/")
    shipped = {path[len(relative) + 1 :] for path in image_paths(image_id) if path.startswith(relative + "/")}
    assert "src/app.py" in shipped and "fireplug.toml" in shipped
    assert not shipped & {*secrets, ".git/config", "venv/pyvenv.cfg", "venv/lib/site.py", ".dockerignore"}
    assert not any(".git" in path.split("/") or path.startswith("venv") for path in shipped)


def test_project_dockerfile_is_used_as_is(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\nworkdir = "/app"\n')
    project.write("Dockerfile", "ARG FP_BASE\nFROM ${FP_BASE}\nRUN echo built-by-project > /marker\nCOPY . /app\n")
    result = fp(project.root, "sh", "-c", "cat /marker; python src/app.py; python -c 'import fireplug.serialize'")
    assert result.code == 0, result.err
    assert result.out == "built-by-project\napp\n"


def test_a_project_dockerfile_keeps_its_workdir_and_dockerfile_false_ignores_it(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    project.write("Dockerfile", "ARG FP_BASE\nFROM ${FP_BASE}\nCOPY . /app\nWORKDIR /app\n")  # code at /app, no project.workdir
    project.write("data/in.txt", "input\n")
    used = fp(project.root, "sh", "-c", "pwd; python src/app.py; cat data/in.txt; echo out > data/out.txt")
    assert used.code == 0, used.err
    assert used.out == "/app\napp\ninput\n" and (project.root / "data/out.txt").read_text() == "out\n"
    assert "from the project's Dockerfile (build.dockerfile = false ignores it)" in used.err
    project.write("Dockerfile", 'FROM debian:bookworm-slim\nENTRYPOINT ["/bin/false"]\n')  # an unrelated serving image
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n[build]\ndockerfile = false\n')
    ignored = fp(project.root, "python", "src/app.py")
    assert ignored.code == 0 and ignored.out == "app\n", ignored.err
    assert "from the project's" not in ignored.err


def test_build_failure_shows_the_failing_steps_output(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    project.write("Dockerfile", "ARG FP_BASE\nFROM ${FP_BASE}\nRUN echo the-last-words && exit 7\n")
    result = fp(project.root, "true")
    assert result.code == 125
    assert "the-last-words" in result.err
    error_lines = [line for line in result.err.splitlines() if line.startswith("fp: error:")]
    assert len(error_lines) == 1
    assert f"building fp-{project.key}:" in error_lines[0] and "non-zero code: 7" in error_lines[0]


def test_unavailable_base_from_image_is_one_line(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    missing = "127.0.0.1:9/fireplug-testbed/missing:1"  # a registry that refuses at once, on loopback
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n[build]\nbase_image = "{missing}"\n')
    result = fp(project.root, "true")
    assert result.code == 125
    [line] = [line for line in result.err.splitlines() if line.startswith("fp: error:")]
    assert f"base image {missing} is not on host 'local' and could not be pulled" in line
    assert "Traceback" not in result.err


def test_base_is_built_on_first_use(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    alias = f"fireplug-testbed/first-use:{uuid.uuid4().hex[:8]}"
    docker("tag", "debian:bookworm-slim", alias)
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n[build]\nbase_image = "{alias}"\n')
    try:
        result = fp(project.root, "python", "-c", "import fireplug.serialize, numpy, tables, blosc, pandas, scipy, boto3; print('stack ok')")
        assert result.code == 0, result.err
        assert "building the base image fireplug-base:" in result.err and f"from {alias}" in result.err
        assert result.out == "stack ok\n"
        built = docker("images", "--filter", "label=io.fireplug.kind=base", "--filter", f"label=io.fireplug.from={alias}", "--format", "{{json .}}")
        assert [json.loads(line)["Repository"] for line in built.splitlines()] == ["fireplug-base"]
    finally:
        base_filter = ("--filter", "label=io.fireplug.kind=base", "--filter", f"label=io.fireplug.from={alias}")
        for tag in docker("images", *base_filter, "--format", "{{.Repository}}:{{.Tag}}").split():
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
        subprocess.run(["docker", "rmi", alias], capture_output=True)


def test_every_kind_of_secret_stays_out_of_every_layer(project: Project, isolated_home: Path, fp) -> None:  # type: ignore[no-untyped-def]
    markers = {}
    for index, (path, data) in enumerate(SECRET_FILES.items()):
        markers[path] = f"FP-SECRET-MARKER-{index:02d}".encode()
        project.write(path, data + b"\n" + markers[path] + b"\n")
    outside = isolated_home / ".aws" / "credentials"  # the user's real credentials, linked into the project
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"[default]\nFP-SECRET-MARKER-OUTSIDE\n")
    (project.root / "src").mkdir(exist_ok=True)
    os.link(outside, project.root / "src" / "defaults.cfg")
    markers["src/defaults.cfg"] = b"FP-SECRET-MARKER-OUTSIDE"
    project.write(".dockerignore", "".join(f"!{path}\n" for path in markers))
    project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n\n[build]\nallow = ["config/secrets.yaml"]\n')
    result = fp(project.root, "-v", "-e", "STRIPE_KEY=sk_live_FPMARK", "sh", "-c", "cat config/secrets.yaml", "--password=FPMARK2")
    assert result.code == 0, result.err
    assert markers["config/secrets.yaml"].decode() in result.out, "allowed by [build] allow, so it is shipped"
    assert "sk_live_FPMARK" not in result.err and "FPMARK2" not in result.err, "-v shows values redacted"
    [image_id] = images_of(project.name)
    layers = image_bytes(image_id)
    leaked = [path for path, marker in markers.items() if marker in layers and path != "config/secrets.yaml"]
    assert leaked == [], f"in the image: {leaked}"


def image_bytes(image_id: str) -> bytes:
    """Everything `docker save` gives for the image (layers as stored: uncompressed tars)."""
    return subprocess.run(["docker", "save", image_id], check=True, capture_output=True).stdout


def test_a_folder_of_many_projects_is_refused_before_anything_is_built(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    (project.root / "fireplug.toml").unlink()  # no fireplug.toml: fp cannot know this folder is one project
    (project.root / "other-project").mkdir()
    with open(project.root / "other-project" / "weights.bin", "wb") as sparse:
        sparse.truncate(2 << 30)
    result = fp(project.root, "true")
    assert result.code == 125 and result.err.count("fp: error:") == 1 and "Traceback" not in result.err
    assert "looks like more than one project (biggest: other-project/ 2.1 GB" in result.err and "--yes" in result.err
    assert images_of(project.name) == []
    dry = fp(project.root, "--dry-run", "true")  # refused the same way: it used to read the whole folder, then exit 0
    assert dry.code == 125 and dry.err.count("fp: error:") == 1 and "looks like more than one project" in dry.err and dry.out == "", dry.err
    assert fp(project.root, "--dry-run", "--yes", "true").code == 0


def test_files_holding_tokens_stay_out_of_every_layer_and_the_build_line_counts_them(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    """The fault probe's secret files: netrc content under another name, a token in a notebook's
    output, {"token": ...} JSON, an export in a shell file, an API key in settings.py; and the
    big providers' token formats. None reaches the image; the build line says how many were kept out."""
    token_files = {**TOKEN_FILES, "analysis/eda.ipynb": notebook_with_output("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567\n", 50_000)}
    for path, data in token_files.items():
        project.write(path, data)
    project.write("src/harmless.py", "PASSWORD_RESET_TIMEOUT = 259200\ntoken = os.environ['HF_TOKEN']\n")
    result = fp(project.root, "true")
    assert result.code == 0, result.err
    assert f"{len(token_files)} kept out as secrets)" in result.err, result.err
    [image_id] = images_of(project.name)
    relative = project.root.as_posix().lstrip("/")
    shipped = {path[len(relative) + 1 :] for path in image_paths(image_id) if path.startswith(relative + "/")}
    assert "src/harmless.py" in shipped and not shipped & set(token_files)
    layers = image_bytes(image_id)
    for token in (b"6f1e0c3a9b8d7e6f5a4b", b"hf_AbCdEfGhIjKlMnOpQr", b"3d9f8a7b6c5e4d3c2b1a", b"a8f5f167f44f4964e6c9", b"ghp_aB3dE5fG7hJ9kL1m"):
        assert token not in layers, token


def test_an_index_password_in_fireplug_toml_is_refused_even_without_dependencies(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    """fireplug.toml is shipped with the code: a password in [build] pip_index_url (or in a pip
    option) used to reach the image when the project had no dependency layer."""
    for setting in ('pip_index_url = "https://u:PW-FP-MARK@127.0.0.1:9/simple/"', 'pip = ["--index-url=https://u:PW-FP-MARK@127.0.0.1:9/simple/"]'):
        project.write("fireplug.toml", f'[project]\nname = "{project.name}"\n\n[build]\n{setting}\n')
        result = fp(project.root, "true")
        assert result.code == 125 and len(error_lines(result.err)) == 1 and "shipped with the code" in result.err, result.err
        assert "PW-FP-MARK" not in result.err
        assert images_of(project.name) == []


def test_the_assembled_image_is_what_its_recipe_builds(project: Project, fp) -> None:  # type: ignore[no-untyped-def]
    """fp makes the generated recipe's image by unpacking the context into a container of the base
    and committing it; a Dockerfile build of the same recipe and context must give the same image."""
    project.write("bin/tool.sh", "#!/bin/sh\necho tool\n", mode=0o755)
    project.write("notes/private.txt", "mine\n", mode=0o600)
    project.write("name with spaces.txt", "x\n")
    (project.root / "empty").mkdir()
    (project.root / "link.py").symlink_to("src/app.py")
    assert fp(project.root, "true").code == 0
    assembled = images_of(project.name)[0]
    config = discover(project.root, os.environ, Path.home(), {})
    recipe = generated_recipe(config, base_image_tag(config.build.base_image, remembered_digest(None)))
    context = scan(project.root, scan_rules(config, recipe.name, generated=True))
    built = f"fp-recipe-check-{uuid.uuid4().hex[:8]}:latest"
    ignore = f".dockerignore\n{recipe.name}\n"  # what fp sent with the recipe when it built it
    stream = b"".join(tar_stream(context, [(recipe.name, recipe.text.encode()), (".dockerignore", ignore.encode())]))
    subprocess.run(["docker", "build", "-q", "-f", recipe.name, "-t", built, "-"], input=stream, check=True, capture_output=True)
    try:
        assert image_config(assembled) == image_config(built)
        ancestors = " ".join(str(parent) for parent in reversed(project.root.parents))
        listing = 'cd "$1" && find . -printf "%p %y %m %u %g %s %l\\n" | sort && find . -type f -exec sha256sum {} + | sort'
        script = f'{listing} && stat -c "%n %a %U" {ancestors} "$1"'
        seen = [docker("run", "--rm", image, "sh", "-c", script, "sh", str(project.root)) for image in (assembled, built)]
        assert seen[0] == seen[1]
        assert "./bin/tool.sh f 755 root root" in seen[0] and "./notes/private.txt f 600 root root" in seen[0] and "./link.py l 777" in seen[0]
        assert "./empty d 755" in seen[0] and "./name with spaces.txt f 644" in seen[0]
    finally:
        docker("rmi", built)


def image_config(image: str) -> dict[str, object]:
    """What a container of ``image`` starts with (what belongs to one container left out)."""
    config = json.loads(docker("inspect", "--format", "{{json .Config}}", image))
    return {key: value for key, value in config.items() if key not in ("Hostname", "Domainname", "Image", "OnBuild")}
