"""Scoring through the local API: one request at a time against many in flight.

    make bench-chat                              # = .venv/bin/python bench/chat_batching.py
    .venv/bin/python bench/chat_batching.py --limit 32 --at-once 8 16

Notebook 04 scores its fine-tuned model by sending every test message to
`chat.completions.create` (`ftlab.course.api_answers`). This starts a local server
and answers the test split's prompts with the base model through the official SDK,
in the same process: first one request at a time (each is answered alone, as a
server without batching would), then with N requests in flight, which the server
answers together in batches of up to `--chat-batch` rows. It prints the seconds,
the ratio to one at a time, and how many answers are the same.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(support_split("test")), help="JSONL of examples")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument(
        "--at-once", type=int, nargs="+", default=[16], help="requests in flight to compare"
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args()

    from openai import OpenAI

    examples = load_examples(args.data)[: args.limit]
    conversations = [prompt_messages(example) for example in examples]
    results: dict[str, dict] = {}
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
