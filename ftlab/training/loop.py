"""`train`: a LoRA run from a chat JSONL file to a saved adapter, resumable by epoch."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ftlab import __version__
from ftlab.files import same_file, write_text_atomically
from ftlab.jsonl import write_jsonl
from ftlab.models import (
    ModelNotFoundError,
    available_cores,
    changed_file,
    file_records,
    folder_files,
    is_adapter_dir,
    load_model,
    run_adapter,
    sensible_threads,
    store_weights_for_autocast,
    thread_override,
)
from ftlab.training.checkpoints import (
    Checkpoint,
    RunReplacement,
    check_output_folder,
    damaged,
    list_checkpoints,
    load_trainer_state,
    remove_stale_staging,
    save_adapter,
    save_checkpoint,
)
from ftlab.training.config import TrainConfig
from ftlab.training.data import (
    TokenizedExample,
    epoch_batches,
    iter_batches,
    steps_per_epoch,
    tokenize_examples,
    warn_without_reply_prompt,
)
from ftlab.training.events import TrainEvent, TrainResult
from ftlab.training.frozen import (
    MAX_STORED_BYTES,
    can_slice,
    decoder_blocks,
    first_adapted_layer,
    frozen_outputs,
    stored_bytes,
)
from ftlab.training.loss import backward_in_parts, batch_loss
from ftlab.training.plots import read_metrics, save_loss_plot
from ftlab.training.run_lock import RunFolderBusyError, RunFolderLock, busy_message
from ftlab.validation import InvalidDataError, validate_file

Callback = Callable[[TrainEvent], None]
# Said when a new run stops before it has saved anything, in the folder of an earlier one.
KEPT_EARLIER_RUN = "The earlier run in {out} is back as it was: this run stopped before saving."


def check_data(path: str, validation: bool = False) -> list[dict]:
    """Run the course's data checker on `path`; return its examples, or raise InvalidDataError
    with its report (FileNotFoundError or UnreadableFileError for a file it cannot read).

    A validation file (`validation=True`) may hold fewer examples than training needs."""
    role = "validation file (valid, --valid)" if validation else "training file (data, --data)"
    if Path(path).is_dir():
        raise FileNotFoundError(
            f"The {role} {path} is a folder. Fix: pass the path of a chat JSONL file."
        )
    if not Path(path).is_file():
        raise FileNotFoundError(f"No {role} at {path}. Fix: pass the path of a chat JSONL file.")
    report = validate_file(
        path, count_tokens=False, what="validation file" if validation else "training file"
    )
    if validation and "too_few_examples" in report.codes() and report.examples:
        report.problems = [p for p in report.problems if p.code != "too_few_examples"]
    if not report.valid:
        raise InvalidDataError(report)
    return report.examples


def check_separate_splits(config: TrainConfig) -> None:
    """Refuse a validation file that is the training file itself: its loss would measure the
    examples the model learns from, and so could never show over-fitting."""
    if same_file(config.data, config.valid):  # False for a missing file: check_data says so
        raise ValueError(
            f"The validation file {config.valid} is the training file: its loss would measure "
            "the examples the model learns from, not new ones.\nFix: pass a separate "
            "validation split (valid, --valid), or leave it out."
        )


def check_base_model(config: TrainConfig) -> None:
    """Refuse an adapter as the model to train: LoRA goes on a base model."""
    try:
        adapter = is_adapter_dir(run_adapter(config.model))
    except ModelNotFoundError:  # a training run's folder that another run is writing to now
        adapter = True
    if adapter:
        raise ValueError(
            f"{config.model} is a fine-tuned adapter (or a training run's folder); "
            "train from its base model instead."
        )


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The rate for step `step` (0-based): a linear warm-up, then a linear decay that would
    reach zero one step after the last (which takes lr / the steps after warm-up). A run of
    10 steps or fewer warms up in one step, so it starts at the full rate."""
    warmup = max(1, math.ceil(config.warmup_ratio * total_steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return config.lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def decoder_linear_names(blocks: torch.nn.Module) -> list[str]:
    """Names of the linear layers inside the decoder blocks (what "all-linear" adapts;
    GPT-2's are transformers' Conv1D, linear layers stored transposed)."""
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in blocks.named_modules()
            if isinstance(module, torch.nn.Linear | Conv1D)
        }
    )


