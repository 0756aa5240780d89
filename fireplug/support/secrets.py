"""What counts as a secret: file names, file contents, and secret values on a command line.

Files: a name rule (any case, at any depth) or, for a file fp reads anyway to hash it, its
content: all of a text file, the start of a binary one (private keys, cloud credentials and
service-account keys, the token formats of the big providers, netrc entries, passwords in
URLs, a literal value given to a secret-named setting). Such files never enter an image,
whatever ``.dockerignore`` says; only ``[build] allow`` lets one in, by its path. Settings:
``credential_in`` tells a value that holds a credential (fireplug.toml is shipped with the
code). Values: a NAME=value word, an ``--option value`` pair or a URL's password is shown as
``***`` wherever fp displays a command or stores one in a label.
"""

from __future__ import annotations

import functools
import itertools
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

REDACTED = "***"
SNIFF_BYTES = 64 * 1024  # how much of a binary file's start is searched for secret content
SNIFF_RULES = "2"  # the content rules' version: a scan record made under other rules is not trusted

# (regex on the name, reason), matched case-insensitively against the whole name.
SECRET_FOLDERS = ((r"\.aws|\.ssh|\.gnupg|\.docker|\.kube|\.azure|\.gcloud|\.kaggle|\.terraform\.d|\.vault|\.password-store|\.config", "credentials folder"),)
SECRET_FILES = (
    (r"\.env.*|.*\.env", "environment file"),
    (r".*\.(pem|key|p12|pfx|jks|keystore|ppk|keytab|gpg|kdbx|ovpn)", "key, certificate or keystore"),
    (r"id_(rsa|dsa|ecdsa|ed25519)(_sk)?(\.(bak|old|orig|backup|save|txt|key|pem|\d+)|~)?", "ssh private key"),
    (r".*_(key|rsa|ed25519)|.*[-_.]key\.(txt|json|bak)", "key file"),
    (r"\.?netrc|_netrc|\.pgpass|\.pypirc|\.git-credentials|\.npmrc|\.yarnrc(\.yml)?|\.s3cfg|\.boto|\.dockercfg|\.htpasswd|\.vault-token", "credentials file"),
    (r"(secrets?|tokens?|credentials?|passwords?|passwd|auth)(\.(txt|json|ya?ml|toml|ini|cfg|conf|env|dat|bak))?", "credentials file"),
    (r".*secrets?\.(ya?ml|json|toml|ini|cfg|conf|txt|env)", "credentials file"),
    (r".*service[-_]?account.*\.json|application_default_credentials\.json|client_secrets?.*\.json", "cloud service-account key"),
    (r"kaggle\.json|kubeconfig|.*\.kubeconfig|terraform\.tfstate(\.backup)?|.*\.tfstate|.*\.tfvars", "cloud or cluster credentials"),
)


@functools.cache
def _name_rules(is_dir: bool) -> tuple[tuple[re.Pattern[str], str], ...]:
    """The rules for a folder's or a file's name, compiled when a scan first needs them."""
    return tuple((re.compile(pattern, re.IGNORECASE), reason) for pattern, reason in (SECRET_FOLDERS if is_dir else SECRET_FOLDERS + SECRET_FILES))


def secret_name(name: str, is_dir: bool) -> str:
    """Why a file or folder called ``name`` is a secret ("" when it is not); the file rules
    are for files only (a package folder may well be called ``auth``)."""
    for pattern, reason in _name_rules(is_dir):
        if pattern.fullmatch(name):
            return reason
    return ""


# -- file contents ---------------------------------------------------------------------------
#
# A rule is a pattern and the literal strings one of which any match holds: a block is only
# searched with the pattern when one of them is in it (bytes.find is far faster than re), so
# reading a file costs little more than hashing it. Patterns are compiled when first needed:
# a warm run reads no file, and compiling them all would cost it milliseconds.


@functools.cache
def _compiled(source: bytes, flags: int = 0) -> re.Pattern[bytes]:
    return re.compile(source, flags)


