"""Side-by-side: `ftlab train` against a plain TRL SFTTrainer + PEFT LoRA run.

    make bench                                  # the full comparison (several minutes)
    .venv/bin/python bench/train_speed.py --train-limit 48 --epochs 1   # a quick look

Both train on the same file for the same epochs with the same LoRA adapters
(rank 16, alpha 32, every linear layer: `lora_settings` of the same TrainConfig);
everything else is each side's default, which is the point: TRL's defaults
(loss on every token, lr 2e-5, padding to the longest in a random batch)
against ftlab's recipe. Each side
runs in its own fresh process, so peak memory is its own; then each model is
scored on the test split with the same greedy evaluation. A third run times
ftlab with LoRA on the top layers only (`--top-layers`, default 15), the
course's faster option.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

from ftlab.paths import support_split

LORA = {"rank": 16, "alpha": 32}


def example_tokens(path: str, epochs: int) -> int:
    """Tokens both sides process: every example's full chat-template length, once per epoch."""
    from ftlab.models import load_tokenizer
    from ftlab.support import load_examples

    tokenizer = load_tokenizer()
    texts = [
        tokenizer.apply_chat_template(e["messages"], tokenize=False) for e in load_examples(path)
    ]
    return epochs * sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_ftlab(data: str, test: str, epochs: int, out: str, adapted_layers: int | None) -> dict:
    from ftlab.evaluation import evaluate
    from ftlab.training import TrainConfig, train

    start = time.perf_counter()
    result = train(
        TrainConfig(
            data=data,
            out=out,
            epochs=epochs,
            rank=LORA["rank"],
            alpha=LORA["alpha"],
            adapted_layers=adapted_layers,
        )
    )
    seconds = time.perf_counter() - start
    scores = evaluate(result.adapter_dir, test).scores
    return {
        "seconds": seconds,
        "peak_mib": peak_rss_mib(),
        "exact": scores.exact,
        "json_valid": scores.json_valid,
    }


def run_trl(data: str, test: str, epochs: int, out: str, adapted_layers: None = None) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ftlab.evaluation import evaluate
    from ftlab.models import load_model, sensible_threads
    from ftlab.support import load_examples
    from ftlab.training import TrainConfig
    from ftlab.training.loop import lora_settings

    torch.set_num_threads(sensible_threads())  # the same thread rule as ftlab's side
    model, tokenizer = load_model()
    dataset = Dataset.from_list([{"messages": e["messages"]} for e in load_examples(data)])
    on_cpu = model.device.type == "cpu"
    args = SFTConfig(
        output_dir=out,
        num_train_epochs=epochs,
        use_cpu=on_cpu,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    # The same adapters as ftlab's side: rank, alpha and layers (TrainConfig's defaults).
    lora = lora_settings(model, TrainConfig(data=data, out=out, **LORA))
    start = time.perf_counter()
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
    )
    trainer.train()
    seconds = time.perf_counter() - start
    merged = trainer.model.merge_and_unload().eval()
    tokenizer.padding_side = "left"
    scores = evaluate((merged, tokenizer), test).scores
    return {
        "seconds": seconds,
        "peak_mib": peak_rss_mib(),
        "exact": scores.exact,
        "json_valid": scores.json_valid,
    }


def shown(path: str) -> str:
    """`path` relative to the working folder when inside it (shorter, same on every machine)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _child(name: str, arguments: tuple, queue) -> None:
    queue.put({"ftlab": run_ftlab, "trl": run_trl}[name.split()[0]](*arguments))


def in_fresh_process(name: str, *arguments) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, arguments, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"the {name} run failed (exit code {process.exitcode}); see above")
    return queue.get()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(support_split("train")))
    parser.add_argument("--test", default=str(support_split("test")))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, help="train on the first N examples only")
    parser.add_argument("--test-limit", type=int, help="score the first N test examples only")
    parser.add_argument(
        "--top-layers",
        type=int,
        default=15,
        help="also time ftlab with LoRA on the top N layers only (adapted_layers; 0: skip)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="train into DIR (new or empty) and keep it, to score the adapters later",
    )
    args = parser.parse_args(argv)
    if args.keep:
        keep = Path(args.keep)
        if keep.exists() and not keep.is_dir():
            parser.error(f"--keep {args.keep}: that is a file; name a new or empty folder")
        if keep.exists() and any(keep.iterdir()):
            parser.error(f"--keep {args.keep}: the folder is not empty; name a new one")
        keep.mkdir(parents=True, exist_ok=True)
    folder_for_runs = (
        contextlib.nullcontext(args.keep)
        if args.keep
        else tempfile.TemporaryDirectory(prefix="ftlab-bench-")
    )
    with folder_for_runs as scratch:
        data = args.data
        if args.train_limit:
            lines = Path(data).read_text().splitlines(keepends=True)[: args.train_limit]
            data = str(Path(scratch) / "train.jsonl")
            Path(data).write_text("".join(lines))
        test = args.test
        if args.test_limit:
            lines = Path(test).read_text().splitlines(keepends=True)[: args.test_limit]
            test = str(Path(scratch) / "test.jsonl")
            Path(test).write_text("".join(lines))
        tokens = example_tokens(data, args.epochs)
        runs = {"ftlab": None, "trl": None}
        if args.top_layers:
            runs = {"ftlab": None, f"ftlab top {args.top_layers}": args.top_layers, "trl": None}
        results = {}
        for name, layers in runs.items():
            print(f"running {name} ...", file=sys.stderr, flush=True)
            folder = str(Path(scratch) / name.replace(" ", "-"))
            results[name] = in_fresh_process(name, data, test, args.epochs, folder, layers)
            results[name]["tokens_per_s"] = tokens / results[name]["seconds"]
    trained = shown(args.data) + (f", first {args.train_limit}" if args.train_limit else "")
    tested = shown(args.test) + (f", first {args.test_limit}" if args.test_limit else "")
    print(f"\n{tokens} training tokens ({args.epochs} epochs of {trained}); test: {tested}\n")
    print(f"{'':<14}{'wall s':>9}{'tokens/s':>10}{'peak MiB':>10}{'exact':>8}{'json':>7}")
    for name, r in results.items():
        print(
            f"{name:<14}{r['seconds']:>9.1f}{r['tokens_per_s']:>10.0f}{r['peak_mib']:>10.0f}"
            f"{r['exact']:>8.3f}{r['json_valid']:>7.3f}"
        )
    ratio = results["trl"]["seconds"] / results["ftlab"]["seconds"]
    print(
        f"\nftlab is {ratio:.2f}x the speed of TRL defaults "
        f"(exact {results['ftlab']['exact']:.3f} vs {results['trl']['exact']:.3f})"
    )
    if args.top_layers:
        top = results[f"ftlab top {args.top_layers}"]
        print(
            f"LoRA on the top {args.top_layers} layers only is "
            f"{results['ftlab']['seconds'] / top['seconds']:.2f}x the speed of every layer "
            f"(exact {top['exact']:.3f} vs {results['ftlab']['exact']:.3f})"
        )
    if args.json:
        print(json.dumps({"tokens": tokens, "speed_ratio": ratio, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
