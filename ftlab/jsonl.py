"""Writing JSON Lines files: one JSON object per line, UTF-8, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ftlab.files import write_text_atomically


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write `rows` to `path`, one JSON object per line, creating the folder if needed.

    Characters such as "é" are written as they are, not as \\u escapes, so the file
    stays readable. A row that is not JSON fails before the file is touched.
    """
    return write_text_atomically(
        path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    )
