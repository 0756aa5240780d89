from __future__ import annotations

from pathlib import Path

import pytest

from fireplug.config import Source, discover, find_project_root, load, sanitize_name
from fireplug.errors import ConfigError, ProjectError

ROOT = Path("/work/My Project")


def test_defaults_come_from_the_folder() -> None:
    config = load([], {}, {}, root=ROOT)
    assert config.project.name == "my-project"
    assert config.project.data == "data"
    assert config.project.result_folders == ("data",)
    assert config.build.base_image == "debian:bookworm-slim"
    assert config.run.user == "auto"
    assert config.container_root() == "/work/My Project"


def test_priority_is_defaults_user_project_env_overrides() -> None:
    user = Source("user.toml", '[build]\nbase_image = "from-user"\n[project]\ndata = "user-data"\n[run]\nuser = "root"\n')
    project = Source("fireplug.toml", '[project]\ndata = "project-data"\n[run]\nuser = "1000"\n')
    env = {"FP_RUN_USER": "1234:5", "FP_PROJECT_RESULTS": "project-data/a, project-data/b"}
    config = load([user, project], env, {"run": {"env": ["X=1"]}}, root=ROOT)
    assert config.build.base_image == "from-user"
    assert config.project.data == "project-data"
    assert config.run.user == "1234:5"
    assert config.project.results == ("project-data/a", "project-data/b")
    assert config.run.env == ("X=1",)


def test_overrides_beat_the_environment() -> None:
    config = load([], {"FP_BUILD_BASE_IMAGE": "env"}, {"build": {"base_image": "flag"}}, root=ROOT)
    assert config.build.base_image == "flag"


def test_hosts_tables_merge_by_name() -> None:
    user = Source("user.toml", '[hosts.aws02]\nurl = "ssh://u@aws02"\nssh_port = 2222\n')
    project = Source("fireplug.toml", '[hosts.aws02]\ndata_root = "/scratch"\n[hosts.aws02.labels]\ngpus = "1"\n')
    host = load([user, project], {}, {}, root=ROOT).hosts["aws02"]
    assert (host.url, host.ssh_port, host.data_root, dict(host.labels)) == ("ssh://u@aws02", 2222, "/scratch", {"gpus": "1"})


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        pytest.param('[project]\nname = "x"\ndta = "d"\n', 3, "unknown key 'dta' in [project]", id="unknown-key"),
        pytest.param("[project]\n\n\ndata = 3\n", 4, "'project.data' must be a string", id="wrong-type"),
        pytest.param("[run]\nenv = ['A', 1]\n", 2, "'run.env' must be a list of strings", id="wrong-list-item"),
        pytest.param('[project]\nname = "x"\nname =\n', 3, "invalid TOML", id="bad-toml"),
        pytest.param('[projet]\nname = "x"\n', 1, "unknown section [projet]", id="unknown-section"),
        pytest.param('[hosts.a]\nurl = "ssh://a"\nport = 22\n', 3, "unknown key 'port' in [hosts.a]", id="unknown-host-key"),
        pytest.param("[hosts.a]\nssh_port = true\n", 2, "'hosts.a.ssh_port' must be an integer", id="bool-is-not-int"),
    ],
)
def test_malformed_files_name_file_line_and_key(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load([Source("/p/fireplug.toml", text)], {}, {}, root=ROOT)
    assert str(raised.value).startswith(f"/p/fireplug.toml:{line}: ")
    assert fragment in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        pytest.param({"project": {"data": "/abs"}}, "must be a sub-folder", id="absolute-data"),
        pytest.param({"project": {"data": "../up"}}, "must be a sub-folder", id="escaping-data"),
        pytest.param({"project": {"data": "."}}, "must be a sub-folder", id="root-as-data"),
        pytest.param({"project": {"results": ["elsewhere"]}}, "not inside the data folder", id="result-outside-data"),
        pytest.param({"project": {"name": "Bad Name"}}, "not usable as an image name", id="bad-name"),
        pytest.param({"project": {"workdir": "relative"}}, "must be an absolute path", id="relative-workdir"),
        pytest.param({"run": {"user": "alice"}}, "'auto', 'root' or UID[:GID]", id="bad-user"),
    ],
)
def test_invalid_values_are_refused(settings: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load([], {}, settings, root=ROOT)
    assert fragment in str(raised.value)


def test_data_folder_is_normalised() -> None:
    config = load([], {}, {"project": {"data": "./inputs//raw/", "results": ["inputs/raw/out"]}}, root=ROOT)
    assert config.project.data == "inputs/raw"
    assert config.project.result_folders == ("inputs/raw/out",)


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("My Project", "my-project"),
        ("__x__", "x"),
        ("Ünïcode", "unicode"),
        ("My Kaggle Прогноз", "my-kaggle-prognoz"),
        ("Αθήνα", "athina"),
        ("数据", "project"),
        ("...", "project"),
        ("a.b_c-d", "a.b_c-d"),
    ],
)
def test_sanitize_name(folder: str, name: str) -> None:
    assert sanitize_name(folder) == name


def test_project_root_is_the_nearest_fireplug_toml(tmp_path: Path) -> None:
    (tmp_path / "proj" / "src" / "deep").mkdir(parents=True)
    (tmp_path / "proj" / "fireplug.toml").write_text("")
    assert find_project_root(tmp_path / "proj" / "src" / "deep", home=tmp_path / "home") == tmp_path / "proj"
    assert find_project_root(tmp_path, home=tmp_path / "home") == tmp_path


