"""`ftlab eval`: score a base model or a fine-tuned adapter on a chat file."""

from __future__ import annotations

import argparse
import json
import sys

from ftlab.commands import non_negative_int, positive_int
from ftlab.evaluation import TASKS, evaluate, shown_gold
from ftlab.models import ModelNotFoundError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score a model (base name, adapter or training run folder) on a chat file",
        description="Greedy answers for every example's prompt (its messages before the "
        "answer: [system, user] in the support task), scored against the example's answer: "
        "with the support-task metrics when the answers are its JSON, else as text (exact "
        "match and word F1: for a task of your own).",
    )
    parser.add_argument(
        "--model", required=True, help="base model name, adapter folder or training run folder"
    )
    parser.add_argument("--data", required=True, help="chat JSONL file to score")
    parser.add_argument(
        "--few-shot",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="put K training examples before each question (prompting baseline)",
    )
    parser.add_argument(
        "--label-guide",
        action="store_true",
        help="spell out the allowed labels and the answer format in the system message "
        "(the detailed-prompt baseline)",
    )
    parser.add_argument(
        "--train-data", help="where few-shot examples come from (default: the course's train split)"
    )
    parser.add_argument("--limit", type=positive_int, help="score only the first N examples")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="default: %(default)s")
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="auto",
        help="support: the support-task metrics; text: compare answers as text; auto (default): "
        "support when the answers are the support task's JSON",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=positive_int,
        metavar="N",
        help="longest answer (default: 48 for the support task, else the longest gold answer "
        "plus 32)",
    )
    parser.add_argument("--predictions", metavar="PATH", help="write per-example JSONL here")
    parser.add_argument("--json", action="store_true", help="print one JSON object of scores")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        result = evaluate(
            args.model,
            args.data,
            few_shot=args.few_shot,
            label_guide=args.label_guide,
            limit=args.limit,
            batch_size=args.batch_size,
            train_data=args.train_data,
            predictions_path=args.predictions,
            task=args.task,
            max_new_tokens=args.max_new_tokens,
        )
    except (OSError, ValueError, ModelNotFoundError) as error:  # OSError: a file unreadable
        print(f"error: {error}", file=sys.stderr)
        return 1
    scores = result.scores.as_dict()
    if args.task == "auto" and result.task == "text":
        print(
            "note: no answer in the file is the support task's JSON, so the answers are "
            "compared as text (exact, word_f1); --task support insists on the support metrics",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(scores))
        return 0
    guide = ", label guide" if args.label_guide else ""
    print(
        f"{args.model} on {args.data} (n={scores['n']}, few-shot {args.few_shot}{guide}, "
        f"{result.task} metrics)"
    )
    for name, value in scores.items():
        if name != "n":
            print(f"  {name:<14} {value:.3f}")
    wrong = [p for p in result.predictions if not p["exact"]]
    for row in wrong[:5]:
        print(
            f"\n  wrong: {row['user'][:90]!r}\n    gold:   {shown_gold(row['gold'])[:120]}"
            f"\n    answer: {row['answer'][:120]}"
        )
    if len(wrong) > 5:
        print(f"\n  ... and {len(wrong) - 5} more (see --predictions)")
    return 0
