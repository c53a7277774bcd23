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
import statistics
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


def joining_alone(conversations: list[list[dict]], at_once: int) -> dict:
    """The server's batcher in this process, `at_once` requests in flight (as notebook 04
    sends them), once as served (a request for a model that is decoding joins its batch
    when the batch may go on for long) and once as before (it waits for the batch to end):
    first the plain scoring, then the same while another learner's long answer (a story of
    up to 400 tokens) is decoding with the first requests."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ftlab.evaluation import MAX_ANSWER_TOKENS
    from ftlab.models import load_model, prepare_for_inference
    from ftlab.server.batching import ChatBatcher
    from ftlab.server.decoding import Sampling
    from ftlab.server.lifecycle import serving_threads

    serving_threads()
    loaded = load_model(DEFAULT_MODEL)
    prepare_for_inference(loaded[0])
    story = [{"role": "user", "content": "Write a long story about a fox in the mountains."}]

    def read(handle) -> str:
        async def text() -> str:
            return "".join([delta.text async for delta in handle.deltas()])

        return asyncio.run(text())

    def answers(join: bool, long_answer: bool) -> tuple[float, list[str]]:
        batcher = ChatBatcher(lambda source: loaded, join=join)
        greedy = Sampling(max_tokens=MAX_ANSWER_TOKENS, temperature=0)
        story_read = None
        if long_answer:
            handle = batcher.submit(DEFAULT_MODEL, story, Sampling(max_tokens=400, temperature=0))
            story_read = threading.Thread(target=read, args=(handle,))
            story_read.start()
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=at_once) as pool:
            texts = list(
                pool.map(lambda m: read(batcher.submit(DEFAULT_MODEL, m, greedy)), conversations)
            )
        seconds = time.perf_counter() - start
        if story_read is not None:
            story_read.join()
        return seconds, texts

    answers(True, False)  # warm-up, not timed
    figures: dict[str, dict] = {}
    for long_answer in (False, True):
        runs: dict[bool, list[tuple[float, list[str]]]] = {False: [], True: []}
        for join in (False, True, True, False):  # A B B A: the machine's speed drifts
            runs[join].append(answers(join, long_answer))
        waiting, joining = (statistics.mean(s for s, _ in runs[j]) for j in (False, True))
        before, after = runs[False][0][1], runs[True][0][1]
        same = sum(a == b for a, b in zip(before, after, strict=True))
        name = "beside a long answer" if long_answer else "alone"
        figures[name] = {"waiting": round(waiting, 1), "joining": round(joining, 1)}
        print(
            f"batcher, {at_once} in flight, {name} (mean of 2): {waiting:.1f} s waiting for "
            f"each batch to end, {joining:.1f} s as served ({waiting / joining:.2f}x); "
            f"{same}/{len(before)} answers the same",
            flush=True,
        )
    return figures


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
    parser.add_argument(
        "--join-at-once",
        type=int,
        default=16,
        help="then time the server's batcher in this process with this many requests in "
        "flight, requests joining a running batch against waiting for it to end (0 skips it)",
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args()

    from openai import OpenAI

    examples = load_examples(args.data)[: args.limit]
    conversations = [prompt_messages(example) for example in examples]
    results: dict[str, dict] = {}
    if args.prefix_batch:
        results["decoding alone"] = decoding_alone(conversations, args.prefix_batch)
    if args.join_at_once:
        results["joining"] = joining_alone(conversations, args.join_at_once)
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
