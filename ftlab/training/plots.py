"""The loss plot: one drawing function for the saved PNG and the live notebook plot."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics log; a line cut short by a crash is skipped."""
    path, rows = Path(path), []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def loss_figure(rows: Iterable[dict], title: str = "LoRA training") -> Figure:
    """Training loss per step, and validation loss per epoch where there is one.

    Built on a bare `Figure` (no pyplot), so it works headless and leaves no
    global figure state behind in notebooks.
    """
    rows = list(rows)
    train = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    valid = [(r["step"], r["valid_loss"]) for r in rows if r.get("valid_loss") is not None]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", color="tab:blue", lw=1)
    if valid:
        axes.plot(*zip(*valid, strict=True), "o-", label="validation loss", color="tab:orange")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (answer tokens)")
    axes.set_title(title)
    if train or valid:
        axes.set_yscale("log")
        axes.legend()
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return figure


def loss_png(rows: Iterable[dict], title: str = "LoRA training") -> bytes:
    """The loss plot as PNG bytes."""
    buffer = io.BytesIO()
    loss_figure(rows, title).savefig(buffer, format="png")
    return buffer.getvalue()


def loss_image(rows: Iterable[dict], title: str = "LoRA training") -> Any:
    """The loss plot as an image a notebook shows with `display` (a bare `Figure` shows only
    as text, since it is not attached to pyplot)."""
    from IPython.display import Image

    return Image(data=loss_png(rows, title), format="png")


def save_loss_plot(rows: Iterable[dict], path: str | Path) -> Path:
    """Write the loss plot PNG atomically (a crash never leaves half an image)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_bytes(loss_png(rows))
    partial.replace(path)
    return path
