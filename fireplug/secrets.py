"""What counts as a secret: file names, file contents, and secret values on a command line.

Files: a name rule (any case, at any depth) or, for a file fp reads anyway to hash it, the
start of its content (private key headers, cloud credentials, service-account keys). Such
files never enter an image, whatever ``.dockerignore`` says; only ``[build] allow`` lets one
in, by its path. Values: a NAME=value word, an ``--option value`` pair or a URL's password
is shown as ``***`` wherever fp displays a command or stores one in a label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

REDACTED = "***"
SNIFF_BYTES = 64 * 1024  # how much of a file's start is searched for secret content

# (regex on the name, reason), matched case-insensitively against the whole name.
SECRET_FOLDERS = ((r"\.aws|\.ssh|\.gnupg|\.docker|\.kube|\.azure|\.gcloud|\.kaggle|\.terraform\.d|\.vault|\.password-store|\.config", "credentials folder"),)
SECRET_FILES = (
    (r"\.env.*|.*\.env", "environment file"),
    (r".*\.(pem|key|p12|pfx|jks|keystore|ppk|keytab|gpg|kdbx|ovpn)", "key, certificate or keystore"),
    (r"id_(rsa|dsa|ecdsa|ed25519)(_sk)?(\.(bak|old|orig|backup|save|txt|key|pem|\d+)|~)?", "ssh private key"),
    (r".*_(key|rsa|ed25519)|.*[-_.]key\.(txt|json|bak)", "key file"),
    (r"\.netrc|_netrc|\.pgpass|\.pypirc|\.git-credentials|\.npmrc|\.yarnrc(\.yml)?|\.s3cfg|\.boto|\.dockercfg|\.htpasswd|\.vault-token", "credentials file"),
    (r"(secrets?|tokens?|credentials?|passwords?|passwd|auth)(\.(txt|json|ya?ml|toml|ini|cfg|conf|env|dat|bak))?", "credentials file"),
    (r".*secrets?\.(ya?ml|json|toml|ini|cfg|conf|txt|env)", "credentials file"),
    (r".*service[-_]?account.*\.json|application_default_credentials\.json|client_secrets?.*\.json", "cloud service-account key"),
    (r"kaggle\.json|kubeconfig|.*\.kubeconfig|terraform\.tfstate(\.backup)?|.*\.tfstate|.*\.tfvars", "cloud or cluster credentials"),
)
_FOLDER_RULES = tuple((re.compile(pattern, re.IGNORECASE), reason) for pattern, reason in SECRET_FOLDERS)
_FILE_RULES = tuple((re.compile(pattern, re.IGNORECASE), reason) for pattern, reason in SECRET_FILES)

_CONTENT_RULES = (
    (re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"), "holds a private key"),
    (re.compile(rb"PuTTY-User-Key-File-\d"), "holds a PuTTY private key"),
    (re.compile(rb"aws_secret_access_key\s*[=:]", re.IGNORECASE), "holds AWS credentials"),
    (re.compile(rb'"type"\s*:\s*"service_account"'), "holds a cloud service-account key"),
    (re.compile(rb'"private_key"\s*:\s*"-----BEGIN'), "holds a private key"),
)


def secret_name(name: str, is_dir: bool) -> str:
    """Why a file or folder called ``name`` is a secret ("" when it is not); the file rules
    are for files only (a package folder may well be called ``auth``)."""
    for pattern, reason in _FOLDER_RULES if is_dir else (*_FOLDER_RULES, *_FILE_RULES):
        if pattern.fullmatch(name):
            return reason
    return ""


def secret_content(start: bytes) -> str:
    """Why a file starting with ``start`` (its first SNIFF_BYTES) is a secret ("" when it is not)."""
    for pattern, reason in _CONTENT_RULES:
        if pattern.search(start):
            return reason
    return ""


# -- values on a command line -------------------------------------------------------------

_SECRET_WORDS = {
    "KEY",
    "APIKEY",
    "ACCESSKEY",
    "SECRET",
    "SECRETS",
    "TOKEN",
    "AUTHTOKEN",
    "PASS",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "PWD",
    "AUTH",
    "CREDENTIAL",
    "CREDENTIALS",
    "CREDS",
    "PAT",
    "SESSION",
    "PRIVATE",
    "COOKIE",
    "SIGNATURE",
    "DSN",
}
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^/\s@]+)(?=@)")


def secret_variable(name: str) -> bool:
    """Whether a variable or option called ``name`` holds a secret: one of its words is KEY,
    TOKEN, PASS, AUTH, PAT... (``STRIPE_KEY``, ``apiKey``, ``--db-pass``; not ``KEYBOARD``)."""
    return any(word.upper() in _SECRET_WORDS for word in _WORD_SPLIT.split(name) if word)


def redact(argv: Sequence[str]) -> list[str]:
    """``argv`` for display: secret NAME=value values, the value after a secret ``--option``,
    and passwords in URLs shown as ``***``."""
    shown: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            shown.append(REDACTED)
            hide_next = False
            continue
        name, equals, _ = word.partition("=")
        if equals and secret_variable(name.lstrip("-")) and " " not in name:
            shown.append(f"{name}={REDACTED}")
            continue
        if word.startswith("-") and not equals and len(word) > 2 and secret_variable(word.lstrip("-")):
            hide_next = True
        shown.append(_URL_PASSWORD.sub(lambda found: found["head"] + REDACTED, word))
    return shown