def adapted_layer_indices(
    base, blocks: torch.nn.ModuleList | None, config: TrainConfig
) -> list[int] | None:
    """The decoder layers that get adapters: the top `config.adapted_layers` (None: all);
    `blocks` are the base model's decoder layers (`decoder_blocks`), None if none were found."""
    if config.adapted_layers is None:
        return None
    if blocks is None:
        raise ValueError(
            f"adapted_layers={config.adapted_layers}, but ftlab cannot find the decoder layers "
            f"of {config.model} (a {base.config.model_type} model) to choose the top ones.\n"
            "Fix: adapt every layer: leave adapted_layers out (None), or pass "
            "`--adapted-layers all` to ftlab train."
        )
    count = len(blocks)
    if config.adapted_layers == count:
        return None
    if config.adapted_layers > count:
        raise ValueError(
            f"adapted_layers={config.adapted_layers}, but {config.model} has only {count} "
            f"decoder layers.\nFix: pass a number from 1 to {count}, or None for every layer."
        )
    return list(range(count - config.adapted_layers, count))


def lora_settings(base, config: TrainConfig):
    """The PEFT `LoraConfig` for `config` on this base model (which layers, rank, alpha)."""
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    blocks = decoder_blocks(base)
    layers = adapted_layer_indices(base, blocks, config)
    targets, pattern = config.target_modules, None
    if layers is not None:
        # PEFT finds a module's layer number after this name (`h` in GPT-2's `transformer.h.3`).
        pattern = next(name for name, module in base.named_modules() if module is blocks)
        pattern = pattern.rsplit(".", 1)[-1]
        pattern = None if pattern == "layers" else pattern  # PEFT's own guess: as before
        if targets == "all-linear":  # PEFT needs the names with a layer list
            targets = decoder_linear_names(blocks)
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        layers_pattern=pattern,
        # GPT-2's layers (Conv1D) store their weights transposed; PEFT warns unless told.
        fan_in_fan_out=any(isinstance(module, Conv1D) for module in (blocks or base).modules()),
        task_type="CAUSAL_LM",
    )


def lora_model(base, config: TrainConfig):
    """Wrap the base model with fresh LoRA adapters (initialised from `config.seed`)."""
    from peft import get_peft_model

    torch.manual_seed(config.seed)
    lora = lora_settings(base, config)
    model = get_peft_model(base, lora)
    for parameter in model.parameters():
        if parameter.requires_grad:  # float32 even if the caller loaded the base in bf16
            parameter.data = parameter.data.float()
    return model


def training_model(config: TrainConfig, bf16_frozen: bool = True):
    """The base model wrapped with fresh LoRA adapters, set up for training; with its tokenizer.

    On a CPU it also picks the thread count and eager attention (measured faster
    than SDPA for training there). `bf16_frozen=False` keeps the frozen weights in
    float32 (for comparing the two in bench/step_profile.py).
    """
    base, tokenizer = load_model(config.model)
    if base.device.type == "cpu":
        torch.set_num_threads(sensible_threads())
        base.set_attn_implementation("eager")
    model = lora_model(base, config)
    if bf16_frozen:
        store_weights_for_autocast(model)
    model.train()
    return model, tokenizer


def training_rows(tokenizer, examples: list[dict], config: TrainConfig) -> list[TokenizedExample]:
    """The examples tokenized, learned tokens marked; refuses a file with none to learn."""
    rows = tokenize_examples(tokenizer, examples, config.max_length)
    if not rows:
        raise ValueError(f"{config.data} has no assistant tokens to learn (all weight 0?).")
    warn_without_reply_prompt(tokenizer)
    return rows


def run_length(config: TrainConfig, examples: int) -> tuple[int, int, int]:
    """(steps per epoch, total steps, epochs begun) of a run on `examples` examples;
    `max_steps` can end it before its last epoch."""
    per_epoch = steps_per_epoch(examples, config.batch_size)
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return per_epoch, total, math.ceil(total / per_epoch)


def new_optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable (LoRA) weights only."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)


def stores_frozen_outputs(base, rows: list[TokenizedExample], first_adapted: int) -> bool:
    """Whether training computes the frozen layers' outputs once (training.frozen) and starts
    every step from them: only with frozen layers, a sliceable model and room to store them."""
    return bool(first_adapted) and can_slice(base) and stored_bytes(base, rows) <= MAX_STORED_BYTES


