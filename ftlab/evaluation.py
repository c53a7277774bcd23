"""Scoring a model: greedy answers for every example, scored against its gold answer.

    result = evaluate("runs/x/adapter", support_split("test"))
    result.scores.exact, result.to_frame()

`model` may be a base model name, an adapter folder (merged for speed) or an
already loaded `(model, tokenizer)` pair; `few_shot=K` is the prompting
baseline that puts K training examples in front of each question.
Support-task files are scored with the course metric (`ftlab.support`); files of
another task, whose answers are free text, with `ftlab.text_metrics`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ftlab.files import same_file
from ftlab.generation import generate_batch, model_context, prompt_ids
from ftlab.jsonl import write_jsonl
from ftlab.models import load_model, prepare_for_inference, sensible_threads
from ftlab.paths import cannot_write_in, support_split
from ftlab.prompting import (
    PolicyRetriever,
    add_passages,
    few_shot_messages,
    pick_shots,
    with_label_guide,
)
from ftlab.support import (
    KEYS,
    Scores,
    gold_answer,
    last_reply,
    numbered_examples,
    prompt_messages,
    score,
    score_one,
)
from ftlab.text_metrics import TextScores, text_score, text_score_one, tidy
from ftlab.validation.rules import check_example

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The longest gold answer is about 30 tokens; a little room for a wrong but longer answer.
MAX_ANSWER_TOKENS = 48
# A free-text answer may run this many tokens past the longest gold answer before it is cut.
TEXT_ANSWER_SLACK = 32
# "auto": the support task when the answers are its JSON, else free text.
TASKS = ("auto", "support", "text")


@dataclass
class EvalResult:
    """Scores plus one row per example (user text, gold, raw answer, which metrics it earned)."""

    scores: Scores | TextScores
    predictions: list[dict[str, Any]] = field(repr=False)

    @property
    def task(self) -> str:
        """ "support" or "text": which metrics scored the answers."""
        return "text" if isinstance(self.scores, TextScores) else "support"

    def to_frame(self):
        """One row per example; a support `gold` written as JSON, like the answers beside it."""
        import pandas as pd

        frame = pd.DataFrame(self.predictions)
        if "gold" in frame:
            frame["gold"] = frame["gold"].map(shown_gold)
        return frame

    def _repr_html_(self) -> str:
        values = self.scores.as_dict()
        head = "".join(f"<th>{name}</th>" for name in values)
        cells = "".join(
            f"<td>{value:.3f}</td>" if isinstance(value, float) else f"<td>{value}</td>"
            for value in values.values()
        )
        wrong = [p for p in self.predictions if not p["exact"]][:10]
        rows = "".join(
            f"<tr><td>{html.escape(p['user'])}</td><td><code>{html.escape(shown_gold(p['gold']))}"
            f"</code></td><td><code>{html.escape(p['answer'])}</code></td></tr>"
            for p in wrong
        )
        misses = (
            (
                f"<p>First {len(wrong)} wrong answers:</p><table><tr><th>message</th>"
                f"<th>gold</th><th>answer</th></tr>{rows}</table>"
            )
            if wrong
            else ""
        )
        return f"<table><tr>{head}</tr><tr>{cells}</tr></table>{misses}"


def shown_gold(gold: Any) -> str:
    """A gold answer as text: a support answer as its JSON, a free-text answer as it is."""
    return gold if isinstance(gold, str) else json.dumps(gold, ensure_ascii=False)


def _examples(
    data: str | Path | Sequence[dict],
    role: str = "evaluation",
    task: str = "auto",
    limit: int | None = None,
) -> tuple[list[dict], str]:
    """The first `limit` examples of a file or list and their task ("support" or "text";
    `task` unless "auto"), each checked to have a user message and a gold answer that the
    task can score."""
    if isinstance(data, str | Path):
        if Path(data).is_dir():
            raise FileNotFoundError(f"{data} is a folder. Fix: pass a chat JSONL file.")
        if not Path(data).is_file():
            raise FileNotFoundError(f"No {role} file at {data}. Fix: pass a chat JSONL file.")
        numbered, source = numbered_examples(data, limit), str(data)
        places = [f"line {number}" for number, _ in numbered]
        examples = [example for _, example in numbered]
    else:
        examples, source = list(data)[:limit], f"the {role} examples"
        places = [f"example {number}" for number in range(1, len(examples) + 1)]
    if task == "auto":
        task = "support" if any(not _support_problem(e) for e in examples) else "text"
    check = _support_problem if task == "support" else _chat_problem
    problems = [
        f"{place}: {problem}"
        for place, example in zip(places, examples, strict=True)
        if (problem := check(example))
    ]
    if problems:
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        fix = (
            "every example needs a user message and, last, an assistant answer that is a JSON "
            "object with the support task's keys; for a task of your own, whose answers are "
            "text, pass task='text' (ftlab eval --task text)"
            if task == "support"
            else "every example needs a user message and, last, an assistant answer with text"
        )
        raise ValueError(
            f"{source} cannot be scored:\n  " + "\n  ".join(problems[:5]) + more + "\n"
            f"Fix: {fix} (`ftlab validate FILE` checks the chat format)."
        )
    return examples, task


def _check_prompt_room(
    model,
    tokenizer,
    prompts: Sequence[list[dict]],
    added: bool,
    label_guide: bool = False,
    answer_tokens: int = MAX_ANSWER_TOKENS,
    task: str = "support",
) -> None:
    """Fail before generating if the longest prompt leaves no room for an answer of
    `answer_tokens`; `added`: the prompts hold few-shot examples or retrieved sections, which
    can be cut down."""
    context = model_context(model, tokenizer)
    lengths = [len(prompt_ids(tokenizer, prompt)) for prompt in prompts]
    longest = max(lengths)
    if longest + answer_tokens <= context:
        return
    if added:
        fix = "use fewer few-shot examples (few_shot, --few-shot) or retrieved sections (rag_k)."
    elif label_guide:
        fix = "leave out the label guide, or use a model with a longer context."
    else:
        fix = "shorten or remove that example, or use a model with a longer context."
    if task == "text":
        fix += (
            f" The room kept for an answer, {answer_tokens} tokens, is the longest gold answer "
            f"plus {TEXT_ANSWER_SLACK} unless you set it: max_new_tokens= (--max-new-tokens) "
            "sets less."
        )
    raise ValueError(
        f"The longest prompt, example {lengths.index(longest) + 1} (counting from 1 in file "
        f"order), is {longest:,} tokens, and the model reads at most {context:,}, its answer "
        f"of up to {answer_tokens} tokens included.\nFix: {fix}"
    )


def _holds_chat_examples(path: Path) -> bool:
    """True if `path` is a file whose first line is a chat example: someone's data, which a
    predictions file written there would replace."""
    try:
        with path.open("rb") as handle:
            first = next((line for line in handle if line.strip()), b"")
        value = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and "messages" in value


def _chat_problem(example: object) -> str | None:
    """Why one example has no prompt and gold answer to compare, or None. Past the checks
    that say so in evaluation's words come the errors `ftlab validate` reports (a role that
    is not text, content that is a number or a list), which would otherwise fail half-way
    through generation or score a prompt left blank."""
    messages = example.get("messages") if isinstance(example, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return 'it is not {"messages": [...]} with one object per message'
    roles = [m.get("role") for m in messages]
    if "user" not in roles:
        return "it has no user message"
    if "assistant" not in roles:
        return "it has no assistant message (the gold answer)"
    gold = _gold_text(example)
    if not isinstance(gold, str):
        return "its last assistant message has no text content"
    if not gold.strip():
        return "its last assistant message (the gold answer) is empty"
    errors = [problem for problem in check_example(0, example) if problem.is_error]
    if errors:
        first = errors[0]
        at = "" if first.message_index is None else f"messages[{first.message_index}]: "
        return f"{at}{first.message}"
    return None


def _support_problem(example: object) -> str | None:
    """Why one example cannot be scored with the support metrics, or None."""
    if problem := _chat_problem(example):
        return problem
    assert isinstance(example, dict)
    try:
        gold = gold_answer(example)
    except (TypeError, ValueError):
        return "its last assistant message is not JSON"
    if not isinstance(gold, dict) or set(gold) != set(KEYS):
        return f"its last assistant message is not a JSON object with the keys {', '.join(KEYS)}"
    return None


def _gold_text(example: dict) -> object:
    """The content of an example's last assistant message (its gold answer), as written."""
    return last_reply(example).get("content")


