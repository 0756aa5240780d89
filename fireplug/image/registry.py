"""Images in a registry a swarm's nodes pull from: credentials from the Docker config, and the push.

Credentials are found as the docker CLI finds them (``credHelpers`` for the registry, else
``credsStore``, else ``auths``) and reach the engine only in the X-Registry-Auth header of a
push or a service creation: never in a label, an environment variable, or fp's output.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fireplug.errors import RegistryError as RegistryError
from fireplug.hosts.engine import Engine, mapping_of
from fireplug.support import events, proc


@dataclass(frozen=True)
class Repository:
    """``registry.example:5000/team``: where a host's images go."""

    address: str  # registry.example:5000
    path: str  # team (may be empty)

    @classmethod
    def parse(cls, text: str) -> Repository:
        address, _, path = text.strip().strip("/").partition("/")
        if not address or ("." not in address and ":" not in address and address != "localhost"):
            raise ValueError(f"registry {text!r}: start with the registry's address, e.g. registry.example:5000/team")
        return cls(address, path)

    def image(self, local_tag: str) -> tuple[str, str]:
        """``fp-KEY:HASH`` -> (``ADDRESS/PATH/fp-KEY``, ``HASH``)."""
        name, _, tag = local_tag.partition(":")
        return "/".join(part for part in (self.address, self.path, name) if part), tag or "latest"


def auth_header(address: str, docker_config: Path) -> str:
    """The X-Registry-Auth value for ``address`` (base64 JSON; ``{}`` when fp knows no credentials).

    Raises:
        RegistryError: the Docker config or its credential helper failed.
    """
    found = credentials(address, _read_config(docker_config))
    return base64.urlsafe_b64encode(json.dumps(found).encode()).decode()


def credentials(address: str, config: Mapping[str, Any]) -> dict[str, str]:
    helpers = mapping_of(config.get("credHelpers"))
    helper = str(helpers.get(address) or config.get("credsStore") or "")
    if helper:
        return _from_helper(helper, address)
    auths = mapping_of(config.get("auths"))
    entry = auths.get(address) or auths.get(f"https://{address}") or auths.get(f"http://{address}") or {}
    if not isinstance(entry, dict):
        return {}
    if entry.get("identitytoken"):
        return {"identitytoken": str(entry["identitytoken"]), "serveraddress": address}
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"the Docker config's credentials for {address} are not base64 user:password", hint="run `docker login` again") from None
        return {"username": user, "password": password, "serveraddress": address}
    return {}


def _from_helper(helper: str, address: str) -> dict[str, str]:
    result = proc.run([f"docker-credential-{helper}", "get"], input=address.encode(), timeout=60, what=f"docker-credential-{helper}")
    if result.returncode != 0:
        return {}  # the helper knows no credentials for it: an anonymous push, as docker does
    try:
        answer = json.loads(result.stdout)
        user, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"docker-credential-{helper} answered something fp cannot read for {address}") from None
    if user == "<token>":
        return {"identitytoken": secret, "serveraddress": address}
    return {"username": user, "password": secret, "serveraddress": address}


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        value = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RegistryError(f"cannot read {folder / 'config.json'}: {e}") from e
    return value if isinstance(value, dict) else {}


def push(engine: Engine, local_tag: str, repository: Repository, registry_auth: str) -> str:
    """``local_tag`` pushed to ``repository``; the reference the nodes pull. Layers the registry
    has are not sent again: an unchanged project pushes nothing.

    Raises:
        RegistryError: the registry refused it or could not be reached from the engine.
    """
    name, tag = repository.image(local_tag)
    engine.tag_image(local_tag, name, tag)
    sent, digest = False, ""
    with events.progress(f"pushing {name}:{tag}"):
        for message in engine.push(name, tag, registry_auth):
            if message.get("error"):
                raise RegistryError(
                    f"pushing {name}:{tag} failed: {str(message['error']).strip()}",
                    hint=f"check that {repository.address} answers from host '{engine.host}', and `docker login {repository.address}`",
                )
            sent = sent or message.get("status") == "Pushed"
            aux = message.get("aux")
            if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
                digest = str(aux["Digest"])
    events.detail(f"{name}:{tag} {'pushed' if sent else 'was already in the registry'} ({digest or 'no digest reported'})")
    # by digest: a node that has the image starts it without asking the registry again
    return f"{name}:{tag}@{digest}" if digest else f"{name}:{tag}"