@dataclass(frozen=True)
class _Rule:
    reason: str
    source: bytes  # the pattern
    hints: tuple[bytes, ...]
    folded: bool = False  # the hints are looked for in the lowercased block
    check: Callable[[re.Match[bytes]], bool] | None = None  # a match is a secret only when this says so
    flags: int = 0

    @property
    def pattern(self) -> re.Pattern[bytes]:
        return _compiled(self.source, self.flags)


_PLACEHOLDER = (
    rb"your|xxx|\*\*\*|example|changeme|change_me|placeholder|dummy|redacted|<[^>]*>|\{\{|\$\{|\$\(|%\(|\.\.\.|^(none|null|nil|true|false|undefined)$"
    rb"|passw|secret|token|api_?key"  # a value naming what it stands for: `password = input_password`
)


def _real_value(text: str) -> bool:
    """Not a placeholder, a reference or a single repeated character."""
    return len(set(text)) > 2 and not _compiled(_PLACEHOLDER, re.IGNORECASE).search(text.encode(errors="replace"))


def _looks_random(text: str) -> bool:
    """A machine-made credential rather than a word, name or version: long, digits and letters
    mixed (hex, base64, a token's body), not a placeholder."""
    classes = [character.isdigit() for character in text if character.isalnum()]
    mixes = sum(1 for before, after in itertools.pairwise(classes) if before != after)  # a path or a name mixes rarely
    return len(text) >= 16 and sum(classes) >= 2 and len(classes) - sum(classes) >= 4 and mixes >= max(3, len(classes) / 8) and _real_value(text)


def _url_password(found: re.Match[bytes]) -> bool:
    user, password = found["user"].decode(errors="replace"), found["password"].decode(errors="replace")
    return password != user and _real_value(password) and password.lower() not in ("pass", "pw", "pwd", "test", "guest", "admin")


def _random_body(found: re.Match[bytes]) -> bool:
    return _looks_random(found[0].decode(errors="replace"))


def _token(reason: str, pattern: bytes, *hints: bytes, check: Callable[[re.Match[bytes]], bool] | None = None) -> _Rule:
    """A provider's token format: ``pattern`` (holding one of ``hints``), not glued to other letters or digits."""
    return _Rule(reason, rb"(?<![A-Za-z0-9])" + pattern + rb"(?![A-Za-z0-9])", hints, check=check)