class NonFiniteLossError(ValueError):
    """A step's loss or gradients were not finite numbers (inf or NaN): the update was refused."""


def _non_finite(what: str, value: float, step: int | None, lr: float) -> NonFiniteLossError:
    where = f"at step {step}" if step is not None else "in this step"
    return NonFiniteLossError(
        f"Training stopped {where}: the {what} became {value} (not a finite number), so the "
        "step's update was not applied (it would have ruined the adapter). The most likely "
        f"cause is a learning rate (lr {lr:g}) too high for this data and these settings.\n"
        f"Fix: start the run again with a lower learning rate, for example {lr / 3:.2g} (--lr "
        "for ftlab train, lr= in Python, a smaller learning_rate_multiplier for a fine-tuning "
        "job). Epoch checkpoints saved before this step are unharmed."
    )


def take_step(
    model,
    optimizer: torch.optim.Optimizer,
    rows: list[TokenizedExample],
    pad_id: int,
    config: TrainConfig,
    frozen: list[torch.Tensor] | None = None,
    first_adapted: int = 0,
    step: int | None = None,
) -> tuple[float, int, int]:
    """One optimizer step on one batch: backward (in parts), gradient clipping, update.

    `frozen` holds the rows' stored outputs of the layers below `first_adapted`, if any.
    Returns (mean loss, learned tokens, tokens predicted right). A loss or gradient that
    is not finite raises NonFiniteLossError (naming step number `step`) before the
    update, with the gradients cleared, so the adapter stays as it was.
    """
    base = model.get_base_model()
    result = backward_in_parts(
        base,
        rows,
        pad_id,
        base.device,
        config.micro_batch_size,
        mixed_precision=True,
        frozen=frozen,
        first_adapted=first_adapted,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    norm = float(torch.nn.utils.clip_grad_norm_(trainable, 1.0))
    if not (math.isfinite(result[0]) and math.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(result[0]):
            raise _non_finite("training loss", result[0], step, config.lr)
        raise _non_finite("gradient norm", norm, step, config.lr)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return result


@torch.no_grad()
def validation_loss(
    model, examples: list[TokenizedExample], batch_size: int, pad_id: int, device: torch.device
) -> tuple[float, float]:
    """Token-weighted mean loss and token accuracy over the learned tokens of `examples`."""
    model.eval()
    total = correct = tokens = 0
    for batch in iter_batches(examples, batch_size, pad_id):
        parts = batch_loss(model.get_base_model(), batch.to(device))
        total += parts.loss.item() * parts.tokens
        tokens += parts.tokens
        correct += parts.correct
    model.train()
    return total / tokens, correct / tokens


class _MetricsLog:
    """The JSONL metrics log: one row per logged step (and per validation), flushed at once."""

    def __init__(self, path: Path, keep_through_step: int | None) -> None:
        self.path = path
        if keep_through_step is None:
            path.unlink(missing_ok=True)
            self.rows: list[dict] = []
        else:  # a resumed run drops rows written after its checkpoint
            self.rows = [r for r in read_metrics(path) if r["step"] <= keep_through_step]
            write_jsonl(path, self.rows)

    def write(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def _write_config(config: TrainConfig, path: Path, resolved: dict) -> None:
    write_text_atomically(
        path, json.dumps({"config": config.to_dict(), "resolved": resolved}, indent=2)
    )


def recorded_threads(config_path: Path) -> int | None:
    """The CPU thread count a run's config.json records (None: none, or unreadable)."""
    try:
        threads = json.loads(config_path.read_text())["resolved"]["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    usable = isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1
    return threads if usable else None


def _last_logged(rows: list[dict], key: str) -> float | None:
    """The last value of `key` in a run's metrics rows, or None if none has it."""
    return next((r[key] for r in reversed(rows) if r.get(key) is not None), None)


class StaleRunError(ValueError):
    """A run cannot be resumed: its settings or its data files changed since it started."""


def data_fingerprints(config: TrainConfig) -> dict[str, Any]:
    """What a run records so that a resume notices a change: the data's SHA-256 (edited data)
    and the files of a local base model folder (another model put in the same folder)."""
    return {**data_digests(config), "model_files": model_files(config.model)}


def data_digests(config: TrainConfig) -> dict[str, str | None]:
    """SHA-256 of the training and validation files."""

    def digest(path: str | None) -> str | None:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None

    return {"data_sha256": digest(config.data), "valid_sha256": digest(config.valid)}


def model_files(model: str) -> dict[str, dict[str, Any]] | None:
    """Size, modification time and SHA-256 of each file of a local model folder; None for a
    model name (the built-in model, a hub id)."""
    folder = Path(model).expanduser()
    return file_records(folder) if folder.is_dir() else None


def _model_change(before: dict[str, dict[str, Any]] | None, model: str) -> str | None:
    """How the base model folder differs from what a run recorded, or None. A file with the
    recorded size and modification time is trusted without hashing it again."""
    folder = Path(model).expanduser()
    if before is None:
        return None if not folder.is_dir() else "the base model is a folder now"
    if not folder.is_dir():
        return f"the base model folder {folder} is missing"
    if folder_files(folder) != sorted(before):
        return "the base model folder holds other files now"
    changed = changed_file(folder, before)
    if changed is None:
        return None
    return f"the base model folder holds another model now ({changed[0]} changed)"


def _file_change(key: str, before: str | None, now: str | None) -> str:
    role = {"data_sha256": "training data", "valid_sha256": "validation"}[key]
    if before is None:
        return f"a {role} file was added"
    if now is None:
        return f"the {role} file was left out"
    return f"the contents of the {role} file changed"


def resume_point(config: TrainConfig, out: Path) -> Checkpoint | None:
    """The checkpoint a run with `resume=True` continues from (None: it starts afresh).

    Refuses, with the reasons, a run in `out` whose settings or data differ from `config`.
    """
    if not config.resume:
        return None
    config_path = out / "config.json"
    if config_path.is_file():
        try:
            previous = TrainConfig.from_json(config_path)
            recorded = json.loads(config_path.read_text()).get("resolved", {})
        except (KeyError, TypeError, ValueError) as error:
            raise damaged(config_path, error) from error
        changed = config.differences(previous)
        for key, now in data_digests(config).items():
            if key in recorded and recorded[key] != now:
                changed.append(_file_change(key, recorded[key], now))
        if "model_files" in recorded:
            change = _model_change(recorded["model_files"], config.model)
            changed += [change] if change else []
        if changed:
            reasons = "; ".join(changed)
            # The most natural wish (train this finished run for longer) cannot be granted.
            why = (
                "A run's learning rate falls towards zero by the last step it planned, so it "
                "cannot be lengthened or shortened part-way: a run of another length starts "
                "afresh.\n"
                if any(change.startswith(("epochs:", "max_steps:")) for change in changed)
                else ""
            )
            raise StaleRunError(
                f"Cannot resume the run in {out}: its settings or data differ ({reasons}).\n"
                f"{why}Fix: resume with the same settings and data, or start a new run "
                "(without --resume / resume=False, or in another output folder)."
            )
    checkpoints = list_checkpoints(out)
    return checkpoints[-1] if checkpoints else None


def train(
    config: TrainConfig,
    callback: Callback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune `config.model` with LoRA on `config.data`; see TrainConfig for the settings.

    `callback(event)` receives start/step/eval/checkpoint/end events, and before
    "start", with adapters on the top layers only, "prepare" events while the
    frozen layers' outputs are computed once;
    `should_stop()` is polled before every step (and before every batch of that
    one-off pass), and when it returns True the run ends at once, saving nothing
    new (the last epoch checkpoint stays usable).

    A new run in the folder of an earlier one replaces it only once it has saved a
    checkpoint or its adapter: stopped, interrupted or failing before then, it puts the
    earlier run back as it was (`TrainResult.kept_earlier_run`).
    """
    lock = RunFolderLock(config.out)  # taken once the folder exists (see run_lock)
    replacement = RunReplacement(Path(config.out))
    try:
        return _train(config, callback, should_stop, replacement, lock)
    except BaseException as error:  # Ctrl-C in a notebook included
        if replacement.pending:
            replacement.undo()
            error.add_note(KEPT_EARLIER_RUN.format(out=config.out))
        raise
    finally:
        lock.release()


def _train(
    config: TrainConfig,
    callback: Callback | None,
    should_stop: Callable[[], bool] | None,
    replacement: RunReplacement,
    lock: RunFolderLock,
) -> TrainResult:
    started = time.perf_counter()
    notify = callback or (lambda event: None)
    stop = should_stop or (lambda: False)
    out = Path(config.out)
    check_base_model(config)
    check_output_folder(out)
    train_examples = check_data(config.data)
    check_separate_splits(config)
    valid_examples = check_data(config.valid, validation=True) if config.valid else None

    existed = out.is_dir()
    if existed:
        lock.acquire()
        remove_stale_staging(out)
    resume_from = resume_point(config, out)

    model, tokenizer = training_model(config)
    # Adapters record their base model; a local folder is recorded absolute, to work from anywhere.
    base_name = str(Path(config.model).resolve()) if Path(config.model).is_dir() else config.model
    device = model.get_base_model().device
    config_path = out / "config.json"
    if resume_from is not None and device.type == "cpu" and thread_override() is None:
        # The thread count can change the last bits of the sums; keep the run's own count
        # (chosen from the load at its first start) unless this machine has fewer cores.
        threads = recorded_threads(config_path)
        if threads is not None and threads <= available_cores():
            torch.set_num_threads(threads)
    pad_id = tokenizer.pad_token_id
    rows = training_rows(tokenizer, train_examples, config)
    valid_rows = (
        tokenize_examples(tokenizer, valid_examples, config.max_length, "validation")
        if valid_examples
        else []
    )
    base = model.get_base_model()
    first_adapted = first_adapted_layer(base)
    lengths = [len(r) for r in rows]
    per_epoch, total_steps, epochs = run_length(config, len(rows))
    fingerprints = data_fingerprints(config)  # may fail to read a file: before anything goes
    out.mkdir(parents=True, exist_ok=True)  # not before: a refused run leaves no empty folder
    lock.acquire()
    if not existed and any(out.iterdir()):  # another run made the folder meanwhile
        raise RunFolderBusyError(busy_message(out))
    if resume_from is None:  # (a new run, or nothing to resume) now that all is checked
        replacement.begin()

    optimizer = new_optimizer(model, config)
    step, first_epoch, trained_tokens = 0, 1, 0
    state: dict = {}
    if resume_from is not None:
        from peft import set_peft_model_state_dict

        weights, state = load_trainer_state(resume_from)
        set_peft_model_state_dict(model, weights)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step, first_epoch = state["step"], state["epoch"] + 1
        started -= state.get("elapsed_s", 0.0)  # the time the run took up to its checkpoint
    log = _MetricsLog(out / "metrics.jsonl", resume_from.step if resume_from else None)
    # Checkpoints from before ftlab saved the count: the largest logged one (too low when
    # log_every > 1 left the checkpoint's last steps unlogged).
    trained_tokens = state.get(
        "trained_tokens", max((r.get("trained_tokens", 0) for r in log.rows), default=0)
    )
    _write_config(
        config,
        config_path,
        {
            "ftlab_version": __version__,
            "device": str(device),
            # Results repeat exactly for the same seed, data and thread count; a resumed
            # run reuses this count (see above) unless FTLAB_THREADS sets one.
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            **fingerprints,
            "examples": len(rows),
            "valid_examples": len(valid_rows),
            "steps_per_epoch": per_epoch,
            "total_steps": total_steps,
            "frozen_layers": first_adapted,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "resumed_from": str(resume_from.path) if resume_from else None,
        },
    )

    def event(kind, **values) -> TrainEvent:
        done = values.pop("epoch", None)
        made = TrainEvent(
            kind=kind,
            step=step,
            total_steps=total_steps,
            epoch=done if done is not None else step / per_epoch,
            trained_tokens=trained_tokens,
            elapsed_s=time.perf_counter() - started,
            **values,
        )
        notify(made)
        return made

    frozen = None  # the frozen layers' outputs, computed once (see training.frozen)
    stopped = False
    if step < total_steps and stores_frozen_outputs(base, rows, first_adapted):
        frozen = frozen_outputs(
            base,
            rows,
            first_adapted,
            pad_id,
            device,
            progress=lambda done, total: event("prepare", prepared=done, to_prepare=total),
            should_stop=stop,
        )
        stopped = frozen is None

    event("start")
    last_train = last_valid = None
    # Loss and accuracy logged every log_every steps are the window's means over its
    # learned tokens (one step's values would hide the steps between logs). An epoch's last
    # step is always logged, so a window never spans a checkpoint and a resumed run logs the
    # same rows as one that was never stopped.
    window_loss = window_correct = window_learned = 0.0
    for epoch in range(first_epoch, epochs + 1):
        for indices in epoch_batches(lengths, config.batch_size, config.seed, epoch):
            if step >= total_steps:
                break
            if stopped or stop():
                stopped = True
                break
            lr = learning_rate(config, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch_rows = [rows[i] for i in indices]
            states = [frozen[i] for i in indices] if frozen is not None else None
            last_train, learned, correct = take_step(
                model, optimizer, batch_rows, pad_id, config, states, first_adapted, step=step + 1
            )
            step += 1
            trained_tokens += sum(len(row) for row in batch_rows)
            window_loss += last_train * learned
            window_correct += correct
            window_learned += learned
            if step % config.log_every == 0 or step % per_epoch == 0 or step == total_steps:
                loss = last_train = window_loss / window_learned  # the result reports it too
                accuracy = window_correct / window_learned
                window_loss = window_correct = window_learned = 0.0
                done = event(
                    "step",
                    train_loss=loss,
                    train_mean_token_accuracy=accuracy,
                    learning_rate=lr,
                )
                log.write(
                    {
                        "kind": "train",
                        "step": step,
                        "epoch": done.epoch,
                        "train_loss": loss,
                        "train_mean_token_accuracy": accuracy,
                        "learning_rate": lr,
                        "trained_tokens": trained_tokens,
                        "elapsed_s": done.elapsed_s,
                    }
                )
        if stopped:
            break
        if valid_rows:
            last_valid, valid_accuracy = validation_loss(
                model, valid_rows, config.batch_size * 2, pad_id, device
            )
            done = event(
                "eval",
                epoch=step / per_epoch,
                valid_loss=last_valid,
                valid_mean_token_accuracy=valid_accuracy,
            )
            log.write(
                {
                    "kind": "eval",
                    "step": step,
                    "epoch": done.epoch,
                    "valid_loss": last_valid,
                    "valid_mean_token_accuracy": valid_accuracy,
                    "trained_tokens": trained_tokens,
                    "elapsed_s": done.elapsed_s,
                }
            )
        if step % per_epoch == 0:  # a whole epoch: checkpoint it
            progress = {
                "trained_tokens": trained_tokens,
                "elapsed_s": time.perf_counter() - started,
            }
            folder = save_checkpoint(
                model,
                optimizer,
                out / "checkpoints" / f"epoch-{epoch}",
                base_name,
                step,
                epoch,
                progress,
            )
            replacement.commit()
            save_loss_plot(log.rows, out / "loss.png")
            event("checkpoint", epoch=float(epoch), checkpoint_dir=folder)

    kept_earlier_run = stopped and replacement.pending
    if kept_earlier_run:  # stopped before saving anything: the earlier run goes back
        replacement.undo()
    checkpoints = (
        [] if kept_earlier_run else [(c.step, c.epoch, c.path) for c in list_checkpoints(out)]
    )
    if stopped:
        adapter_dir = checkpoints[-1][2] if checkpoints else None
    else:
        adapter_dir = save_adapter(model, out / "adapter", base_name, {"step": step})
        replacement.commit()
    plot_path = out / "loss.png" if kept_earlier_run else save_loss_plot(log.rows, out / "loss.png")
    if last_train is None:  # resumed a finished run: report its logged losses
        last_train = _last_logged(log.rows, "train_loss")
        last_valid = _last_logged(log.rows, "valid_loss")
    event("end", train_loss=last_train, valid_loss=last_valid)
    return TrainResult(
        adapter_dir=adapter_dir,
        checkpoints=checkpoints,
        metrics_path=log.path,
        config_path=config_path,
        plot_path=plot_path,
        trained_tokens=trained_tokens,
        total_steps=total_steps,
        final_train_loss=last_train,
        final_valid_loss=last_valid,
        stopped=stopped,
        elapsed_s=time.perf_counter() - started,
        kept_earlier_run=kept_earlier_run,
    )
