"""API keys: single-user mode (any key) or a keys file for workshops (one learner per key).

Keys file format, one learner per line, `#` starts a comment:

    # name   key
    ana      sk-workshop-3f9a...
    ben      sk-workshop-77c1...

The name becomes the owner of everything the key creates and the `org` slot of
its model names (`ft:smollm2-135m-instruct:ana:...`), so it may only contain
letters, digits, `_` and `-`.

The server re-reads the file when it changes, so an instructor can add or remove a learner
during a workshop without a restart; a change that breaks the file is logged and ignored
(the keys read before stay in force) until the file is fixed.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from ftlab.server.errors import APIError

log = logging.getLogger("ftlab.server")

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
        why = {
            FileNotFoundError: "there is no such file",
            IsADirectoryError: "it is a folder",
            PermissionError: "you may not read it",
            UnicodeDecodeError: "it is not UTF-8 text",
        }.get(type(error), str(error))
        fix = (
            "make it the server's user's own (`chown USER FILE`, where USER runs the "
            "server), or run the server as the user that wrote it"
            if isinstance(error, PermissionError)
            else 'pass a text file with one `name key` line per learner (README, "Running a '
            'workshop")'
        )
        raise KeysFileError(f"Cannot read the keys file {path}: {why}.\nFix: {fix}.") from error
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


# Keys shorter than this can be guessed by trying (the server does not slow down guesses).
MIN_KEY_LENGTH = 20
MAKE_KEY = "python3 -c \"import secrets; print('sk-' + secrets.token_urlsafe(24))\""


def key_warnings(path: str | Path, keys: dict[str, str]) -> list[str]:
    """What makes these keys unsafe for a class: a file other users may read, short keys."""
    warnings = []
    try:
        mode = Path(path).stat().st_mode & 0o777
    except OSError:  # gone since it was read: the next change of it is read again
        mode = 0
    if mode & 0o066:
        warnings.append(
            f"The keys file {path} can be read or changed by other users of this machine (mode "
            f"{mode:o}): on a shared server any learner could take every key. Fix: chmod 600 "
            f"{path}."
        )
    short = sorted(name for key, name in keys.items() if len(key) < MIN_KEY_LENGTH)
    if short:
        warnings.append(
            f"{len(short)} key(s) in {path} are shorter than {MIN_KEY_LENGTH} characters and "
            f"could be guessed ({', '.join(short[:5])}{', ...' if len(short) > 5 else ''}). "
            f"Fix: give each learner a random key, made with {MAKE_KEY}."
        )
    return warnings


class Authenticator:
    """Turns an `Authorization: Bearer KEY` header into the owner name."""

    def __init__(self, keys: dict[str, str] | None = None, path: str | Path | None = None) -> None:
        self.keys = keys
        self.path = Path(path) if path is not None else None
        self._seen = self._signature()
        self._reading = threading.Lock()  # requests run on several threads

    @classmethod
    def from_file(cls, path: str | Path) -> Authenticator:
        """Read `path` now (raising KeysFileError) and again whenever it changes."""
        keys = load_keys(path)
        for warning in key_warnings(path, keys):
            log.warning(warning)
        return cls(keys, path)

    @property
    def multi_user(self) -> bool:
        return self.keys is not None

    def _signature(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def refresh(self) -> None:
        """Re-read the keys file if it changed since it was last read.

        A file that became unreadable or invalid is reported once and the keys in force stay,
        so one typo does not lock the whole class out."""
        if self.path is None or self._signature() == self._seen:
            return
        with self._reading:  # one reader at a time, so an older read never lands last
            signature = self._signature()
            if signature == self._seen:
                return  # another request read this version meanwhile
            self._seen = signature
            self._read_again()

    def _read_again(self) -> None:
        assert self.path is not None
        try:
            keys = load_keys(self.path)
        except KeysFileError as error:
            log.warning("%s The %d keys read before stay in force.", error, len(self.keys or {}))
            return
        for warning in key_warnings(self.path, keys):
            log.warning(warning)
        before = self.keys or {}
        added = set(keys.values()) - set(before.values())
        removed = set(before.values()) - set(keys.values())
        # A learner kept, under a new key (a leaked key replaced): the old key stops working.
        changed = {name for key, name in before.items() if keys.get(key) != name} - removed
        self.keys = keys
        log.info(
            "keys file %s re-read: %d keys (added: %s; removed: %s; new key: %s)",
            self.path,
            len(keys),
            ", ".join(sorted(added)) or "none",
            ", ".join(sorted(removed)) or "none",
            ", ".join(sorted(changed)) or "none",
        )

    def owner(self, authorization: str | None) -> str:
        self.refresh()
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
