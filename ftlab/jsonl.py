"""Writing JSON Lines files: one JSON object per line, UTF-8, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write `rows` to `path`, one JSON object per line, creating the folder if needed.

    Characters such as "é" are written as they are, not as \\u escapes, so the file
    stays readable. The rows go to a hidden file beside `path` that is then renamed
    over it: a crash leaves the old file or the new one, never half of either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path
