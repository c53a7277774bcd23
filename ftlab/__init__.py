"""ftlab: the package behind the fine-tuning course.

The notebooks, labs, command line (`ftlab ...`) and local fine-tuning server all
import from here, so no logic is pasted between notebooks. The main steps, for your
own project:

    from ftlab import TrainConfig, evaluate, load_model, train, validate_file

    report = validate_file("train.jsonl")          # problems by line, token statistics
    result = train(TrainConfig(data="train.jsonl", valid="valid.jsonl", out="runs/mine"))
    evaluation = evaluate("runs/mine", "test.jsonl")  # .scores and .predictions
    model, tokenizer = load_model("runs/mine")      # the adapter merged into its base model

They are loaded on first use, so `import ftlab` stays quick.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# `datasets.load_dataset` pings the hub to count a download, even of a local file (notebook
# 02): not from an offline course, where each ping waits for the network. Set before datasets
# is imported (it reads the variable once); a value of the user's own is kept.
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")

_HOMES = {
    "TrainConfig": "ftlab.training",
    "train": "ftlab.training",
    "evaluate": "ftlab.evaluation",
    "load_model": "ftlab.models",
    "validate_file": "ftlab.validation",
    "chat": "ftlab.generation",
    "generate_batch": "ftlab.generation",
    "load_examples": "ftlab.support",
    "write_jsonl": "ftlab.jsonl",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'ftlab' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
