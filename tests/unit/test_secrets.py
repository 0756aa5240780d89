"""Secrets: files kept out of the context by name, content and hard link; values hidden in displays."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fireplug.image.context import ScanRules
from fireplug.image.scan import scan
from fireplug.image.scancache import load_context
from fireplug.support.secrets import credential_in, redact, secret_variable

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


# -- content: the token formats of the big providers, in any text file ------------------------

GITHUB = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
TOKEN_FILES = {
    "wandb/netrc": b"machine api.wandb.ai\n  login user\n  password 6f1e0c3a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f\n",
    "notes/hosts.txt": b"machine example.org login me password hunter22\n",
    "scripts/env.sh": f"#!/bin/sh\nexport GITHUB_TOKEN={GITHUB}\n".encode(),
    "src/settings.py": b'DEBUG = False\nOPENAI_API_KEY = "a8f5f167f44f4964e6c998dee827110cb2"\n',
    "src/django_settings.py": b"SECRET_KEY = 'django-insecure-k2#9x!7q@1m4(c8v0s3n6b5j2z&u7g)ay0o2'\n",
    "conf/token.config.json": b'{"token": "3d9f8a7b6c5e4d3c2b1a0f9e8d7c6b5a"}',
    "conf/db.yaml": b"database:\n  host: db\n  password: Tr0ub4dor-and-3\n",
    "src/pat.py": b'TOKEN = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ"\n',
    "src/hf.py": b'login("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567")\n',
    "src/openai.py": b'client = OpenAI(api_key="sk-proj-Ab3De5Fg7Hj9Kl1Mn3Pq5Rs7Tu9Vw1Xy3Za5Bc7De9")\n',
    "src/slack.py": b'SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"\n',
    "src/stripe.py": b'stripe.api_key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"\n',
    "src/aws.py": b'boto3.client("s3", aws_access_key_id="AKIAIOSFODNN7ABCDEFG")\n',
    "src/gcp.py": b'KEY = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"\n',
    "src/azure.py": b'CONN = "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=' + b"A1b2C3d4" * 11 + b'==;"\n',
    "src/url.py": b'DB = "postgresql://analyst:Xk9-fr33-2024@db.internal:5432/warehouse"\n',
    "src/jwt.txt": b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\n",
}


def notebook_with_output(text: str, padding: int) -> bytes:
    """A notebook whose cell printed ``text`` after a long output (a PNG, say)."""
    cells = [
        {"cell_type": "code", "source": ["plot()"], "outputs": [{"data": {"image/png": "iVBORw0KGgo" * padding}}]},
        {"cell_type": "code", "source": ["!huggingface-cli whoami"], "outputs": [{"text": [text]}]},
    ]
    return json.dumps({"cells": cells, "nbformat": 4}).encode()


@pytest.mark.parametrize("path", sorted(TOKEN_FILES))
def test_files_holding_a_token_of_a_known_format_stay_out(tmp_path: Path, path: str) -> None:
    make(tmp_path, {path: TOKEN_FILES[path], "src/app.py": b"print(1)\n"})
    context = scan(tmp_path, ScanRules(data_folder="data"))
    assert shipped(tmp_path, ScanRules(data_folder="data")) == {"src/app.py"}
    assert path in context.secrets


def test_a_token_deep_in_a_notebooks_output_stays_out_and_an_allowed_one_ships(tmp_path: Path) -> None:
    token = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
    make(tmp_path, {"eda.ipynb": notebook_with_output(f"token: {token}\n", 200_000), "clean.ipynb": notebook_with_output("ok\n", 200_000)})
    assert (tmp_path / "eda.ipynb").stat().st_size > 2 * (1 << 20)  # past the first block read
    assert shipped(tmp_path, ScanRules(data_folder="data")) == {"clean.ipynb"}
    assert shipped(tmp_path, ScanRules(data_folder="data", allow=("eda.ipynb",))) == {"clean.ipynb", "eda.ipynb"}


def test_a_token_across_two_read_blocks_is_seen(tmp_path: Path) -> None:
    start = (1 << 20) - 20  # the token starts 20 bytes before the second block
    make(tmp_path, {"log.txt": b"x" * (start - 1) + b" " + GITHUB.encode() + b"\n"})
    assert shipped(tmp_path, ScanRules(data_folder="data")) == set()


HARMLESS_CONTENT = {
    "src/tokenizer.py": b'tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased-v2")\npad_token = "[PAD]"\nmax_tokens = 512\n',
    "src/django_settings.py": b"PASSWORD_RESET_TIMEOUT = 259200\nTOKEN_EXPIRY_SECONDS = 3600000\nAUTH_PASSWORD_VALIDATORS = []\n",
    "src/env.py": b'token = os.environ["HF_TOKEN"]\napi_key = os.getenv("OPENAI_API_KEY")\npassword = getpass.getpass()\n',
    "src/login.py": b"def login(user: str, password: str) -> None:\n    self.password = password\n    secret_key = settings.SECRET_KEY\n",
    "src/cache.py": b'key = "created_at_timestamp"\ncache_key = "user-profile-2024"\n',
    "requirements.txt": b"numpy==1.26.4\ngit+ssh://git@github.com/org/repo.git@v1.2\n",
    "README.md": b"Set DATABASE_URL=postgres://user:password@localhost/db or postgres://postgres:postgres@db/app\n"
    b'api_key = "YOUR_API_KEY"\npassword: ${DB_PASSWORD}\ntoken: "<your token>"\n',
    "docs/sklearn.md": b"We use sk-learn-compatible-estimators-and-transformers-2 everywhere.\n",
    "data.csv.gz": b"\x1f\x8b\x00\x00" + b"AKIAIOSFODNN7ABCDEFG" * 10,  # binary: only its start is read, and it is not text
    "lock.json": b'{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "key": "a1b2c3d4e5f6a7b8c9d0"}\n',
    "nb.ipynb": notebook_with_output("accuracy 0.93\n", 10_000),
}


def test_code_that_only_looks_like_it_holds_secrets_ships(tmp_path: Path) -> None:
    make(tmp_path, HARMLESS_CONTENT)
    context = scan(tmp_path, ScanRules(data_folder="data"))
    assert shipped(tmp_path, ScanRules(data_folder="data")) == set(HARMLESS_CONTENT), [(e.path, e.reason) for e in context.exclusions]


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("https://u:PW1234@pypi.example/simple/", "a password in a URL"),
        ("http://user:hunter2@10.0.0.1:8080/simple", "a password in a URL"),
        ("https://3d9f8a7b6c5e4d3c2b1a@pypi.example/simple/", "a token in a URL"),
        (
            "--index-url=https://__token__:pypi-AgEIcHlwaS5vcmcCJDEyMzQ1Njc4LTEyMzQtMTIzNC0xMjM0LTEyMzQ1Njc4OTAxMgACJXsicGVybWlzc2lvbnMiOiAidXNlciJ9@upload.pypi.org/",
            "a package registry token",
        ),
        (f"https://{GITHUB}@github.com/org/repo", "a GitHub token"),
        ("https://pypi.example/simple/", ""),
        ("https://me@pypi.example/simple/", ""),
        ("git+ssh://git@github.com/org/repo.git", ""),
        ("https://${PIP_USER}:${PIP_PASSWORD}@pypi.example/simple/", ""),
    ],
)
def test_credentials_in_setting_values(value: str, found: str) -> None:
    assert credential_in(value) == found