def _answer_label(example: dict) -> str:
    """What few-shot examples of a text task are spread over: their different answers."""
    return tidy(str(_gold_text(example)))


def _user_text(example: dict) -> str:
    """The customer's message: the last user turn of an example."""
    return next(m["content"] for m in reversed(example["messages"]) if m["role"] == "user")


def build_prompts(
    examples: Sequence[dict],
    shots: Sequence[dict] = (),
    rag: PolicyRetriever | None = None,
    rag_k: int = 2,
    label_guide: bool = False,
) -> list[list[dict]]:
    """What the model is shown for each example: its prompt, with the label guide, few-shot
    turns and policies as asked."""
    prompts = [few_shot_messages(e, shots) if shots else prompt_messages(e) for e in examples]
    if label_guide:
        prompts = [with_label_guide(p) for p in prompts]
    if rag is None:
        return prompts
    return [
        add_passages(p, rag.search(_user_text(e), k=rag_k))
        for p, e in zip(prompts, examples, strict=True)
    ]


def evaluate(
    model: str | Path | tuple[PreTrainedModel, PreTrainedTokenizerBase],
    data: str | Path | Sequence[dict],
    *,
    few_shot: int = 0,
    limit: int | None = None,
    batch_size: int = 16,
    train_data: str | Path | Sequence[dict] | None = None,
    rag: PolicyRetriever | None = None,
    rag_k: int = 2,
    label_guide: bool = False,
    predictions_path: str | Path | None = None,
    task: str = "auto",
    max_new_tokens: int | None = None,
) -> EvalResult:
    """Answer every example's prompt greedily and score the answers.

    The prompt is every message before the example's answer (its last assistant message):
    [system, user] in the support task, earlier turns too in a longer conversation.

    `task`: "support" scores answers with the support task's metrics; "text" compares free
    text (`ftlab.text_metrics`: `exact` and `word_f1`), for a task of your own; "auto" (the
    default) picks "support" when the gold answers are the support task's JSON. `limit`
    takes the first examples. `max_new_tokens` caps each answer (default: 48 tokens for the
    support task; for text, the longest gold answer plus 32).

    `train_data` is where few-shot examples come from (default: the course's
    train split). `rag` retrieves the `rag_k` best policy sections for each
    customer message and adds them to the system message (the RAG baseline).
    `label_guide` spells out the allowed values and the answer format in the
    system message (the detailed-prompt baseline; `ftlab.prompting.LABEL_GUIDE`).
    `predictions_path` writes one JSON line per example.
    """
    if batch_size < 1 or few_shot < 0 or (limit is not None and limit < 1):
        raise ValueError(
            f"batch_size and limit must be 1 or more and few_shot 0 or more; got "
            f"batch_size={batch_size}, limit={limit}, few_shot={few_shot}"
        )
    if task not in TASKS or (max_new_tokens is not None and max_new_tokens < 1):
        raise ValueError(
            f"task must be one of {', '.join(TASKS)} and max_new_tokens 1 or more; got "
            f"task={task!r}, max_new_tokens={max_new_tokens}"
        )
    shots_source = train_data or support_split("train")
    if predictions_path is not None:
        path = Path(predictions_path)
        why = "it is a folder" if path.is_dir() else cannot_write_in(path.parent)
        if why:
            raise ValueError(
                f"Cannot write predictions to {predictions_path}: {why}.\nFix: pass the path of "
                "a file in a folder you can write to (the folder is created if missing)."
            )
        for name, source in (("--data", data), ("--train-data", shots_source)):
            if same_file(path, source):
                raise ValueError(
                    f"The predictions path {predictions_path} is the {name} file: writing the "
                    "predictions would replace your examples.\nFix: pass a new file, for "
                    "example predictions.jsonl."
                )
        if path.is_file() and _holds_chat_examples(path):
            raise ValueError(
                f"{predictions_path} holds chat examples: writing the predictions would replace "
                "them.\nFix: pass a new file, for example predictions.jsonl, or delete that one "
                "first if you really mean to."
            )
    examples, task = _examples(data, task=task, limit=limit)
    if not examples:
        raise ValueError("Nothing to evaluate: the data holds no examples.")
    if task == "text" and (label_guide or rag is not None or (few_shot and not train_data)):
        raise ValueError(
            "The label guide, the policy retriever and the default few-shot examples belong "
            "to the support task, and these answers are free text (task 'text').\nFix: leave "
            "out the label guide (label_guide, --label-guide) and the retriever (rag), and pass "
            "your own train_data (--train-data) for few-shot examples."
        )
    shot_pool = _examples(shots_source, "few-shot", task)[0] if few_shot else []
    if few_shot > len(shot_pool):
        raise ValueError(
            f"{few_shot:,} few-shot examples were asked for, but the few-shot file has "
            f"{len(shot_pool):,}.\nFix: ask for fewer (a few, say 3 to 8, is the usual "
            "prompting baseline)."
        )
    if isinstance(model, tuple):
        loaded, tokenizer = model
    else:  # loaded here, so it is ours to store in the fast dtype
        loaded, tokenizer = load_model(model)
        prepare_for_inference(loaded)
    if loaded.device.type == "cpu":
        torch.set_num_threads(sensible_threads())
    shots = pick_shots(shot_pool, few_shot, *([_answer_label] if task == "text" else []))
    prompts = build_prompts(examples, shots, rag, rag_k, label_guide)
    golds = [gold_answer(e) if task == "support" else _gold_text(e) for e in examples]
    if max_new_tokens is None:
        max_new_tokens = MAX_ANSWER_TOKENS
        if task == "text":
            longest = max(len(tokenizer(g, add_special_tokens=False)["input_ids"]) for g in golds)
            max_new_tokens = longest + TEXT_ANSWER_SLACK
    _check_prompt_room(
        loaded, tokenizer, prompts, bool(shots or rag), label_guide, max_new_tokens, task
    )
    answers = generate_batch(
        loaded, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    score_answer = score_one if task == "support" else text_score_one
    predictions = [
        {"user": _user_text(example), "gold": gold, "answer": answer, **score_answer(answer, gold)}
        for example, answer, gold in zip(examples, answers, golds, strict=True)
    ]
    if predictions_path is not None:
        write_jsonl(predictions_path, predictions)
    scores = score(answers, golds) if task == "support" else text_score(answers, golds)
    return EvalResult(scores, predictions)