_KEY_FILE_RULES = (
    _Rule("holds a private key", rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", (b"PRIVATE KEY",)),
    _Rule("holds a PuTTY private key", rb"PuTTY-User-Key-File-\d", (b"PuTTY-User-Key-File-",)),
    _Rule("holds AWS credentials", rb"aws_secret_access_key\s*[=:]", (b"aws_secret_access_key",), folded=True, flags=re.IGNORECASE),
    _Rule("holds a cloud service-account key", rb'"type"\s*:\s*"service_account"', (b"service_account",)),
    _Rule("holds a private key", rb'"private_key"\s*:\s*"-----BEGIN', (b"private_key",)),
)
_CONTENT_RULES = (
    *_KEY_FILE_RULES,
    _token("holds an AWS access key", rb"(?:AKIA|ASIA)[A-Z0-9]{16}", b"AKIA", b"ASIA", check=lambda found: not found[0].endswith(b"EXAMPLE")),
    _token("holds a GitHub token", rb"(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,})", b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_"),
    _token("holds a GitLab token", rb"glpat-[A-Za-z0-9_-]{20,}", b"glpat-"),
    _token("holds a Hugging Face token", rb"hf_[A-Za-z0-9]{30,}", b"hf_"),
    _token("holds an OpenAI or Anthropic key", rb"sk-[A-Za-z0-9_-]{32,}", b"sk-", check=_random_body),
    _token("holds a Slack token", rb"xox[abposre]-[A-Za-z0-9-]{10,}", b"xox"),
    _Rule("holds a Slack webhook", rb"hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]{8,}", (b"hooks.slack.com/services/",)),
    _token("holds a Stripe key", rb"[sr]k_live_[A-Za-z0-9]{20,}", b"k_live_"),
    _token("holds a Google API key", rb"AIza[A-Za-z0-9_-]{35}", b"AIza"),
    _token("holds a Google OAuth secret", rb"(?:GOCSPX-[A-Za-z0-9_-]{28}|ya29\.[A-Za-z0-9_-]{20,})", b"GOCSPX-", b"ya29."),
    _Rule("holds an Azure key", rb"(?:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{40,}=*", (b"AccountKey=", b"SharedAccessKey=")),
    _token("holds an Azure client secret", rb"[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}", b"Q~"),
    _token("holds a package registry token", rb"(?:npm_[A-Za-z0-9]{36}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})", b"npm_", b"pypi-AgEIcHlwaS5vcmc"),
    _token("holds a JSON web token", rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}", b"eyJ"),
    _Rule(
        "holds netrc credentials",
        rb"(?:^|\n)[ \t]*(?:machine[ \t]+\S+|default)\s+(?:(?:login|account)[ \t]+\S+\s+)*password[ \t]+\S+",
        (b"password",),
    ),
    _Rule(
        "holds a password in a URL",
        rb"://(?P<user>[^\s/:@'\"\\,]{0,100}):(?P<password>[^\s/@'\"\\,]{1,200})@[A-Za-z0-9\[]",
        (b"://",),
        check=_url_password,
    ),
)

# A secret-named setting given a literal value: ``API_KEY = "..."``, ``"token": "..."``,
# ``export GITHUB_TOKEN=...``, ``password: ...``. Found in two steps: a cheap pattern over the
# lowercased block finds a secret word right before an assignment, then the setting's whole
# name and value are read from the block itself.
_ASSIGNED_HINTS = (b"token", b"secret", b"passw", b"passphrase", b"pwd", b"credential", b"key")  # one is in any match of _ASSIGNED_WORD
_ASSIGNED_WORD = (
    rb"(?:token|secret|passw(?:or)?d|passphrase|pwd|credentials?|key)(?:_?(?:value|base|b64|base64|hex|raw|str|string))?"
    rb"\\?[\"']?[ \t]*(?::=|=>|=|:)"
)
_NAME_CHARACTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_ASSIGNMENT = (
    rb"(?P<name>[A-Za-z0-9_.-]{1,80})\\?[\"']?[ \t]*(?::=|=>|=|:)[ \t]*"
    rb"(?:[rbuRBU]?\\?(?P<quote>[\"'])(?P<quoted>[^\"'\\\s]{6,300})\\?(?P=quote)|(?P<bare>[A-Za-z0-9_+/=~-]{6,300})(?=[\s,;]|$))"
)
_PASSWORD_WORDS = {"PASSWORD", "PASSWD", "PASSPHRASE", "PWD"}
_TOKEN_WORDS = {"TOKEN", "SECRET", "APIKEY", "CREDENTIAL", "CREDENTIALS"}
_KEY_KINDS = {
    "API",
    "ACCESS",
    "SECRET",
    "PRIVATE",
    "AUTH",
    "CLIENT",
    "SIGNING",
    "ENCRYPTION",
    "MASTER",
    "ACCOUNT",
    "SERVICE",
    "LICENSE",
    "ADMIN",
    "APP",
    "DEPLOY",
}
_VALUE_SUFFIXES = {"VALUE", "BASE", "B64", "BASE64", "HEX", "RAW", "STR", "STRING"}


def _name_kind(name: str) -> str:
    """ "password", "token" or "" for a setting's name, by its last word (``DB_PASSWORD``,
    ``OPENAI_API_KEY``, ``clientSecret``; not ``PASSWORD_RESET_TIMEOUT`` or ``tokenizer``)."""
    words = [word.upper() for word in _WORD_SPLIT.split(name) if word]
    if len(words) > 1 and words[-1] in _VALUE_SUFFIXES:
        words.pop()
    last = words[-1] if words else ""
    if last in _PASSWORD_WORDS:
        return "password"
    if last in _TOKEN_WORDS or (last == "KEY" and len(words) > 1 and words[-2] in _KEY_KINDS):
        return "token"
    return ""


def _assigned_secret(block: bytes, lowered: bytes) -> bool:
    """Whether ``block`` gives a secret-named setting a literal value that looks like a credential."""
    if not any(hint in lowered for hint in _ASSIGNED_HINTS):
        return False
    for word in _compiled(_ASSIGNED_WORD).finditer(lowered):
        start = word.start()
        while start > 0 and block[start - 1] in _NAME_CHARACTERS and word.start() - start < 60:
            start -= 1
        found = _compiled(_ASSIGNMENT).match(block, start)
        if found is None:
            continue
        if _secret_value(_name_kind(found["name"].decode(errors="replace")), found["quoted"], found["bare"]):
            return True
    return False


_UUID = rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def _secret_value(kind: str, quoted: bytes | None, bare: bytes | None) -> bool:
    """Whether a setting of this ``kind`` holds a credential: a password that is not a
    placeholder, a token that looks machine-made (not a UUID: request and pagination tokens
    are). A bare value (no quotes) must hold a digit: a word there is a reference or a type."""
    value = (quoted or bare or b"").decode(errors="replace")
    if bare is not None and not any(character.isdigit() for character in value):
        return False
    if kind == "token":
        return _looks_random(value) and not _compiled(_UUID).fullmatch(value.encode(errors="replace"))
    return kind == "password" and not value.isdigit() and _real_value(value)


def secret_content(block: bytes, *, text: bool = True) -> str:
    """Why ``block`` (a file's content, or part of it) shows the file is a secret ("" when it
    does not). Not ``text`` (a binary file's start): only the key and credential file formats."""
    lowered = block.lower()
    for rule in _CONTENT_RULES if text else _KEY_FILE_RULES:
        haystack = lowered if rule.folded else block
        if any(hint in haystack for hint in rule.hints):
            for found in rule.pattern.finditer(block):
                if rule.check is None or rule.check(found):
                    return rule.reason
    if text and _assigned_secret(block, lowered):
        return _ASSIGNED_REASON
    return ""


_ASSIGNED_REASON = "assigns a literal value to a secret-named setting"


class ContentSniffer:
    """Feeds a file's blocks, in order, to ``secret_content``: all of a text file (a token can
    sit anywhere in a notebook's output), the first ``SNIFF_BYTES`` of a binary one (a NUL byte
    there). Blocks overlap by ``OVERLAP`` bytes, so a secret across two of them is seen."""

    OVERLAP = 1024

    def __init__(self) -> None:
        self.reason = ""
        self._tail = b""
        self._text: bool | None = None

    def feed(self, block: bytes) -> None:
        if self.reason or self._text is False:
            return
        if self._text is None:
            self._text = b"\0" not in block[:8192]
            if not self._text:
                self.reason = secret_content(block[:SNIFF_BYTES], text=False)
                return
        self.reason = secret_content(self._tail + block)
        self._tail = block[-self.OVERLAP :]


def credential_in(value: str) -> str:
    """Why a setting's ``value`` holds a credential ("" when it does not): a token of a known
    format, a password in a URL, or a token standing alone before a URL's ``@``
    (``https://TOKEN@host``; an ssh ``git@`` user is not one)."""
    reason = secret_content(value.encode(errors="surrogateescape"))
    if reason == _ASSIGNED_REASON:
        return "a literal value for a secret-named variable"
    if reason:
        return reason.removeprefix("holds ")
    for found in _compiled(_URL_USER).finditer(value.encode(errors="surrogateescape")) if "@" in value else ():
        if found["scheme"].lower().endswith((b"http", b"https")) and _token_like(found["user"].decode(errors="replace")):
            return "a token in a URL"
    return ""


_URL_USER = rb"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^\s/:@]+)@"


def _token_like(user: str) -> bool:
    return len(user) >= 16 or (len(user) >= 8 and any(character.isdigit() for character in user) and _real_value(user))


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


def display(argv: Sequence[str]) -> str:
    """A command line as shown to a person (a message, a label): its secrets redacted."""
    return shlex.join(redact(argv))
