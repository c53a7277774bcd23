"""Where a training step's time goes, and how far the default run is from the CPU's limit.

    make profile                                   # = .venv/bin/python bench/step_profile.py
    .venv/bin/python bench/step_profile.py --steps 4   # a quicker look

In one run it measures, on the shipped training data:

1. the CPU's bf16 (or float32) matrix-product speed on one large product: the
   ceiling no training step can beat;
2. the same training steps twice, from the same start: with the frozen base
   weights kept in float32 (autocast casts them on every call) and stored in
   bf16 once (what `ftlab train` does), as seconds per step and a ratio;
3. a profile of ftlab's steps: the share of time in matrix products (and the
   speed they reach) against casts, element-wise work and the rest;
4. the floor for a whole default run: the tokens it computes x the FLOPs per
   token / the ceiling from (1), next to what the measured steps imply.
"""

from __future__ import annotations

import argparse
import time

import torch

from ftlab.models import compute_dtype, load_model, load_tokenizer, sensible_threads
from ftlab.paths import support_split
from ftlab.training import TrainConfig
from ftlab.training.data import epoch_batches, tokenize_examples
from ftlab.training.estimate import batch_tokens, run_batches
from ftlab.training.loop import check_data, new_optimizer, take_step, training_model

MATRIX_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::matmul"}
COPY_OPS = {"aten::copy_", "aten::_to_copy", "aten::to"}


def matrix_speed(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of one large square matrix product in `dtype` (the best of `repeats`)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def flops_per_token(model) -> tuple[int, int]:
    """FLOPs per computed token (decoder layers) and per learned token (output layer).

    Forward costs 2 FLOPs per weight; backward 2 more for the input gradients
    (the frozen weights get no gradient). Logits are computed only where labels are.
    """
    layers = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and p.ndim == 2)
    return 4 * layers, 4 * model.get_output_embeddings().weight.numel()


def run_tokens(rows, config: TrainConfig) -> tuple[int, int]:
    """(computed, learned) tokens of a whole run with `config`'s batches and epochs."""
    batches = [
        [rows[i] for i in indices] for indices in run_batches([len(r) for r in rows], config)
    ]
    learned = sum(row.trained_tokens for batch in batches for row in batch)
    return sum(map(batch_tokens, batches)), learned


def trainer(config: TrainConfig, bf16_frozen: bool):
    """A fresh LoRA model (as `train` sets it up on a CPU) and a function running one step."""
    model, _ = training_model(config, bf16_frozen)
    optimizer = new_optimizer(model, config)

    def step(rows) -> float:
        start = time.perf_counter()
        take_step(model, optimizer, rows, 0, config)
        return time.perf_counter() - start

    return step


def compare_steps(config: TrainConfig, batches) -> tuple[float, float]:
    """Seconds per step with float32 and with bf16 frozen weights, over the same batches.

    The two variants take turns step by step (and alternate which goes first),
    so a change in the machine's load affects both alike. Two warm-up steps each.
    """
    plain, fast = trainer(config, bf16_frozen=False), trainer(config, bf16_frozen=True)
    totals = {plain: 0.0, fast: 0.0}
    for index, rows in enumerate(batches):
        for step in (plain, fast) if index % 2 else (fast, plain):
            seconds = step(rows)
            if index >= 2:
                totals[step] += seconds
    return totals[plain] / len(batches[2:]), totals[fast] / len(batches[2:])


def time_shares(profile) -> dict[str, float]:
    """Self CPU time (s) of matrix products, casts/copies and everything else in `profile`."""
    shares = {"matrix products": 0.0, "dtype casts and copies": 0.0, "everything else": 0.0}
    for event in profile.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        if event.key in MATRIX_OPS:
            shares["matrix products"] += seconds
        elif event.key in COPY_OPS:
            shares["dtype casts and copies"] += seconds
        else:
            shares["everything else"] += seconds
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(support_split("train")))
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    args = parser.parse_args(argv)
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(sensible_threads())
    config = TrainConfig(data=args.data, out="unused")
    dtype = compute_dtype(torch.device("cpu"))
    tokenizer = load_tokenizer(config.model)
    rows = tokenize_examples(tokenizer, check_data(args.data))
    order = epoch_batches([len(r) for r in rows], config.batch_size, config.seed, 1)
    batches = [[rows[i] for i in indices] for indices in order[: args.steps + 2]]
    per_token, per_learned = flops_per_token(load_model(config.model)[0])
    timed = [(batch_tokens(b), sum(r.trained_tokens for r in b)) for b in batches[2:]]
    step_tokens = sum(t[0] for t in timed) / len(timed)
    step_gflop = sum(t[0] * per_token + t[1] * per_learned for t in timed) / len(timed) / 1e9

    peak = matrix_speed(dtype)
    name = str(dtype).removeprefix("torch.")
    print(f"threads {torch.get_num_threads()}; matrix products in {name}")
    print(f"ceiling: one 2048 x 2048 product runs at {peak:.0f} GFLOP/s\n")

    fp32_step, fast_step = compare_steps(config, batches)
    print(f"{args.steps} steps of {config.batch_size} examples ({step_tokens:.0f} tokens a step):")
    print(f"  {'frozen weights in float32 (autocast casts them)':<52} {fp32_step:.2f} s/step")
    print(f"  {f'frozen weights stored in {name} (ftlab train)':<52} {fast_step:.2f} s/step")
    print(f"  ratio {fp32_step / fast_step:.2f}x\n")

    step = trainer(config, bf16_frozen=True)
    for batch in batches[:2]:
        step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as recorder:
        for batch in batches[2:]:
            step(batch)
    shares = time_shares(recorder)
    total = sum(shares.values())
    reached = step_gflop * len(timed) / shares["matrix products"]
    print("where ftlab's step time goes (profiled, self CPU time):")
    for part, seconds in shares.items():
        print(f"  {part:<24} {100 * seconds / total:5.1f} %")
    print(f"  the matrix products reach about {reached:.0f} GFLOP/s ({100 * reached / peak:.0f} %)")

    computed, learned = run_tokens(rows, config)
    floor = (computed * per_token + learned * per_learned) / peak / 1e9
    print(
        f"\ndefault run ({config.epochs} epochs): {computed} tokens x {per_token / 1e6:.0f} M FLOPs"
        f" + {learned} learned tokens x {per_learned / 1e6:.0f} M in the output layer."
        f"\n  At the ceiling with no other work: {floor:.0f} s;"
        f" at the measured step speed: {computed / step_tokens * fast_step:.0f} s of steps."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
