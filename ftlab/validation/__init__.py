"""Check a fine-tuning data file before training: every problem, with its line and a fix.

    from ftlab.validation import validate_file
    report = validate_file("data/support/train.jsonl", price_per_million="gpt-4.1-mini-2025-04-14")
    report            # a table in Jupyter; print(report) in a terminal
    report.valid      # False if any error
    report.examples   # the parsed examples that passed, ready for training

The same checks run as `ftlab validate FILE`. The codes and what each means:
`ftlab.validation.codes`; broken files that show the common errors: `data/broken/`.
"""

from ftlab.validation.checker import (
    UnreadableFileError,
    read_bytes,
    validate_bytes,
    validate_file,
)
from ftlab.validation.codes import (
    ERROR_CODES,
    MIN_EXAMPLES,
    WARNING_CODES,
)
from ftlab.validation.prices import Price, PriceError, PriceTable, price_table, resolve_price
from ftlab.validation.report import InvalidDataError, Problem, ValidationReport
from ftlab.validation.rules import normalise
from ftlab.validation.stats import auto_epochs, cached_tokenizer, count_tokens

__all__ = [
    "ERROR_CODES",
    "MIN_EXAMPLES",
    "WARNING_CODES",
    "InvalidDataError",
    "Price",
    "PriceError",
    "PriceTable",
    "Problem",
    "UnreadableFileError",
    "ValidationReport",
    "auto_epochs",
    "cached_tokenizer",
    "count_tokens",
    "normalise",
    "price_table",
    "read_bytes",
    "resolve_price",
    "validate_bytes",
    "validate_file",
]
