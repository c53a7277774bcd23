"""API keys: single-user mode (any key) or a keys file for workshops (one learner per key).

Keys file format, one learner per line, `#` starts a comment:

    # name   key
    ana      sk-workshop-3f9a...
    ben      sk-workshop-77c1...

The name becomes the owner of everything the key creates and the `org` slot of
its model names (`ft:smollm2-135m-instruct:ana:...`), so it may only contain
letters, digits, `_` and `-`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ftlab.server.errors import APIError

SINGLE_USER = "local"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class KeysFileError(ValueError):
    """The keys file cannot be used (the message names the file and line)."""


def load_keys(path: str | Path) -> dict[str, str]:
    """Read a keys file into {key: name}; raise KeysFileError saying what is wrong and where."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KeysFileError(f"Cannot read the keys file {path}: {error}") from error
    keys: dict[str, str] = {}
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{path}, line {number}"
        if len(parts) != 2:
            raise KeysFileError(f"{where}: expected `name key`, got {len(parts)} field(s).")
        name, key = parts
        if not NAME.match(name):
            raise KeysFileError(
                f"{where}: the name {name!r} may only use letters, digits, '_' and '-' "
                "(it becomes part of model names)."
            )
        if key in keys:
            raise KeysFileError(f"{where}: this key is already given to {keys[key]!r}.")
        if name in names:
            raise KeysFileError(f"{where}: the name {name!r} appears twice.")
        keys[key] = name
        names.add(name)
    if not keys:
        raise KeysFileError(f"The keys file {path} has no keys (format: `name key` per line).")
    return keys


class Authenticator:
    """Turns an `Authorization: Bearer KEY` header into the owner name."""

    def __init__(self, keys: dict[str, str] | None = None) -> None:
        self.keys = keys

    @property
    def multi_user(self) -> bool:
        return self.keys is not None

    def owner(self, authorization: str | None) -> str:
        if self.keys is None:
            return SINGLE_USER
        key = ""
        if authorization and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if not key:
            raise APIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )
        name = self.keys.get(key)
        if name is None:
            shown = f"{key[:3]}...{key[-4:]}" if len(key) > 8 else "***"
            raise APIError(
                401,
                f"Incorrect API key provided: {shown}. Ask your instructor for your key.",
                code="invalid_api_key",
            )
        return name
