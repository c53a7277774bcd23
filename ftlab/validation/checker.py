"""Check a whole file: split the bytes into lines, run the line rules, then the file-wide ones.

File-wide rules: the byte order mark, empty files, too few examples, duplicate
examples, user messages shared with another split, examples longer than
the model's context, and what the model's chat template cannot do with an example or
leaves out of it (these need the token counts).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ftlab.validation.codes import MIN_EXAMPLES
from ftlab.validation.prices import resolve_price
from ftlab.validation.report import Problem, ValidationReport
from ftlab.validation.rules import (
    LineResult,
    check_line,
    has_messages,
    normalise,
    show,
    user_texts,
)
from ftlab.validation.stats import TokenCounts, cached_tokenizer, check_counts, file_stats
from ftlab.wording import counted, is_are

UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
PathLike = str | os.PathLike[str]
# Far above any real fine-tuning file (the course's are a few MB); the checker holds it in memory.
MAX_FILE_BYTES = 1_000_000_000
SPACE = re.compile(r"\s*")
UTF16_PROBE_BYTES = 64  # the start of the file that tells UTF-16 without a byte order mark
# Files a learner passes by mistake, by their first bytes: one problem, not one per "line".
BINARY_STARTS = {
    b"\x1f\x8b": "a gzip-compressed file: decompress it first (gunzip FILE), then check the .jsonl",
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx file is one): unzip it, or save the sheet as "
    "JSON Lines",
    b"PAR1": "a Parquet file: convert it, e.g. pandas.read_parquet(path).to_json(out, "
    "orient='records', lines=True)",
}
BINARY_PROBE_BYTES = 8192  # a NUL byte here (and not UTF-16): not a text file at all


class UnreadableFileError(OSError):
    """The file could not be read at all (missing, a directory, no permission)."""


def _refusal(path: Path) -> str | None:
    """Why `path` cannot be read as a data file (None when it is a regular file of sane size)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"no such file (check the path; the current folder is {Path.cwd()})"
    except OSError as error:
        return str(error.strerror or error)
    if stat.S_ISDIR(info.st_mode):
        return "it is a directory; give the path of a .jsonl file inside it"
    if not stat.S_ISREG(info.st_mode):
        return (
            "it is not a regular file (a device, a pipe or a socket); save the data to a "
            ".jsonl file and check that"
        )
    if info.st_size > MAX_FILE_BYTES:
        return (
            f"it is {info.st_size / 1e9:,.1f} GB, more than the checker's limit of "
            f"{MAX_FILE_BYTES / 1e9:.0f} GB; split it into smaller files"
        )
    return None


def read_bytes(path: PathLike, what: str = "data file") -> bytes:
    """The file's bytes, or an `UnreadableFileError` that says what is wrong and how to fix it."""
    path = Path(path)
    reason = _refusal(path)
    if reason is None:
        try:
            return path.read_bytes()
        except OSError as error:
            reason = str(error.strerror or error)
        except MemoryError:
            reason = "there is not enough memory to read it; split it into smaller files"
    raise UnreadableFileError(f"cannot read the {what} {path}: {reason}")


def _one_json_value(data: bytes) -> bool:
    """True when `data` parses as one JSON value (CR is also JSON's whitespace)."""
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def split_lines(data: bytes) -> tuple[list[bytes], list[Problem]]:
    """The file's lines (LF, CRLF or, in a file with no LF, CR ends; BOM removed) and any
    file-level encoding problems."""
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
    if b"\r" in data and b"\n" not in data and not _one_json_value(data):
        data = data.replace(b"\r", b"\n")  # old Mac line ends (CR alone ends a line there)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline at the end of the last line does not start a new one
    return [line[:-1] if line.endswith(b"\r") else line for line in lines], problems


