"""JSON Lines files: writing them (one JSON object per line, UTF-8, all or nothing), and
saying where a line's JSON breaks."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ftlab.files import write_text_atomically


def repeated_keys(pairs: list[tuple[str, Any]]) -> list[str]:
    """The keys that a JSON object's pairs (an `object_pairs_hook`'s argument) name more than
    once, in the order they first appear: `json.loads` would silently keep the last value."""
    return [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]


def json_error_place(error: json.JSONDecodeError) -> str:
    """What is wrong and where, in the line: "Expecting ',' delimiter at column 7"."""
    at = "" if error.msg.endswith(" at") else " at"  # "Unterminated string starting at"
    return f"{error.msg}{at} column {error.colno}"


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write `rows` to `path`, one JSON object per line, creating the folder if needed.

    Characters such as "é" are written as they are, not as \\u escapes, so the file
    stays readable. A row that is not JSON fails before the file is touched.
    """
    return write_text_atomically(
        path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    )
