"""Check a whole file: split the bytes into lines, run the line rules, then the file-wide ones.

File-wide rules: the byte order mark, empty files, too few examples, duplicate
examples, user messages shared with another split, and examples longer than
the model's context (which needs the token counts).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ftlab.validation.codes import MIN_EXAMPLES
from ftlab.validation.prices import resolve_price
from ftlab.validation.report import Problem, ValidationReport
from ftlab.validation.rules import LineResult, check_line, normalise, show, user_texts
from ftlab.validation.stats import cached_tokenizer, file_stats

UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
PathLike = str | os.PathLike[str]


class UnreadableFileError(OSError):
    """The file could not be read at all (missing, a directory, no permission)."""


def read_bytes(path: PathLike, what: str = "data file") -> bytes:
    """The file's bytes, or an `UnreadableFileError` that says what is wrong and how to fix it."""
    path = Path(path)
    if path.is_dir():
        raise UnreadableFileError(
            f"cannot read the {what} {path}: it is a directory; give the "
            "path of a .jsonl file inside it"
        )
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UnreadableFileError(
            f"cannot read the {what} {path}: no such file (check the "
            f"path; the current folder is {Path.cwd()})"
        ) from None
    except OSError as error:
        raise UnreadableFileError(
            f"cannot read the {what} {path}: {error.strerror or error}"
        ) from None


def split_lines(data: bytes) -> tuple[list[bytes], list[Problem]]:
    """The file's lines (LF or CRLF ends, BOM removed) and any file-level encoding problems."""
    problems = []
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
        problems.append(
            Problem(
                "bom",
                "the file starts with a UTF-8 byte order mark (Windows "
                "Notepad and Excel add one); it was ignored, but some tools "
                "choke on it: save as 'UTF-8' without BOM",
                line=1,
            )
        )
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline at the end of the last line does not start a new one
    return [line[:-1] if line.endswith(b"\r") else line for line in lines], problems


def _lines(data: bytes) -> tuple[list[LineResult], list[Problem]]:
    if data.startswith(UTF16_BOMS):
        return [], [
            Problem(
                "invalid_encoding",
                "the file is UTF-16 (it starts with a UTF-16 "
                "byte order mark, as Notepad's 'Unicode' saves it); save it as "
                "UTF-8",
                line=None,
            )
        ]
    raw_lines, problems = split_lines(data)
    return [check_line(number, raw) for number, raw in enumerate(raw_lines, start=1)], problems


def _duplicates(results: Iterable[LineResult]) -> tuple[list[tuple[int, int]], list[Problem]]:
    first_seen: dict[str, int] = {}
    pairs, problems = [], []
    for result in results:
        if result.example is None:
            continue
        try:
            key = json.dumps(result.example, sort_keys=True)
        except (TypeError, ValueError, RecursionError):
            continue
        earlier = first_seen.setdefault(key, result.line)
        if earlier != result.line:
            pairs.append((result.line, earlier))
            problems.append(
                Problem(
                    "duplicate_example",
                    f"the same example as line {earlier}; delete one copy "
                    "(a repeated example is learned twice as hard)",
                    line=result.line,
                    related_line=earlier,
                )
            )
    return pairs, problems


def user_message_index(data: bytes) -> dict[str, int]:
    """Normalised user message -> first line it appears on, read leniently from any file."""
    index: dict[str, int] = {}
    results, _ = _lines(data)
    for result in results:
        for text in user_texts(result.value):
            index.setdefault(normalise(text), result.line)
    return index


def _overlaps(
    results: Sequence[LineResult], against: Sequence[tuple[str, bytes]]
) -> tuple[list[dict[str, Any]], list[Problem]]:
    found, problems = [], []
    for other_name, other_data in against:
        other = user_message_index(other_data)
        for result in results:
            for text in user_texts(result.value):
                other_line = other.get(normalise(text))
                if other_line is None:
                    continue
                found.append(
                    {
                        "line": result.line,
                        "file": other_name,
                        "other_line": other_line,
                        "text": text,
                    }
                )
                problems.append(
                    Problem(
                        "overlap_with_split",
                        f"user message {show(text)} is also in {other_name} "
                        f"line {other_line}; remove it from one of the two files, or the "
                        "evaluation measures memory instead of skill",
                        line=result.line,
                        related_line=other_line,
                    )
                )
    return found, problems


