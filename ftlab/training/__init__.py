"""Local LoRA fine-tuning: one implementation for the command line, notebooks and the server.

from ftlab.training import TrainConfig, train
result = train(TrainConfig(data="train.jsonl", out="runs/x"), callback=LiveLossPlot())
"""

from ftlab.training.config import TrainConfig
from ftlab.training.events import TrainEvent, TrainResult
from ftlab.training.loop import NonFiniteLossError, StaleRunError, train
from ftlab.training.progress import LiveLossPlot, ProgressBar
from ftlab.validation import InvalidDataError

__all__ = [
    "InvalidDataError",
    "LiveLossPlot",
    "NonFiniteLossError",
    "ProgressBar",
    "StaleRunError",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "train",
]