def _utf16_without_bom(data: bytes) -> bool:
    """True when the file starts like UTF-16 text without a byte order mark: a NUL in every
    other byte (ASCII characters take two bytes there, one of them 0)."""
    start = data[: UTF16_PROBE_BYTES - UTF16_PROBE_BYTES % 2]
    if len(start) < 4:
        return False
    low, high = start[0::2], start[1::2]
    return (low.count(0) == len(low) and 0 not in high) or (
        high.count(0) == len(high) and 0 not in low
    )


def _binary_kind(data: bytes) -> str | None:
    """What binary file `data` is, with how to get the JSON Lines out of it; None for text."""
    for start, kind in BINARY_STARTS.items():
        if data.startswith(start):
            return f"it is {kind}"
    if b"\x00" in data[:BINARY_PROBE_BYTES]:
        return (
            "it holds NUL bytes, as model weights, archives and spreadsheets do; pass the "
            "JSON Lines file itself"
        )
    return None


def _lines(data: bytes) -> tuple[list[LineResult], list[Problem]]:
    if data.startswith(UTF16_BOMS) or _utf16_without_bom(data):
        how = (
            "it starts with a UTF-16 byte order mark, as Notepad's 'Unicode' saves it"
            if data.startswith(UTF16_BOMS)
            else "every other byte is 0, as PowerShell's `>` or a UTF-16 encoder without a "
            "byte order mark writes it"
        )
        return [], [
            Problem(
                "invalid_encoding",
                f"the file is UTF-16 ({how}); save it as UTF-8 (in Python, "
                "open(path, 'w', encoding='utf-8'))",
                line=None,
            )
        ]
    if binary := _binary_kind(data):
        return [], [Problem("invalid_encoding", f"this is not a text file: {binary}", line=None)]
    raw_lines, problems = split_lines(data)
    whole = not_json_lines(raw_lines)
    if whole is not None:
        return [], [*problems, whole]
    return [check_line(number, raw) for number, raw in enumerate(raw_lines, start=1)], problems


def not_json_lines(raw_lines: list[bytes]) -> Problem | None:
    """One `invalid_json` for a file that is a JSON array or pretty-printed JSON, not JSON Lines.

    Checked line by line, such a file gives an error on every line, each with a
    misleading hint; the file as a whole says what happened.
    """
    first = next((line.strip() for line in raw_lines if line.strip()), b"")
    if first.startswith(b"{") and first != b"{":
        return None  # the usual JSON Lines start: not worth parsing the whole file again
    try:
        text = b"\n".join(raw_lines).decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        values = _json_values(text)
    except json.JSONDecodeError as error:
        if first not in (b"[", b"{"):
            return None
        return _pretty_problem(
            f"pretty-printed JSON (with a JSON error at line {error.lineno}: {error.msg})"
        )
    except (ValueError, RecursionError):
        return None
    lines = sum(1 for line in raw_lines if line.strip())
    if len(values) == 1 and isinstance(values[0], list) and any(map(_is_example, values[0])):
        return _pretty_problem(f"one JSON array of {_count(values[0])}")
    if len(values) < lines:
        return _pretty_problem(f"{_count(values)} spread over {lines} lines")
    return None  # one value per line: JSON Lines, checked line by line


def _json_values(text: str) -> list[Any]:
    """Every JSON value of a text that holds nothing else; raises `ValueError` otherwise."""
    decoder, values = json.JSONDecoder(), []
    position = SPACE.match(text).end()
    while position < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        position = SPACE.match(text, position).end()
    return values


def _is_example(value: Any) -> bool:
    return isinstance(value, dict) and "messages" in value


def _count(values: list[Any]) -> str:
    return counted(len(values), "example" if all(map(_is_example, values)) else "JSON value")


def _pretty_problem(shape: str) -> Problem:
    return Problem(
        "invalid_json",
        f"the file is {shape}, not JSON Lines: a .jsonl file has one complete example "
        "per line; write each example with json.dumps(example) (no indent), one per line, "
        'e.g. f.write(json.dumps(example) + "\\n")',
        line=1,
    )


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


