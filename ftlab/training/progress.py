"""Progress display callbacks: a progress bar for the terminal, a live loss plot for notebooks."""

from __future__ import annotations

import time

from ftlab.training.events import TrainEvent
from ftlab.training.plots import loss_image


class ProgressBar:
    """A tqdm progress bar showing the loss; prints validation results and checkpoints.

    With adapters on the top layers only, a first bar counts the tokens that the frozen
    layers run once before training starts.

    Pass an instance as `train(config, callback=ProgressBar())`. With
    `per_epoch_lines=False` the bar is all it shows: the last validation loss joins the
    bar's loss, so a sweep of many short epochs does not print two lines per epoch.
    """

    def __init__(self, notebook: bool = False, per_epoch_lines: bool = True) -> None:
        self.notebook = notebook
        self.per_epoch_lines = per_epoch_lines
        self.bar = None
        self.rows: list[dict] = []
        self.postfix: dict[str, str] = {}

    def _tqdm(self):
        if self.notebook:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        return tqdm

    def message(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "prepare":
            if self.bar is None:
                self.bar = self._tqdm()(
                    total=event.to_prepare,
                    unit="token",
                    unit_scale=True,
                    desc="frozen layers, once",
                    dynamic_ncols=True,
                )
            self.bar.update(event.prepared - self.bar.n)
        elif event.kind == "start":
            if self.bar is not None:  # the frozen layers' bar
                self.bar.close()
            self.postfix = {}
            self.bar = self._tqdm()(
                total=event.total_steps,
                initial=event.step,
                unit="step",
                desc="training",
                dynamic_ncols=True,
            )
            if 0 < event.step == event.total_steps:
                self.message(
                    "This run had already finished all its steps: nothing to train. Its "
                    "losses are in the run's metrics.jsonl and loss.png."
                )
            elif 0 < event.step < event.total_steps:
                self.message(
                    f"Resumed from the checkpoint at step {event.step} of {event.total_steps} "
                    f"(epoch {event.epoch:.0f}); the losses of the earlier steps are in the run's "
                    "metrics.jsonl, so the plot starts here."
                )
        elif event.kind == "step" and self.bar is not None:
            self.rows.append({"step": event.step, "train_loss": event.train_loss})
            self.bar.update(event.step - self.bar.n)
            self.postfix.update(loss=f"{event.train_loss:.4f}", lr=f"{event.learning_rate:.1e}")
            self.bar.set_postfix(self.postfix)
        elif event.kind == "eval":
            self.rows.append({"step": event.step, "valid_loss": event.valid_loss})
            if self.per_epoch_lines:
                self.message(
                    f"epoch {event.epoch:.2f}: validation loss {event.valid_loss:.4f}, "
                    f"token accuracy {event.valid_mean_token_accuracy:.3f}"
                )
            elif self.bar is not None:
                self.postfix["valid_loss"] = f"{event.valid_loss:.4f}"
                self.bar.set_postfix(self.postfix)
        elif event.kind == "checkpoint" and self.per_epoch_lines:
            self.message(f"checkpoint saved: {event.checkpoint_dir}")
        elif event.kind == "end" and self.bar is not None:
            self.bar.close()
            self.bar = None


class LiveLossPlot(ProgressBar):
    """A notebook callback: a progress bar plus a loss plot redrawn as training goes.

    `train(config, callback=LiveLossPlot())`. The plot is one PNG output that
    is updated in place (at most every `every_s` seconds), so it works in
    JupyterLab, in a headless run (nbval) and in saved notebooks alike.
    """

    def __init__(self, every_s: float = 2.0) -> None:
        super().__init__(notebook=True)
        self.every_s = every_s
        self.handle = None
        self.drawn_at = 0.0

    def draw(self) -> None:
        from IPython.display import display

        image = loss_image(self.rows)
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self.drawn_at = time.monotonic()

    def __call__(self, event: TrainEvent) -> None:
        super().__call__(event)
        due = time.monotonic() - self.drawn_at >= self.every_s
        if event.kind in ("eval", "end") or (event.kind == "step" and due):
            if self.rows:  # a finished run, reported again, has nothing new to plot
                self.draw()
