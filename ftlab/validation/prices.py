"""The dated table of fine-tuning prices (`data/prices.json`), and reading a price argument.

Prices are data, not code: they change, so the table carries the date they were
copied and where to check them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ftlab.paths import data_dir


class PriceError(ValueError):
    """A price argument that is neither a number nor a model in the table, or a broken table."""


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    source: str
    currency: str
    training_per_million_tokens: dict[str, float]
    note: str
    path: Path

    def price(self, model: str) -> float:
        """The training price per million tokens of a model in the table."""
        try:
            return self.training_per_million_tokens[model]
        except KeyError:
            known = ", ".join(sorted(self.training_per_million_tokens))
            raise PriceError(
                f"no price for {model!r} in {self.path} (prices as of {self.as_of}); "
                f"use one of {known}, or give the price per million tokens as a number"
            ) from None


def price_table_path() -> Path:
    return data_dir() / "prices.json"


@lru_cache(maxsize=4)
def _load(path: Path) -> PriceTable:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        prices = {str(k): float(v) for k, v in raw["training_per_million_tokens"].items()}
        return PriceTable(
            str(raw["as_of"]),
            str(raw["source"]),
            str(raw["currency"]),
            prices,
            str(raw.get("note", "")),
            path,
        )
    except OSError as error:
        raise PriceError(f"cannot read the price table {path}: {error.strerror}") from error
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise PriceError(
            f"the price table {path} is malformed ({error!r}); it needs as_of, source, currency "
            "and training_per_million_tokens {model: number}"
        ) from error


def price_table(path: str | Path | None = None) -> PriceTable:
    """The price table (`data/prices.json` unless a path is given)."""
    return _load(Path(path) if path is not None else price_table_path())


@dataclass(frozen=True)
class Price:
    """A resolved price: the number and where it came from (for the report)."""

    per_million: float
    currency: str
    source: str


def resolve_price(value: float | int | str) -> Price:
    """A price per million tokens given as a number (`5`, `"5.00"`) or a model name in the table."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            table = price_table()
            return Price(
                table.price(value.strip()),
                table.currency,
                f"{value.strip()}, prices as of {table.as_of}",
            )
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceError(
            f"price per million tokens must be a number or a model name, not {value!r}"
        )
    else:
        number = float(value)
    if not math.isfinite(number) or number < 0:
        raise PriceError(f"price per million tokens must be a number >= 0, not {value!r}")
    try:
        currency = price_table().currency
    except PriceError:
        currency = "USD"  # a price given as a number does not need the table
    return Price(number, currency, "price given")