def _user_index(results: Iterable[LineResult]) -> dict[str, int]:
    """Normalised user message -> first line it appears on."""
    index: dict[str, int] = {}
    for result in results:
        for text in user_texts(result.value):
            index.setdefault(normalise(text), result.line)
    return index


def read_split(path: PathLike) -> tuple[str, dict[str, int], list[Problem]]:
    """An `--against` file: its name, its user message index, and a warning for unread lines.

    Raises `UnreadableFileError` when nothing in it can be read: comparing with
    nothing would wrongly report no overlap.
    """
    name = str(path)
    results, problems = _lines(read_bytes(path, "--against file"))
    unread = [r for r in results if not r.blank and not has_messages(r.value)]
    file_errors = [p.message for p in problems if p.is_error]
    if file_errors or not any(has_messages(r.value) for r in results):
        reason = (
            file_errors[0]
            if file_errors
            else (
                "none of its lines holds a readable example" if unread else "it holds no examples"
            )
        )
        raise UnreadableFileError(
            f"cannot compare with the --against file {name}: {reason}; "
            f"run `ftlab validate {name}` to see its problems"
        )
    warnings = []
    if unread:
        lines = ", ".join(str(r.line) for r in unread[:5]) + (", ..." if len(unread) > 5 else "")
        warnings.append(
            Problem(
                "against_unreadable",
                f"{counted(len(unread), 'line')} of {name} (line {lines}) could not be read, so "
                "their "
                "user messages were not compared with this file; fix them (run "
                f"`ftlab validate {name}`) and check again",
                line=None,
            )
        )
    return name, _user_index(results), warnings


def _overlaps(
    results: Sequence[LineResult], splits: Sequence[tuple[str, dict[str, int], list[Problem]]]
) -> tuple[list[dict[str, Any]], list[Problem]]:
    found, problems = [], []
    for other_name, other, warnings in splits:
        problems.extend(warnings)
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
                        related_file=other_name,
                    )
                )
    return found, problems


