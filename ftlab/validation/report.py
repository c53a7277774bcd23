"""The checker's result: problems with line numbers, the examples that passed, and statistics.

A `ValidationReport` prints as a table in the terminal (`format_text()`), renders
as an HTML table in Jupyter (`_repr_html_`), and serialises to the JSON object that
`ftlab validate --json` prints (`to_dict()`: valid, errors, warnings, stats).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

from ftlab.validation.codes import is_error
from ftlab.wording import counted, is_are

HTML_ROW_LIMIT = 200  # a notebook cell with 10,000 rows helps nobody


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a look) in a data file.

    `line` is 1-based (None for file-level problems such as too few examples);
    `message_index` is the position in the example's `messages` list (0-based,
    as in `example["messages"][2]`); `related_line` is the other line a
    duplicate or overlap refers to, in `related_file` when that is another file.
    """

    code: str
    message: str
    line: int | None = None
    message_index: int | None = None
    related_line: int | None = None
    related_file: str | None = None

    @property
    def is_error(self) -> bool:
        return is_error(self.code)

    @property
    def where(self) -> str:
        """`line 7, messages[2]`, `line 7` or `file`."""
        place = "file" if self.line is None else f"line {self.line}"
        return place if self.message_index is None else f"{place}, messages[{self.message_index}]"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"line": self.line, "code": self.code, "message": self.message}
        if self.message_index is not None:
            data["message_index"] = self.message_index
        if self.related_line is not None:
            data["related_line"] = self.related_line
        if self.related_file is not None:
            data["related_file"] = self.related_file
        return data

    def __str__(self) -> str:
        return f"{self.where}: {self.code}: {self.message}"


def _sort_key(problem: Problem) -> tuple[int, int, int]:
    # File-level problems last: the per-line ones are what a learner fixes first.
    line = problem.line if problem.line is not None else 1 << 62
    index = problem.message_index if problem.message_index is not None else -1
    return (line, index, 0)


@dataclass
class ValidationReport:
    """Everything the checker found in one file.

    `examples` are the parsed examples that passed every error check, in file
    order, and `example_lines` their line numbers, so training code can reuse
    the parse instead of reading the file again. `duplicates` lists
    `(line, earlier_line)` pairs; `overlaps` lists dicts with `line`, `file`,
    `other_line` and `text` for user messages also found in another split.
    """

    name: str
    problems: list[Problem] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list, repr=False)
    example_lines: list[int] = field(default_factory=list, repr=False)
    stats: dict[str, Any] = field(default_factory=dict)
    duplicates: list[tuple[int, int]] = field(default_factory=list, repr=False)
    overlaps: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def errors(self) -> list[Problem]:
        return sorted((p for p in self.problems if p.is_error), key=_sort_key)

    @property
    def warnings(self) -> list[Problem]:
        return sorted((p for p in self.problems if not p.is_error), key=_sort_key)

    @property
    def valid(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not any(p.is_error for p in self.problems)

    def codes(self) -> set[str]:
        """The distinct codes found, handy in tests and self-check cells."""
        return {p.code for p in self.problems}

    def raise_if_invalid(self) -> None:
        """Stop before training on a broken file, with the whole report as the message."""
        if not self.valid:
            raise InvalidDataError(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
            "stats": self.stats,
        }

    def to_json(self, indent: int | None = None) -> str:
        # ensure_ascii keeps odd characters from the data (lone surrogates) printable anywhere.
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=True)

    def summary(self) -> str:
        verdict = "valid" if self.valid else "INVALID"
        return (
            f"{self.name}: {verdict} ({_count(len(self.errors), 'error')}, "
            f"{_count(len(self.warnings), 'warning')})"
        )

    def format_text(self) -> str:
        """A terminal table: line, code, message for errors then warnings; then the statistics."""
        stats = format_stats_text(self.stats)
        return "\n".join([self.summary(), *self._problem_tables(), "", stats])

    def _problem_tables(self) -> list[str]:
        parts = []
        for title, problems in (("Errors", self.errors), ("Warnings", self.warnings)):
            if problems:
                parts += ["", f"{title}:", _text_table(problems)]
        return parts

    def __str__(self) -> str:
        return self.format_text()

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.valid else "#cf222e"
        verdict = "valid" if self.valid else "invalid"
        out = [
            '<div class="ftlab-validation">',
            f'<p><b>{html.escape(self.name)}</b>: <b style="color:{colour}">{verdict}</b>'
            f" ({_count(len(self.errors), 'error')}, {_count(len(self.warnings), 'warning')})</p>",
        ]
        problems = self.errors + self.warnings
        if problems:
            out.append(
                "<table><thead><tr><th>line</th><th>level</th><th>code</th>"
                '<th style="text-align:left">message</th></tr></thead><tbody>'
            )
            for problem in problems[:HTML_ROW_LIMIT]:
                level = "error" if problem.is_error else "warning"
                tint = "#cf222e" if problem.is_error else "#9a6700"
                out.append(
                    f"<tr><td>{html.escape(_line_cell(problem))}</td>"
                    f'<td style="color:{tint}">{level}</td>'
                    f"<td><code>{html.escape(problem.code)}</code></td>"
                    f'<td style="text-align:left">{html.escape(_message_cell(problem))}</td></tr>'
                )
            out.append("</tbody></table>")
            if len(problems) > HTML_ROW_LIMIT:
                more = len(problems) - HTML_ROW_LIMIT
                out.append(f"<p>... and {more} more (see <code>report.problems</code>)</p>")
        out.append(f"<pre>{html.escape(format_stats_text(self.stats))}</pre>")
        out.append("</div>")
        return "\n".join(out)


