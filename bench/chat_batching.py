"""Scoring through the local API: one request at a time against many in flight.

    make bench-chat                              # = .venv/bin/python bench/chat_batching.py
    .venv/bin/python bench/chat_batching.py --limit 32 --at-once 8 16

Notebook 04 scores its fine-tuned model by sending every test message to
`chat.completions.create` (`ftlab.course.api_answers`). This first times the server's
decoding loop alone, in this process, with and without each batch's shared prompt
beginning computed once. Then it starts a local server in the background and answers
the test split's prompts with the base model through the official SDK: first one
request at a time (each is answered alone, as a server without batching would), then
with N requests in flight, which the server answers together in batches of up to
`--chat-batch` rows. It prints the seconds, the ratios, and how many answers are the same.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ftlab.course import api_answers
from ftlab.models import DEFAULT_MODEL
from ftlab.paths import support_split
from ftlab.server import start_server
from ftlab.support import load_examples, prompt_messages


def decoding_alone(conversations: list[list[dict]], batch: int) -> dict:
    """The server's decoding loop in this process, on the server's one chat thread:
    every `batch` prompts in turn, once computing their shared beginning (the system
    prompt) once, as served, and once computing every row's whole prompt."""
    from ftlab.generation import prompt_ids
    from ftlab.models import load_model, prepare_for_inference
    from ftlab.server.decoding import ChatRows, Sampling, Usage, decode_batch
    from ftlab.server.lifecycle import serving_threads

    serving_threads()
    model, tokenizer = load_model(DEFAULT_MODEL)
    prepare_for_inference(model)
    prompts = [prompt_ids(tokenizer, c) for c in conversations]

    def rows(first: int, into: list[list[str]]) -> list[ChatRows]:
        return [
            ChatRows(
                prompts[i],
                Sampling(max_tokens=60, temperature=0),
                60,
                Usage(),
                lambda delta, piece=into[i]: piece.append(delta.text),
            )
            for i in range(first, min(first + batch, len(prompts)))
        ]

    decode_batch(model, tokenizer, rows(0, [[] for _ in prompts]))  # warm-up, not timed
    figures = {}
    texts: dict[bool, list[str]] = {}
    for share in (True, False):
        pieces: list[list[str]] = [[] for _ in prompts]
        start = time.perf_counter()
        for first in range(0, len(prompts), batch):
            decode_batch(model, tokenizer, rows(first, pieces), share_prefix=share)
        figures["shared" if share else "whole"] = round(time.perf_counter() - start, 1)
        texts[share] = ["".join(p) for p in pieces]
    same = sum(a == b for a, b in zip(texts[True], texts[False], strict=True))
    print(
        f"decoding alone, batches of {batch}: {figures['whole']:.1f} s computing every row's "
        f"whole prompt, {figures['shared']:.1f} s computing the shared beginning once "
        f"({figures['whole'] / figures['shared']:.2f}x); {same}/{len(prompts)} answers the same",
        flush=True,
    )
    return {**figures, "same_answers": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(support_split("test")), help="JSONL of examples")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument(
        "--at-once", type=int, nargs="+", default=[16], help="requests in flight to compare"
    )
    parser.add_argument(
        "--prefix-batch",
        type=int,
        default=16,
        help="first time the server's decoding loop alone on batches of this many prompts, "
        "with and without their shared beginning computed once (0 skips it)",
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args()

    from openai import OpenAI

    examples = load_examples(args.data)[: args.limit]
    conversations = [prompt_messages(example) for example in examples]
    results: dict[str, dict] = {}
    if args.prefix_batch:
        results["decoding alone"] = decoding_alone(conversations, args.prefix_batch)
    with tempfile.TemporaryDirectory() as folder:
        with start_server(Path(folder) / "data") as server:
            client = OpenAI(base_url=server.base_url, api_key="bench", timeout=600)
            api_answers(client, DEFAULT_MODEL, conversations[:1], at_once=1)  # load the model
            baseline: list[str] = []
            for at_once in [1, *args.at_once]:
                start = time.perf_counter()
                answers = api_answers(client, DEFAULT_MODEL, conversations, at_once=at_once)
                seconds = time.perf_counter() - start
                baseline = baseline or answers
                same = sum(a == b for a, b in zip(answers, baseline, strict=True))
                results[str(at_once)] = {"seconds": round(seconds, 1), "same_answers": same}
                print(
                    f"{at_once:3} at once: {seconds:6.1f} s for {len(answers)} answers, "
                    f"{results['1']['seconds'] / seconds:.2f}x one at a time, "
                    f"{same}/{len(answers)} answers the same",
                    flush=True,
                )
    if args.json:
        print(json.dumps({"examples": len(conversations), "results": results}))


if __name__ == "__main__":
    main()