def _count_problem(attempted: int, accepted: int, has_errors: bool) -> Problem | None:
    """`empty_file` or `too_few_examples`. Every example line counts, broken or not: fixing
    a broken line, not deleting it, is what the report asks for."""
    if not attempted:
        if has_errors:
            return None
        return Problem(
            "empty_file",
            f"the file has no examples; add at least {MIN_EXAMPLES} lines, one JSON example each",
            line=None,
        )
    if attempted >= MIN_EXAMPLES:
        return None
    have = f"the file has {counted(attempted, 'example')}"
    if accepted < attempted:
        have += f", {attempted - accepted} of them with errors"
    return Problem(
        "too_few_examples",
        f"{have}; fine-tuning needs at least {MIN_EXAMPLES} (OpenAI refuses "
        "fewer, and 50 to 100 good ones is a better start). This is a rule for a training "
        "file: a validation or test file may be smaller (ftlab train --valid and ftlab eval "
        "take it as it is)",
        line=None,
    )


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
    Raises `UnreadableFileError` only when an `against` file cannot be read (or
    holds nothing readable), `ValueError` for a bad `epochs`, `max_tokens` or
    price argument, and, when tokens are counted with a tokenizer given by name,
    `ModelNotFoundError` or `HomeError` if that model cannot be loaded.
    """
    if isinstance(data, str):  # text pasted in a notebook; lone surrogates stay visible as errors
        data = data.encode("utf-8", "surrogatepass")
    check_counts(epochs=epochs, max_tokens=max_tokens)  # bad options fail before any work
    if price_per_million is not None:
        resolve_price(price_per_million)
    splits = [read_split(path) for path in _as_paths(against)]
    results, problems = _lines(data)
    for result in results:
        problems.extend(result.problems)
    attempted = [r for r in results if not r.blank]
    accepted = [r for r in results if r.example is not None]
    count = _count_problem(len(attempted), len(accepted), any(p.is_error for p in problems))
    if count is not None:
        problems.append(count)
    duplicates, found = _duplicates(accepted)
    problems.extend(found)
    overlaps, found = _overlaps(results, splits)
    problems.extend(found)
    if count_tokens and (tokenizer is None or isinstance(tokenizer, str)):
        tokenizer = cached_tokenizer(tokenizer)
    examples = [r.example for r in accepted]
    # A whole-file problem (a JSON array, UTF-16) reads no lines, but the file still has them.
    lines = len(attempted) if results else sum(1 for line in data.splitlines() if line.strip())
    stats, too_long, over_train, counts = file_stats(
        examples,
        lines,
        tokenizer=tokenizer if count_tokens else None,
        max_tokens=max_tokens,
        epochs=epochs,
        price_per_million=price_per_million,
    )
    context = stats["context_tokens"]
    for i, tokens in too_long:
        if stats["context_source"] == "given":
            why = f"more than your --max-tokens limit of {context:,}"
        else:
            why = (
                f"more than the model's context of {context:,}; OpenAI's training cuts off "
                "the rest and `ftlab train` refuses it"
            )
        problems.append(
            Problem(
                "too_long",
                f"the example is {tokens:,} tokens, {why}, so shorten it or split the conversation",
                line=accepted[i].line,
            )
        )
    problems.extend(
        _over_train_problem(tokens, accepted[i].line, stats["train_max_length"])
        for i, tokens in over_train
    )
    if counts is not None:
        problems.extend(_template_problems(counts, [r.line for r in accepted], stats["tokenizer"]))
        problems.extend(_system_dropped(counts, accepted, stats["tokenizer"]))
    return ValidationReport(
        name=name,
        problems=problems,
        examples=examples,
        example_lines=[r.line for r in accepted],
        stats=stats,
        duplicates=duplicates,
        overlaps=overlaps,
    )


def _over_train_problem(tokens: int, line: int, limit: int) -> Problem:
    """An example OpenAI trains on whole but `ftlab train` and the course server refuse."""
    return Problem(
        "over_train_max_length",
        f"the example is {tokens:,} tokens: within the model's context, but `ftlab train` and "
        f"the course server refuse examples over {limit:,} tokens; shorten it or split the "
        f"conversation (or give `ftlab train` a larger --max-length, which needs more memory)",
        line=line,
    )


LISTED_LINES = 5  # lines named in a file-level warning about many lines


def _template_problems(counts: TokenCounts, lines: list[int], model: str) -> list[Problem]:
    """`template_error` for the examples the chat template cannot render, `reply_not_located`
    for the replies `ftlab train` cannot locate. When the template fails on every example, the
    model, not the file, is what to change: one file-level warning per thing it said."""
    problems = []
    errors = counts.template_errors
    if errors and len(errors) == len(lines) and not counts.has_template:
        problems.append(
            Problem(
                "template_error",
                f"{model}'s tokenizer has no chat template, so the tokens of all "
                f"{counted(len(lines), 'example')} were {_COUNTED_AS_TEXT}. Fix: give --model a "
                "chat (instruct) model, "
                "whose tokenizer has a chat template, or add --no-tokens to check the structure "
                "only",
                line=None,
            )
        )
    elif errors and len(errors) == len(lines):
        said: dict[str, list[int]] = {}
        for number, reason in errors.items():
            said.setdefault(reason, []).append(lines[number])
        problems += [
            Problem(
                "template_error",
                _whole_file_template_error(model, reason, where, len(lines)),
                line=None,
            )
            for reason, where in said.items()
        ]
    else:
        problems += [
            Problem(
                "template_error",
                f'{model}\'s chat template cannot render this example; it says "{reason}". '
                "Its tokens were counted as plain text, not as `ftlab train` reads them, and "
                "`ftlab train` with this model stops on it (OpenAI is not affected). "
                f"Fix: {_template_fix(reason)}",
                line=lines[number],
            )
            for number, reason in errors.items()
        ]
    why = (
        f"{model}'s chat template does not render conversations as one message after another "
        "(it renders a message differently once later ones follow, as Qwen3's drops the "
        "thinking of earlier replies), so `ftlab train` with this model refuses"
    )
    fix = (
        "OpenAI is not affected. Fix: use a model whose chat template appends each message "
        '(most instruct models), or give {which} "weight": 0 (shown, not learned), or split '
        "the conversation into one example per reply"
    )
    if len(counts.unlocated) == len(lines) > LISTED_LINES:  # every example: one warning
        listed = _listed_lines([lines[number] for number in counts.unlocated])
        problems.append(
            Problem(
                "reply_not_located",
                f"{why} all {counted(len(lines), 'example')} (line {listed}): an earlier reply "
                "of each "
                "cannot be located for label masking. " + fix.format(which="the earlier replies"),
                line=None,
            )
        )
        return problems
    for number, indexes in counts.unlocated.items():
        also = ", ".join(f"messages[{i}]" for i in indexes[1:])
        which = ", ".join(f"messages[{i}]" for i in indexes)
        problems.append(
            Problem(
                "reply_not_located",
                f"{why} this example: the answer of message {indexes[0]} cannot be located for "
                f"label masking{f' (nor that of {also})' if also else ''}. "
                + fix.format(which=which),
                line=lines[number],
                message_index=indexes[0],
            )
        )
    return problems


def _system_dropped(counts: TokenCounts, accepted: list[LineResult], model: str) -> list[Problem]:
    """One file-level `system_dropped` when the chat template leaves out system messages and
    the file has some: nothing fails, so without it the learner would never know that the
    model does not read their system prompt (the template is to change, not a line)."""
    if not counts.drops_system:
        return []
    where = [r.line for r in accepted if any(m["role"] == "system" for m in r.example["messages"])]
    if not where:
        return []
    return [
        Problem(
            "system_dropped",
            f"{model}'s chat template leaves out system messages: the "
            f"{counted(len(where), 'example')} with one (line {_listed_lines(where)}) "
            f"{is_are(len(where))} rendered without their system prompt, "
            "so the model never reads it, neither in `ftlab train` nor when it is asked, and "
            "learns the replies as if there were none (OpenAI is not affected). Fix: put the "
            "system prompt at the start of the first user message, or use another model, whose "
            "chat template keeps system messages",
            line=None,
        )
    ]


_COUNTED_AS_TEXT = (
    "counted as plain text (role: text lines), not as `ftlab train` reads them, and "
    "`ftlab train` with this model refuses the file (OpenAI is not affected)"
)


def _listed_lines(where: list[int]) -> str:
    """The first LISTED_LINES line numbers of `where`, and "..." if there are more."""
    more = ", ..." if len(where) > LISTED_LINES else ""
    return ", ".join(map(str, where[:LISTED_LINES])) + more


def _whole_file_template_error(model: str, reason: str, where: list[int], n_examples: int) -> str:
    listed = _listed_lines(where)
    every = counted(n_examples, "example")
    share = f"all {every}" if len(where) == n_examples else f"{len(where)} of the {every}"
    return (
        f"{model}'s chat template cannot render {share} (line {listed}); it says "
        f'"{reason}". Their tokens were {_COUNTED_AS_TEXT}. Fix: {_template_fix(reason)}'
    )


def _template_fix(reason: str) -> str:
    system = (
        "merge the system prompt into the start of the first user message (this template has "
        "no system role), or "
        if "system" in reason.lower()
        else ""
    )
    return (
        f"{system}use a model whose chat template accepts these messages, or add --no-tokens to "
        "check the structure only"
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
    what: str = "data file",
) -> ValidationReport:
    """Check a chat-format JSONL file (options as in `validate_bytes`).

    Raises `UnreadableFileError` when the file cannot be read at all (its message calls the
    file `what`); every problem inside the file is reported, never raised.
    """
    return validate_bytes(
        read_bytes(path, what),
        name=str(path),
        against=against,
        epochs=epochs,
        price_per_million=price_per_million,
        tokenizer=tokenizer,
        count_tokens=count_tokens,
        max_tokens=max_tokens,
    )