class InvalidDataError(ValueError):
    """A data file failed validation; `.report` holds the details."""

    def __init__(self, report: ValidationReport):
        self.report = report
        # The problems only: the statistics (OpenAI's epochs and price) are for `ftlab validate`.
        details = "\n".join(report._problem_tables())
        super().__init__(f"{report.summary()}; fix the errors below before training.\n{details}")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _line_cell(problem: Problem) -> str:
    return "-" if problem.line is None else str(problem.line)


def _message_cell(problem: Problem) -> str:
    if problem.message_index is None:
        return problem.message
    return f"messages[{problem.message_index}]: {problem.message}"


def _text_table(problems: list[Problem]) -> str:
    code_width = max(4, *(len(p.code) for p in problems))
    line_width = max(4, *(len(_line_cell(p)) for p in problems))
    rows = [f"  {'line':>{line_width}}  {'code':<{code_width}}  message"]
    for p in problems:
        rows.append(f"  {_line_cell(p):>{line_width}}  {p.code:<{code_width}}  {_message_cell(p)}")
    return "\n".join(rows)


def _fmt_number(value: float | int) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _counted_with(stats: dict[str, Any]) -> str:
    """Whose tokenizer counted the tokens, and whether with its chat template: examples the
    template cannot render are counted as plain text (`template_fallbacks`)."""
    name, plain = stats["tokenizer"], stats.get("template_fallbacks") or 0
    if not plain:
        return f"; tokens counted with {name}'s tokenizer and chat template"
    if plain >= stats["n_examples"]:
        return (
            f"; tokens counted with {name}'s tokenizer as plain text, NOT with its chat "
            "template, which cannot render these examples (see the template_error warning)"
        )
    return (
        f"; tokens counted with {name}'s tokenizer and chat template, except "
        f"{counted(plain, 'example')} counted as plain text, which the template cannot render "
        "(see the "
        "template_error warnings)"
    )


def format_stats_text(stats: dict[str, Any]) -> str:
    """The statistics block of the terminal report."""
    if not stats:
        return "Statistics: none"
    lines = [
        f"Statistics: {counted(stats['n_examples'], 'example')} passed of "
        f"{counted(stats['n_lines'], 'non-blank line')}"
    ]
    if stats.get("tokenizer"):
        lines[0] += _counted_with(stats)
    rows = [("messages per example", stats.get("messages_per_example"))]
    rows += [
        ("tokens per example", stats.get("tokens_per_example")),
        ("assistant tokens per example", stats.get("assistant_tokens_per_example")),
    ]
    columns = ("min", "mean", "median", "p95", "max")
    if any(summary for _, summary in rows):
        lines.append(f"  {'':<30}" + "".join(f" {c:>9}" for c in columns))
        for label, summary in rows:
            if summary:  # a space before each cell: 100,000 and up fill all 9 characters
                cells = "".join(f" {_fmt_number(summary[c]):>9}" for c in columns)
                lines.append(f"  {label:<30}{cells}")
    if stats.get("total_tokens") is not None:
        lines.append(f"  {'total training tokens':<30}{stats['total_tokens']:>9,}")
    if stats.get("context_tokens"):
        given = stats.get("context_source") == "given"
        label = "token limit (--max-tokens)" if given else "model context (tokens)"
        lines.append(f"  {label:<30}{stats['context_tokens']:>9,}")
        longest = (stats.get("tokens_per_example") or {}).get("max", 0)
        if longest > stats["context_tokens"] and not given:
            lines.append("  (the total counts each too_long example only up to that limit)")
    if stats.get("over_train_max_length"):
        count, limit = stats["over_train_max_length"], stats["train_max_length"]
        lines.append(
            f"  ({counted(count, 'example')} {is_are(count)} longer than {limit:,} tokens: "
            "`ftlab train` refuses "
            "them unless given --max-length; see the over_train_max_length warnings)"
        )
    if stats.get("epochs") is not None:
        lines.append(f"  {'epochs':<30}{stats['epochs']:>9}  ({stats['epochs_rule']})")
    if stats.get("billed_tokens") is not None:
        lines.append(f"  {'billed tokens':<30}{stats['billed_tokens']:>9,}")
    if stats.get("estimated_cost") is not None:
        currency = stats.get("currency", "USD")
        cost = stats["estimated_cost"]
        shown = f"{cost:,.2f}" if cost >= 1 or cost == 0 else f"{cost:.4f}"
        lines.append(
            f"  {'estimated cost':<30}{shown:>9}  {currency} at "
            f"{stats['price_per_million']:g} per million tokens ({stats['price_source']})"
        )
        lines.append(
            f"  (tokens counted with {stats['tokenizer']}'s tokenizer; the provider's own "
            "tokenizer counts a little differently, so the cost is an estimate)"
        )
    elif stats.get("billed_tokens") is not None:
        lines.append(
            "  (no price given: give a price per million tokens, or a model name from "
            "data/prices.json, for a cost estimate)"
        )
    if not stats.get("tokenizer"):
        lines.append("  (token statistics were not computed)")
    return "\n".join(lines)
