"""Evaluation speed: prompts batched as they are, against batches that share their prefix.

    .venv/bin/python bench/eval_speed.py                  # the base model on the test split
    .venv/bin/python bench/eval_speed.py --model runs/03_lora/adapter --limit 32

For the three prompt styles of the course (plain, few-shot with 4 examples, RAG
with 2 policy sections) it answers the same test messages twice with
`ftlab.generation.generate_batch`, greedy and in batches of 16: once with plain
left-padded batches (every row computes its whole prompt) and once with the
tokens all prompts share computed a single time (`share_prefix=True`, the
default). It prints the seconds of each (the fastest of `--repeats` runs), the
ratio, how many tokens the prompts have and share, and how many answers are the
same both ways.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ftlab.evaluation import MAX_ANSWER_TOKENS, build_prompts
from ftlab.generation import generate_batch, prompt_ids, shared_prefix_length
from ftlab.models import DEFAULT_MODEL, load_model, prepare_for_inference, sensible_threads
from ftlab.paths import support_split
from ftlab.prompting import PolicyRetriever, pick_shots
from ftlab.support import load_examples


def timed_answers(
    model, tokenizer, prompts, share_prefix: bool, repeats: int
) -> tuple[float, list[str]]:
    """The fastest of `repeats` runs (timings on a shared machine move by 10 % or more)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        answers = generate_batch(
            model, tokenizer, prompts, max_new_tokens=MAX_ANSWER_TOKENS, share_prefix=share_prefix
        )
        best = min(best, time.perf_counter() - start)
    return best, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model name or adapter folder")
    parser.add_argument("--data", default=str(support_split("test")))
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--repeats", type=int, default=1, help="time each N times, keep the best")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(sensible_threads())
    examples = load_examples(args.data)[: args.limit]
    model, tokenizer = load_model(args.model)
    prepare_for_inference(model)
    shots = pick_shots(load_examples(support_split("train")), 4)
    styles = {
        "plain": build_prompts(examples),
        "few-shot 4": build_prompts(examples, shots),
        "RAG 2": build_prompts(examples, rag=PolicyRetriever.from_file(), rag_k=2),
    }
    generate_batch(model, tokenizer, styles["plain"][:2], max_new_tokens=4)  # warm-up

    print(
        f"{args.model} on {len(examples)} examples of {args.data}, {torch.get_num_threads()} "
        f"threads, {next(model.parameters()).dtype}\n"
    )
    print(
        f"{'prompts':<11} {'tokens':>7} {'shared':>6} {'plain s':>8} {'shared s':>9} "
        f"{'ratio':>6} {'same answers':>13}"
    )
    rows = []
    for name, prompts in styles.items():
        ids = [prompt_ids(tokenizer, p) for p in prompts]
        plain_s, plain = timed_answers(model, tokenizer, prompts, False, args.repeats)
        shared_s, shared = timed_answers(model, tokenizer, prompts, True, args.repeats)
        same = sum(a == b for a, b in zip(plain, shared, strict=True))
        row = {
            "prompts": name,
            "prompt_tokens": sum(len(i) for i in ids),
            "shared_tokens": shared_prefix_length(ids),
            "plain_s": round(plain_s, 2),
            "shared_s": round(shared_s, 2),
            "ratio": round(plain_s / shared_s, 2),
            "same_answers": same,
            "n": len(prompts),
        }
        rows.append(row)
        print(
            f"{name:<11} {row['prompt_tokens']:>7} {row['shared_tokens']:>6} {plain_s:>8.1f} "
            f"{shared_s:>9.1f} {row['ratio']:>5.2f}x {same:>6} of {len(prompts)}"
        )
    total_plain = sum(r["plain_s"] for r in rows)
    total_shared = sum(r["shared_s"] for r in rows)
    print(
        f"\nall three: {total_plain:.1f} s plain, {total_shared:.1f} s with the prefix shared "
        f"({total_plain / total_shared:.2f}x)"
    )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
