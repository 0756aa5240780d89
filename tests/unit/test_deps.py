"""The dependency layer's pure logic: what is found in a project, what the install reads, the
hash that names the layer, and credentials kept out of everything shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from fireplug.config import Source, load
from fireplug.errors import ConfigError
from fireplug.image.build import install_failure
from fireplug.image.deps import GENERATED, Dependencies, find_dependencies, install_script, layer_tag, redact_url, stdin_settings


def found(root: Path, build: str = "", env: dict[str, str] | None = None) -> Dependencies | None:
    sources = [Source(str(root / "fireplug.toml"), f"[build]\n{build}")] if build else []
    return find_dependencies(load(sources, env or {}, {}, root=root))


def write(root: Path, relative: str, text: str | bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def test_a_project_without_requirements_has_no_layer(tmp_path: Path) -> None:
    assert found(tmp_path) is None
    write(tmp_path, "requirements.txt", "six\n")
    assert found(tmp_path, "requirements = false") is None


def test_requirements_txt_and_every_project_file_it_references(tmp_path: Path) -> None:
    write(tmp_path, "requirements.txt", "-r reqs/base.txt  # shared\nsix==1.16.0 \\\n  ; python_version > '3'\n./wheels/tool-1.0-py3-none-any.whl\n-e .\n")
    write(tmp_path, "reqs/base.txt", "-c constraints.txt\n--find-links ../local-wheels\ntqdm\n")
    write(tmp_path, "reqs/constraints.txt", "tqdm<5\n")
    write(tmp_path, "wheels/tool-1.0-py3-none-any.whl", b"PK wheel")
    write(tmp_path, "local-wheels/a-1-py3-none-any.whl", b"PK a")
    write(tmp_path, "local-wheels/__pycache__/x.pyc", b"never")
    deps = found(tmp_path)
    assert deps is not None
    assert deps.source == "requirements.txt" and deps.requirement_files == ("requirements.txt",)
    assert [name for name, _ in deps.files] == [
        "local-wheels/a-1-py3-none-any.whl",
        "reqs/base.txt",
        "reqs/constraints.txt",
        "requirements.txt",
        "wheels/tool-1.0-py3-none-any.whl",
    ]
    shipped = dict(deps.files)["requirements.txt"].decode()
    assert "# left out by fp: -e ." in shipped and "\n-e .\n" not in shipped, "the project itself is not installed in the layer"
    assert any("installs the project itself" in note for note in deps.notes)
    assert deps.requirement_count == 3


def test_a_reference_outside_the_project_or_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    project = tmp_path / "p"
    write(project, "requirements.txt", "../elsewhere/pkg.whl\n")
    with pytest.raises(ConfigError, match=r"requirements.txt: ../elsewhere/pkg.whl: \.\./elsewhere/pkg.whl is outside the project"):
        found(project)
    write(project, "requirements.txt", "-r missing.txt\n")
    with pytest.raises(ConfigError, match=r"cannot read missing\.txt"):
        found(project)
    with pytest.raises(ConfigError, match="must be a file inside the project"):
        found(project, 'requirements = "/etc/passwd"')


def test_pyproject_dependencies_with_named_groups_and_fp_s_own_lines(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\ndependencies = ["six"]\n[project.optional-dependencies]\ncli = ["click"]\nweb = ["flask"]\n')
    deps = found(tmp_path, 'extras = ["cli"]\npip = ["toolz==0.12.1"]\napt = ["libgomp1"]')
    assert deps is not None
    assert deps.source == "pyproject.toml [project.dependencies] [cli] + [build] pip"
    assert dict(deps.files)[GENERATED] == b"six\nclick\ntoolz==0.12.1\n"
    assert deps.summary() == "3 requirements from pyproject.toml [project.dependencies] [cli] + [build] pip; apt: libgomp1"
    with pytest.raises(ConfigError, match=r"no optional-dependencies group 'gpu' \(it has: cli, web\)"):
        found(tmp_path, 'extras = ["gpu"]')
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\ndynamic = ["dependencies"]\n')
    with pytest.raises(ConfigError, match="dynamic"):
        found(tmp_path)


def test_requirements_that_install_the_project_bring_its_pyproject_dependencies(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\ndependencies = ["six"]\n')
    write(tmp_path, "requirements.txt", "-e .\n")
    deps = found(tmp_path)
    assert deps is not None and deps.requirement_files == ("requirements.txt", GENERATED)
    assert dict(deps.files)[GENERATED] == b"six\n"


def test_apt_packages_alone_make_a_layer_without_a_virtual_environment(tmp_path: Path) -> None:
    deps = found(tmp_path, 'apt = ["jq", "libgomp1=12.2.0-14"]')
    assert deps is not None and not deps.has_pip
    script = install_script(deps)
    assert "apt-get install -y --no-install-recommends jq libgomp1=12.2.0-14" in script and "venv" not in script
    with pytest.raises(ConfigError, match="not a Debian package name"):
        found(tmp_path, 'apt = ["jq; rm -rf /"]')


def test_the_layer_hash_follows_what_is_installed_and_not_the_password(tmp_path: Path) -> None:
    write(tmp_path, "requirements.txt", "six\n")
    with_password = found(tmp_path, 'pip_index_url = "https://me:hunter22@pkgs.example/simple/"')
    other_password = found(tmp_path, 'pip_index_url = "https://me:other999@pkgs.example/simple/"')
    other_index = found(tmp_path, 'pip_index_url = "https://me:hunter22@mirror.example/simple/"')
    assert with_password and other_password and other_index
    assert layer_tag(with_password, "sha256:b1") == layer_tag(other_password, "sha256:b1")
    assert layer_tag(with_password, "sha256:b1") != layer_tag(with_password, "sha256:b2"), "another base image, another layer"
    assert layer_tag(with_password, "sha256:b1") != layer_tag(other_index, "sha256:b1")
    write(tmp_path, "requirements.txt", "six\ntqdm\n")
    edited = found(tmp_path, 'pip_index_url = "https://me:hunter22@pkgs.example/simple/"')
    assert edited and layer_tag(edited, "sha256:b1") != layer_tag(with_password, "sha256:b1")


def test_credentials_reach_the_install_on_stdin_only_and_are_redacted_where_shown(tmp_path: Path) -> None:
    write(tmp_path, "requirements.txt", "six\n")
    env = {"FP_BUILD_PIP_INDEX_URL": "https://me:hunter22@pkgs.example/simple/", "FP_BUILD_PIP_EXTRA_INDEX_URL": "https://tok3n@extra.example/simple/"}
    deps = found(tmp_path, env=env)
    assert deps is not None
    assert "hunter22" not in install_script(deps) and "tok3n" not in install_script(deps)
    assert stdin_settings(deps) == b"PIP_INDEX_URL=https://me:hunter22@pkgs.example/simple/\nPIP_EXTRA_INDEX_URL=https://tok3n@extra.example/simple/\n"
    assert deps.index.redacted() == ["PIP_INDEX_URL=https://****@pkgs.example/simple/", "PIP_EXTRA_INDEX_URL=https://****@extra.example/simple/"]
    assert set(deps.index.secrets()) == {"hunter22", "tok3n"}
    assert redact_url("http://127.0.0.1:8080/simple/") == "http://127.0.0.1:8080/simple/"


def test_a_failed_install_is_said_in_pip_s_or_apt_s_last_error_line() -> None:
    pip = ["Collecting nosuch", "ERROR: Could not find a version that satisfies the requirement nosuch", "ERROR: No matching distribution found for nosuch"]
    assert install_failure(pip) == "ERROR: No matching distribution found for nosuch"
    assert install_failure(["Reading package lists...", "E: Unable to locate package nosuch"]) == "E: Unable to locate package nosuch"
    assert install_failure(["something odd"]) == "something odd"
    assert install_failure([]) == "no output"


def test_install_output_is_cut_in_lines_per_stream_and_keeps_a_last_line_without_newline() -> None:
    from fireplug.image.build import _lines

    frames = iter([(1, b"Collecting six\nColl"), (2, b"E: Unable to "), (1, b"ecting tqdm\n"), (2, b"locate package nosuch")])
    assert list(_lines(frames)) == [b"Collecting six", b"Collecting tqdm", b"E: Unable to locate package nosuch"]
