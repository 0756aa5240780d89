"""The command line, in-process: parsing, usage errors, and fp's own failures (no engine needed)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from fireplug import __version__
from fireplug.cli import _split_command, build_parser, main


@pytest.mark.parametrize(
    ("argv", "command", "explicit", "options"),
    [
        pytest.param(["python", "model.py", "-v", "-f0"], ["python", "model.py", "-v", "-f0"], False, {"verbose": False}, id="user-flags-untouched"),
        pytest.param(["-v", "-e", "A", "-e", "B=1", "python"], ["python"], False, {"verbose": True, "env": ["A", "B=1"]}, id="fp-flags-first"),
        pytest.param(["--", "init"], ["init"], True, {}, id="double-dash"),
        pytest.param(["--host", "local", "--", "-weird"], ["-weird"], True, {"host": "local"}, id="dash-command"),
        pytest.param(["ls", "--", "x"], ["ls", "--", "x"], False, {}, id="later-double-dash-is-the-commands"),
    ],
)
def test_command_is_everything_after_fps_options(argv: list[str], command: list[str], explicit: bool, options: dict) -> None:
    args = build_parser().parse_args(argv)
    assert _split_command(args.command) == (command, explicit)
    for key, value in options.items():
        assert getattr(args, key) == value


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fp {__version__}"
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for expected in (
        "--host",
        "--dry-run",
        "-e NAME[=VALUE]",
        "fp init",
        "fp base build",
        "fp hosts add",
        "--sync-out-only",
        "--full-sync",
        "the pool",
        "FP_HOST",
        "125",
        "130",
    ):
        assert expected in text


@pytest.mark.parametrize("argv", [[], ["--no-such-option", "x"], ["-e"], ["base"], ["base", "frobnicate"], ["init", "--bogus"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_malformed_project_file_is_one_line_and_125(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fireplug.toml").write_text('[project]\nname = "p"\n\n[build]\nbase = "x"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["true"]) == 125
    line = one_error_line(capsys.readouterr().err)
    assert f"{tmp_path / 'fireplug.toml'}:5: unknown key 'base' in [build]" in line


def test_unknown_host_lists_the_known_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--host", "aws02", "true"]) == 125
    assert "unknown host 'aws02' (known hosts: local)" in one_error_line(capsys.readouterr().err)


def test_home_folder_is_refused(isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(isolated_home)
    assert main(["true"]) == 125
    assert "home folder" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("kind", ["missing", "refusing"])
def test_engine_down_is_one_line_and_125(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "a.py").write_text("print(1)\n")
    path = tmp_path / "engine.sock"
    if kind == "refusing":
        bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound.bind(str(path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.chdir(project)
    assert main(["python", "a.py"]) == 125
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot reach the Docker engine of host 'local' at unix://{path}" in line
    assert "sudo systemctl start docker" in line


def test_dry_run_lists_what_would_be_sent_and_sends_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")  # proves no engine is contacted
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("x" * 5000)
    (tmp_path / "notes.md").write_text("notes")
    (tmp_path / ".env").write_text("TOKEN=1")
    (tmp_path / ".dockerignore").write_text("*.md\n")
    monkeypatch.chdir(tmp_path)
    assert main(["--dry-run", "python", "src/model.py", "-v"]) == 0
    out = capsys.readouterr().out
    assert "context   1 files, 5.0 KB" in out
    assert "src/model.py" in out
    assert ".dockerignore line 1: *.md" in out
    assert "built-in: secret (environment file)" in out
    assert "command   python src/model.py -v" in out
    assert not (tmp_path / "data").exists()


def test_init_writes_both_files_and_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "My Model"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert main(["init", "--yes", "--data", "inputs", "--results", "inputs/out"]) == 0
    text = (folder / "fireplug.toml").read_text()
    assert 'name = "my-model"' in text and 'data = "inputs"' in text and 'results = ["inputs/out"]' in text
    assert (folder / ".dockerignore").read_text().startswith("# What fp leaves out")
    assert (folder / "inputs").is_dir()
    (folder / "fireplug.toml").write_text("# mine\n")
    assert main(["init", "--yes", "--name", "other"]) == 0
    assert (folder / "fireplug.toml").read_text() == "# mine\n"
    assert "kept the existing" in capsys.readouterr().err


def test_init_takes_result_folders_relative_to_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--yes", "--results", "output", "data/models"]) == 0
    assert 'results = ["data/output", "data/models"]' in (tmp_path / "fireplug.toml").read_text()


def test_init_refuses_invalid_answers_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--yes", "--name", "Not Valid"]) == 125
    assert "not usable as an image name" in one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_init_template_is_valid_and_documented() -> None:
    from fireplug.config import Source, load
    from fireplug.config.scaffold import default_answers, render_project_file

    text = render_project_file(default_answers(Path("/x/proj")))
    config = load([Source("fireplug.toml", text)], {}, {}, root=Path("/x/proj"))
    assert (config.project.name, config.project.data, config.build.base_image) == ("proj", "data", "debian:bookworm-slim")
    assert "[hosts.aws02]" in text


def test_init_asks_only_what_no_flag_answered() -> None:
    from fireplug.config.scaffold import ask_missing, default_answers

    asked: list[str] = []

    def ask(question: str, default: str) -> str:
        asked.append(question)
        return {"Data folder": "inputs", "Project name": default}.get(question, "inputs/out, inputs/models" if question.startswith("Result") else default)

    answers = ask_missing(default_answers(Path("/x/Proj")), {"base_image": "ubuntu:24.04"}, ask)
    assert answers.name == "proj" and answers.data == "inputs" and answers.base_image == "ubuntu:24.04"
    assert answers.results == ("inputs/out", "inputs/models")
    assert len(asked) == 3 and not any(question.startswith("Base image") for question in asked)


def test_background_jobs_do_not_count_as_foreground() -> None:
    import os
    import pty

    from fireplug.cli import in_foreground

    pid, master = pty.fork()
    if pid == 0:  # child: leads a new session whose controlling terminal is the pty
        try:
            foreground = in_foreground(0)
            job = os.fork()
            if job == 0:
                os.setpgid(0, 0)  # a process group of its own: a background job of that terminal
                os._exit(int(in_foreground(0)))
            _, job_status = os.waitpid(job, 0)
            os._exit(10 * foreground + os.waitstatus_to_exitcode(job_status))
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 10, "the session leader is in the foreground, the background job is not"


def test_dry_run_on_a_remote_host_shows_where_the_data_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fireplug.toml").write_text('[project]\nname = "proj"\nid = "abcd1234"\n\n[hosts.aws02]\nurl = "ssh://ada@aws02"\ndata_root = "/scratch"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["--dry-run", "--host", "aws02", "python", "x.py"]) == 0
    out = capsys.readouterr().out
    assert "host      aws02 (ssh://ada@aws02); data synced there with rsync over ssh" in out
    assert f"data: /scratch/proj-abcd1234/data -> {tmp_path.resolve()}/data" in out
    assert main(["--dry-run", "--host", "aws02", "--sync", "s3://my-bucket/stage", "python", "x.py"]) == 0
    assert "host      aws02 (ssh://ada@aws02); data synced there through s3://my-bucket/stage" in capsys.readouterr().out
    assert main(["--dry-run", "--host", "aws02", "--sync", "api", "python", "x.py"]) == 0
    assert "data synced there through the Docker API" in capsys.readouterr().out


def test_sync_mode_and_s3_commands_check_their_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fireplug.toml").write_text('[project]\nname = "proj"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["--dry-run", "--sync", "ftp", "python", "x.py"]) == 125
    assert "sync.mode 'ftp' must be one of auto, rsync, api, s3" in capsys.readouterr().err
    assert main(["s3", "ls"]) == 2
    assert "this project stages nothing in S3" in capsys.readouterr().err
    assert main(["--sync", "s3://my-bucket", "s3", "gc", "--min-age", "-1"]) == 2
    assert "--min-age -1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--sync-in-only", "--sync-out-only"], id="two-only-flags"),
        pytest.param(["--no-sync", "--sync-in-only"], id="no-sync-and-sync-in"),
        pytest.param(["--no-build"], id="no-command"),
        pytest.param(["--sync-in-only", "python", "x.py"], id="sync-in-only-with-a-command"),
        pytest.param(["--sync-out-only", "python", "x.py"], id="sync-out-only-with-a-command"),
    ],
)
def test_contradicting_or_incomplete_step_flags_are_usage_errors(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("fp: error:") == 1 and "Traceback" not in err


def test_hosts_add_rejects_local_and_non_engine_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["hosts", "add", "local", "ssh://x"]) == 2
    assert main(["hosts", "add", "box", "http://x"]) == 2
    for bad in ("ssh://x:99999", "ssh://x:0", "tcp://:2376", "ssh://x:port"):
        assert main(["hosts", "add", "box", bad]) == 2
    assert main(["hosts", "rm", "box"]) == 2
    assert "no host 'box'" in capsys.readouterr().err


def test_hosts_add_stores_absolute_paths_and_warns_about_plain_tcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["hosts", "add", "gpu1", "ssh://ada@gpu1", "--key", "keys/gpu.pem", "--data-root", "/scratch"]) == 0
    assert main(["hosts", "add", "box", "tcp://10.0.0.9:2375"]) == 0
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "fireplug" / "config.toml"
    text = config.read_text()
    assert f'ssh_key = "{tmp_path.resolve()}/keys/gpu.pem"' in text and 'data_root = "/scratch"' in text
    assert "without TLS, unencrypted" in capsys.readouterr().err
    assert main(["hosts", "--timeout", "0"]) == 2


def test_hosts_add_of_a_swarm_needs_its_registry_and_stores_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["hosts", "add", "lab", "swarm://ada@manager"]) == 2
    assert "--registry" in capsys.readouterr().err
    assert main(["hosts", "add", "lab", "swarm://ada@manager:2222", "--registry", "reg.example:5000/team"]) == 0
    text = (Path(os.environ["XDG_CONFIG_HOME"]) / "fireplug" / "config.toml").read_text()
    assert 'url = "ssh://ada@manager:2222"' in text and 'kind = "swarm"' in text and 'registry = "reg.example:5000/team"' in text
    assert main(["hosts", "add", "lab2", "ssh://ada@manager", "--kind", "swarm"]) == 2  # (the same check by --kind)
    assert "host 'lab2' is a swarm" in capsys.readouterr().err
    assert main(["hosts", "add", "lab2", "ssh://ada@manager", "--kind", "swarm", "--registry", "reg.example:5000/team"]) == 0
    assert main(["hosts", "add", "box", "ssh://ada@box", "--kind", "slurmish"]) == 2  # (not a kind this fp serves)
    text = (Path(os.environ["XDG_CONFIG_HOME"]) / "fireplug" / "config.toml").read_text()
    assert text.count('kind = "swarm"') == 2 and "[hosts.box]" not in text


def test_usage_errors_come_before_any_host_is_probed(
    tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    config = isolated_home / ".config" / "fireplug" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[hosts.slow]\nurl = "tcp://127.0.0.1:{silent.getsockname()[1]}"\n')
    (tmp_path / "p").mkdir()
    monkeypatch.chdir(tmp_path / "p")
    started = time.monotonic()
    assert main(["-e", "FP_TEST_NOT_SET_ANYWHERE", "true"]) == 2
    assert time.monotonic() - started < 1.0
    assert "-e FP_TEST_NOT_SET_ANYWHERE: FP_TEST_NOT_SET_ANYWHERE is not set" in one_error_line(capsys.readouterr().err)
    silent.close()


VERB_MISUSE = {
    "ps-with-a-commands-words": (["ps", "aux"], "fp -- ps"),
    "logs-without-id": (["logs"], "fp -- logs"),
    "stop-negative-time": (["stop", "-t", "-1", "abc123"], "-t -1"),
    "gc-keeps-nothing": (["gc", "--keep", "0"], "--keep 0"),
    "map-without-command": (["map", "-p", "fold=0,1"], "no command given"),
    "map-without-values": (["map", "--", "python", "m.py", "{fold}"], "-p NAME=V1,V2"),
    "map-two-sources": (["map", "-p", "fold=0", "--args-file", "x.tsv", "--", "echo", "{fold}"], "one of the two"),
    "map-bad-per-host": (["map", "--per-host", "0", "-p", "fold=0", "--", "echo", "{fold}"], "--per-host 0"),
    "map-typo-placeholder": (["map", "-p", "fold=0", "--", "echo", "{flod}"], "{flod}"),
    "map-no-placeholder": (["map", "-p", "fold=0", "--", "echo", "x"], "no placeholder"),
    "map-publish": (["-p", "8888:8888", "map", "-p", "fold=0", "--", "echo", "{fold}"], "--publish"),
    "map-two-resumes": (["map", "--resume", "a", "--resume-failed", "b", "-p", "fold=0", "--", "echo", "{fold}"], "not allowed with"),
    "detach-without-a-run": (["-d", "--no-run"], "-d starts a command"),
    "no-run-with-a-command": (["--no-run", "--no-sync", "echo", "hi"], "--no-run runs no command, but one was given (echo ...)"),
    "shm-past-the-engine": (["--shm-size", "99999999999999999999999g", "true"], "more than the engine can hold"),
}


@pytest.mark.parametrize(("argv", "said"), VERB_MISUSE.values(), ids=VERB_MISUSE.keys())
def test_a_verbs_misuse_is_one_line_exit_2(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fireplug.toml").write_text('[project]\nname = "verbs"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("fp: error")]) == 1


def test_the_help_names_every_verb_and_the_double_dash_escape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for verb in ("fp map", "fp ps", "fp logs", "fp pull", "fp stop", "fp gc", "fp -d", "fp -- ps aux"):
        assert verb in text
    assert main(["map", "--help"]) == 0
    assert "FP_RUN_INDEX" in capsys.readouterr().out