def test_home_or_root_is_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="home folder"):
        find_project_root(tmp_path, home=tmp_path)
    with pytest.raises(ProjectError):
        find_project_root(Path("/"), home=tmp_path)


def test_discover_reads_user_and_project_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "fireplug").mkdir(parents=True)
    (home / ".config" / "fireplug" / "config.toml").write_text('[build]\nbase_image = "user-base"\n')
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "fireplug.toml").write_text('[project]\nname = "p1"\n')
    config = discover(tmp_path / "p", {}, home, {})
    assert (config.project.name, config.build.base_image, config.root) == ("p1", "user-base", tmp_path / "p")
    xdg = discover(tmp_path / "p", {"XDG_CONFIG_HOME": str(tmp_path / "nowhere")}, home, {})
    assert xdg.build.base_image == "debian:bookworm-slim"


def test_dockerfile_false_pool_and_host_pool_flags_are_typed() -> None:
    root = Path("/p")
    config = load(
        [Source("f", '[build]\ndockerfile = false\n[pool]\nhosts = ["a"]\ndefault_host = "a"\n[hosts.a]\nurl = "ssh://a"\npool = false\n')], {}, {}, root=root
    )
    assert (config.build.use_dockerfile, config.build.dockerfile) == (False, "")
    assert config.pool.hosts == ("a",) and config.pool.default_host == "a" and config.hosts["a"].pool is False
    assert load([], {"FP_BUILD_DOCKERFILE": "false"}, {}, root=root).build.use_dockerfile is False
    assert load([Source("f", '[build]\ndockerfile = "docker/train.Dockerfile"\n')], {}, {}, root=root).build.dockerfile == "docker/train.Dockerfile"
    for text, fragment in (
        ("[build]\ndockerfile = 3\n", "'build.dockerfile' must be a path or false"),
        ('[hosts.a]\nurl = "ssh://a"\npool = "yes"\n', "'hosts.a.pool' must be true or false"),
        ('[pool]\nhosts = ["bad name"]\n', "not a host name"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            load([Source("f", text)], {}, {}, root=root)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        pytest.param('kind = "swarms"\nregistry = "r:5000"\n', "is not one of docker, swarm", id="unknown-kind"),
        pytest.param('kind = "swarm"\n', "pull one-time images from a registry", id="swarm-without-registry"),
    ],
)
def test_a_swarm_host_needs_a_known_kind_and_a_registry(table: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load([Source("user.toml", f'[hosts.lab]\nurl = "ssh://m"\n{table}')], {}, {}, root=ROOT)


SHIPPED_CREDENTIALS = {
    "index password": ('[build]\npip_index_url = "https://u:PW123456@pkgs.example/simple/"\n', "build.pip_index_url", 2),
    "http index": ('[build]\npip_extra_index_url = ["http://me:hunter22@10.1.2.3:8080/simple"]\n', "build.pip_extra_index_url", 2),
    "token-only URL": ('[build]\npip_index_url = "https://3d9f8a7b6c5e4d3c2b1a@pkgs.example/simple/"\n', "build.pip_index_url", 2),
    "pip option": ('[build]\npip = ["six", "--index-url=https://u:PW123456@pkgs.example/simple/"]\n', "build.pip", 2),
    "find links": ('[build]\npip_find_links = ["https://u:PW123456@files.example/wheels/"]\n', "build.pip_find_links", 2),
    "a token in run.env": ('[run]\nenv = ["HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"]\n', "run.env", 2),
    "a password in run.env": ('[run]\nenv = ["DB_PASSWORD=hunter22"]\n', "run.env", 2),
    "a host's label": ('[hosts.lab]\nurl = "tcp://lab:2376"\nlabels = { note = "https://u:PW123456@lab/x" }\n', "hosts.lab.labels.note", None),
}


@pytest.mark.parametrize("case", sorted(SHIPPED_CREDENTIALS))
def test_a_credential_anywhere_in_the_shipped_fireplug_toml_is_refused(case: str) -> None:
    """fireplug.toml goes into the image with the code: with or without a dependency layer, a
    credential in any of its values is refused in one line that does not show it."""
    text, key, line = SHIPPED_CREDENTIALS[case]
    with pytest.raises(ConfigError) as refused:
        load([Source("/p/fireplug.toml", text, shipped=True)], {}, {}, root=ROOT)
    assert refused.value.key == key and refused.value.line == line and "shipped with the code" in str(refused.value)
    assert not any(secret in str(refused.value) for secret in ("PW123456", "hunter22", "3d9f8a7b", "hf_AbC"))
    assert " holds a" in str(refused.value)  # "'run.env' holds a literal value for a secret-named variable", "... holds a password in a URL"
    assert load([Source("/u/config.toml", text)], {}, {}, root=ROOT)  # the user's own config stays on this machine


def test_settings_that_only_look_like_credentials_are_kept() -> None:
    text = '[build]\npip_index_url = "https://pkgs.example/simple/"\npip = ["git+ssh://git@github.com/org/repo.git"]\n[run]\nenv = ["HF_TOKEN"]\n'
    assert load([Source("/p/fireplug.toml", text, shipped=True)], {}, {}, root=ROOT).run.env == ("HF_TOKEN",)


def test_discover_treats_the_project_file_as_shipped(tmp_path: Path) -> None:
    (tmp_path / "fireplug.toml").write_text('[build]\npip_index_url = "https://u:PW123456@pkgs.example/simple/"\n')
    with pytest.raises(ConfigError, match="shipped with the code"):
        discover(tmp_path, {}, tmp_path / "home", {})