def validate_bytes(
    data: bytes | str,
    *,
    name: str = "<bytes>",
    against: PathLike | Sequence[PathLike] | None = None,
    epochs: int | None = None,
    price_per_million: float | str | None = None,
    tokenizer: Any = None,
    count_tokens: bool = True,
    max_tokens: int | None = None,
) -> ValidationReport:
    """Check the bytes of a chat-format JSONL file; never raises on any content.

    `against`: other split file(s) whose user messages must not reappear here.
    `tokenizer`: a tokenizer object or a model name (default: the course's base
    model, loaded once and cached); `count_tokens=False` skips token statistics
    and the `too_long` check, for fast structure-only checks.
    `price_per_million`: a number or a model name from `data/prices.json`.
    Raises `UnreadableFileError` only when an `against` file cannot be read, and
    `ValueError` for a bad `epochs` or price argument.
    """
    if isinstance(data, str):  # text pasted in a notebook; lone surrogates stay visible as errors
        data = data.encode("utf-8", "surrogatepass")
    if price_per_million is not None:
        resolve_price(price_per_million)  # a bad price fails before any work
    others = [(str(p), read_bytes(p, "--against file")) for p in _as_paths(against)]
    results, problems = _lines(data)
    for result in results:
        problems.extend(result.problems)
    attempted = [r for r in results if not r.blank]
    accepted = [r for r in results if r.example is not None]
    if not attempted and not any(p.is_error for p in problems):
        problems.append(
            Problem(
                "empty_file",
                "the file has no examples; add at least "
                f"{MIN_EXAMPLES} lines, one JSON example each",
                line=None,
            )
        )
    elif 0 < len(attempted) < MIN_EXAMPLES:
        problems.append(
            Problem(
                "too_few_examples",
                f"the file has {len(attempted)} example(s); "
                f"fine-tuning needs at least {MIN_EXAMPLES} (OpenAI refuses "
                "fewer, and 50 to 100 good ones is a better start)",
                line=None,
            )
        )
    duplicates, found = _duplicates(accepted)
    problems.extend(found)
    overlaps, found = _overlaps(results, others)
    problems.extend(found)
    if count_tokens and (tokenizer is None or isinstance(tokenizer, str)):
        tokenizer = cached_tokenizer(tokenizer)
    examples = [r.example for r in accepted]
    stats, too_long = file_stats(
        examples,
        len(attempted),
        tokenizer=tokenizer if count_tokens else None,
        max_tokens=max_tokens,
        epochs=epochs,
        price_per_million=price_per_million,
    )
    context = stats["context_tokens"]
    for i, tokens in too_long:
        problems.append(
            Problem(
                "too_long",
                f"the example is {tokens:,} tokens, more than the "
                f"model's context of {context:,}; training cuts off the rest, "
                "so shorten it or split the conversation",
                line=accepted[i].line,
            )
        )
    return ValidationReport(
        name=name,
        problems=problems,
        examples=examples,
        example_lines=[r.line for r in accepted],
        stats=stats,
        duplicates=duplicates,
        overlaps=overlaps,
    )


def _as_paths(against: PathLike | Sequence[PathLike] | None) -> list[PathLike]:
    if against is None:
        return []
    if isinstance(against, str | os.PathLike):
        return [against]
    return list(against)


def validate_file(
    path: PathLike,
    *,
    against: PathLike | Sequence[PathLike] | None = None,
    epochs: int | None = None,
    price_per_million: float | str | None = None,
    tokenizer: Any = None,
    count_tokens: bool = True,
    max_tokens: int | None = None,
) -> ValidationReport:
    """Check a chat-format JSONL file (options as in `validate_bytes`).

    Raises `UnreadableFileError` when the file cannot be read at all; every
    problem inside the file is reported, never raised.
    """
    return validate_bytes(
        read_bytes(path),
        name=str(path),
        against=against,
        epochs=epochs,
        price_per_million=price_per_million,
        tokenizer=tokenizer,
        count_tokens=count_tokens,
        max_tokens=max_tokens,
    )
