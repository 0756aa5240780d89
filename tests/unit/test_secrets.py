"""Secrets: files kept out of the context by name, content and hard link; values hidden in displays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fireplug.context import ScanRules, scan
from fireplug.scancache import load_context
from fireplug.secrets import redact, secret_variable

PRIVATE_KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
SECRET_FILES = {
    "config/secrets.yaml": b"db: hunter2\n",
    "token.txt": b"ghp_abc\n",
    "SERVER.PEM": b"cert\n",
    "keys/id_rsa.bak": b"old key\n",
    "deploy_key": PRIVATE_KEY,
    "service-account.json": b"{}",
    "gcp-service-account.json": b"{}",
    "kubeconfig": b"apiVersion: v1\n",
    ".s3cfg": b"[default]\n",
    ".htpasswd": b"u:x\n",
    "infra/terraform.tfstate": b"{}",
    "key.ppk": b"PuTTY\n",
    "kaggle.json": b'{"username":"u","key":"k"}',
    ".kaggle/kaggle.json": b'{"username":"u","key":"k"}',
    "credentials": b"[default]\n",
    ".streamlit/secrets.toml": b"x = 1\n",
    ".env.production": b"A=1\n",
    "notes/backup.ini": b"[default]\naws_access_key_id = AKIA\naws_secret_access_key = abc\n",
    "src/fixture.txt": b"-----BEGIN RSA PRIVATE KEY-----\nMIIB\n",
    "misc/putty.txt": b"PuTTY-User-Key-File-3: ssh-ed25519\n",
    "misc/sa.json": b'{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----"}',
    "misc/pgp.txt": b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n",
}
HARMLESS_FILES = [
    "src/tokenizer.py",
    "src/keyboard.py",
    "src/auth.py",
    "auth/__init__.py",
    "src/secrets.py",
    "id_rsa.pub",
    "id_rsa.py",
    "monkey.py",
    "key_points.md",
]


def make(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def shipped(root: Path, rules: ScanRules) -> set[str]:
    return {entry.path for entry in scan(root, rules).entries if entry.kind == "file"}


def test_secret_files_stay_out_by_name_and_content_whatever_dockerignore_says(tmp_path: Path) -> None:
    make(tmp_path, {**SECRET_FILES, **dict.fromkeys(HARMLESS_FILES, b"x = 1\n")})
    rules = ScanRules(data_folder="data", ignore_text="".join(f"!{path}\n" for path in SECRET_FILES))
    context = scan(tmp_path, rules)
    assert shipped(tmp_path, rules) == set(HARMLESS_FILES)
    reasons = {exclusion.path: exclusion.reason for exclusion in context.exclusions}
    assert reasons["deploy_key"] == "built-in: secret (key file)"
    assert reasons["notes/backup.ini"] == "built-in: secret (it holds AWS credentials)"
    assert reasons["src/fixture.txt"] == "built-in: secret (it holds a private key)"
    assert all(exclusion.secret for exclusion in context.exclusions)


def test_a_hard_link_to_a_secret_is_a_secret(tmp_path: Path) -> None:
    make(tmp_path, {"token.txt": b"ghp_abc\n", ".aws/credentials": b"[x]\n", "src/app.py": b"print(1)\n"})
    os.link(tmp_path / "token.txt", tmp_path / "src/value.dat")
    os.link(tmp_path / ".aws/credentials", tmp_path / "src/settings.cfg")
    context = scan(tmp_path, ScanRules(data_folder="data"))
    assert {entry.path for entry in context.entries if entry.kind == "file"} == {"src/app.py"}
    assert {"src/value.dat", "src/settings.cfg"} <= set(context.secrets)


def test_build_allow_ships_a_named_secret_and_dockerignore_alone_does_not(tmp_path: Path) -> None:
    make(tmp_path, {"config/secrets.yaml": b"a: 1\n", "certs/ca.pem": b"-----BEGIN RSA PRIVATE KEY-----\n", "token.txt": b"t\n"})
    rules = ScanRules(data_folder="data", ignore_text="!token.txt\n", allow=("config/secrets.yaml", "certs"))
    assert shipped(tmp_path, rules) == {"config/secrets.yaml", "certs/ca.pem"}


def test_a_shipped_file_that_becomes_a_secret_leaves_the_context_even_from_the_record(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    make(root, {"src/a.py": b"a = 1\n", "src/key.txt": b"nothing yet\n"})
    rules = ScanRules(data_folder="data")
    assert {entry.path for entry in load_context(root, rules, tmp_path / "cache", racy_ns=0).entries} == {"src", "src/a.py", "src/key.txt"}
    (root / "src/key.txt").write_bytes(PRIVATE_KEY + b"more")  # same folder listing: only the record would be consulted
    again = load_context(root, rules, tmp_path / "cache", racy_ns=0)
    assert {entry.path for entry in again.entries} == {"src", "src/a.py"}


@pytest.mark.parametrize(
    "name", ["SIGNING_KEY", "STRIPE_KEY", "SSH_KEY", "KEY", "MY_PASS", "HF_AUTH", "AUTH", "DB_PASS", "GITHUB_PAT", "apiKey", "api-key", "SESSION_ID"]
)
def test_secret_variable_names(name: str) -> None:
    assert secret_variable(name)


@pytest.mark.parametrize("name", ["KEYBOARD", "MONKEY", "PATH", "HOME", "LANG", "PYTHONPATH", "PASSAGE", "epochs"])
def test_harmless_variable_names(name: str) -> None:
    assert not secret_variable(name)


def test_redaction_of_values_options_and_urls() -> None:
    argv = [
        "docker",
        "run",
        "-e",
        "STRIPE_KEY=sk_live_1",
        "-e",
        "DATABASE_URL=postgres://u:PASS@h/db",
        "-e",
        "EPOCHS=3",
        "python",
        "train.py",
        "--api-key=V1",
        "--token",
        "V2",
        "--password=V3",
        "--lr",
        "0.1",
        "https://user:pw@example.org/x",
    ]
    shown = " ".join(redact(argv))
    for secret in ("sk_live_1", "PASS", "V1", "V2", "V3", "pw@"):
        assert secret not in shown
    assert "EPOCHS=3" in shown and "--lr 0.1" in shown and "postgres://u:***@h/db" in shown and "https://user:***@example.org/x" in shown


def test_a_hard_link_to_a_credential_file_in_the_home_folder_stays_out(tmp_path: Path) -> None:
    home, root = tmp_path / "home", tmp_path / "proj"
    make(home, {".aws/credentials": b"[default]\nplain words\n", ".netrc": b"machine x\n"})
    make(root, {"src/app.py": b"print(1)\n"})
    os.link(home / ".aws/credentials", root / "src/defaults.cfg")
    os.link(home / ".netrc", root / "src/hosts.txt")
    context = scan(root, ScanRules(data_folder="data"), home=home)
    assert {entry.path for entry in context.entries if entry.kind == "file"} == {"src/app.py"}
