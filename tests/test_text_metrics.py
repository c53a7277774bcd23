"""Scoring a task of your own: free-text answers (`ftlab.text_metrics`, `evaluate(task=...)`)."""

from __future__ import annotations

import json

import pytest
from conftest import run_ftlab

from ftlab.evaluation import evaluate
from ftlab.jsonl import write_jsonl
from ftlab.models import load_model
from ftlab.support import make_example
from ftlab.text_metrics import text_score, text_score_one, tidy, word_f1

SYSTEM = "Route the message to one department: billing, technical, sales or hr."
ROUTING = [
    ("My invoice charged me twice this month.", "billing"),
    ("The app crashes when I open settings.", "technical"),
    ("Do you offer a discount for 50 seats?", "sales"),
]


def routing(pairs=ROUTING) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": user},
                {"role": "assistant", "content": answer},
            ]
        }
        for user, answer in pairs
    ]


def test_word_f1_and_exact_by_hand():
    assert tidy("  Dear  Sir,\n thanks ") == "Dear Sir, thanks"
    assert word_f1("the cat sat", "the cat sat") == 1.0
    assert word_f1("the cat", "the cat sat on the mat") == pytest.approx(
        2 * 1 * (2 / 6) / (1 + 2 / 6)
    )
    assert word_f1("Billing!", "billing") == 1.0  # case and punctuation do not count
    assert word_f1("", "") == 1.0 and word_f1("", "billing") == 0.0 and word_f1("x", "y") == 0.0
    assert word_f1("?", "?") == 1.0 and word_f1("?", "!") == 0.0  # no words: the text decides
    assert word_f1("the the the", "the cat") == pytest.approx(0.4)  # each word counted once per use
    assert text_score_one(" billing\n", "billing") == {"exact": True, "word_f1": 1.0}
    assert text_score_one("Billing", "billing")["exact"] is False  # exact keeps letter case
    scores = text_score(["billing", "sales team"], ["billing", "sales"])
    assert (scores.n, scores.exact) == (2, 0.5)
    assert scores.word_f1 == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="2 answers for 1 gold"):
        text_score(["a", "b"], ["a"])


@pytest.fixture(scope="module")
def base():
    return load_model()


@pytest.mark.slow
def test_a_file_of_another_task_is_scored_as_text(base, tmp_path):
    """Answers that are not the support task's JSON are compared as text; a gold answer equal
    to what the model says scores exact, another does not."""
    first = evaluate(base, routing(), max_new_tokens=12)
    assert first.task == "text" and set(first.scores.as_dict()) == {"n", "exact", "word_f1"}
    said = first.predictions[0]["answer"]
    assert said.strip()  # the base model says something
    pairs = [(ROUTING[0][0], said), (ROUTING[1][0], "zzz qqq")]
    path = write_jsonl(tmp_path / "mine.jsonl", routing(pairs))
    result = evaluate(base, path, max_new_tokens=12, predictions_path=tmp_path / "p.jsonl")
    assert [p["exact"] for p in result.predictions] == [True, False]
    assert result.predictions[0]["word_f1"] == 1.0 and result.scores.exact == 0.5
    assert result.predictions[0]["gold"] == said  # the gold answer as written, not parsed
    frame = result.to_frame()
    assert list(frame["gold"]) == [said, "zzz qqq"]
    assert "word_f1" in result._repr_html_() and "zzz qqq" in result._repr_html_()
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [row["answer"] for row in rows] == [p["answer"] for p in result.predictions]


def test_support_files_keep_the_support_metrics_and_say_how_to_score_text(tmp_path):
    broken = make_example("Where is AC-12345?", "order_status", "AC-12345", "neutral")
    broken["messages"][-1]["content"] = "order_status"  # one answer that is not the JSON
    good = make_example("I love my boots", "other", None, "positive")
    path = write_jsonl(tmp_path / "support.jsonl", [good, broken])
    with pytest.raises(ValueError) as caught:
        evaluate("no model is loaded before the data is checked", path)
    said = str(caught.value)
    assert "line 2: its last assistant message is not JSON" in said
    assert "task='text'" in said and "--task text" in said
    with pytest.raises(ValueError, match="task must be one of auto, support, text"):
        evaluate("unused", path, task="json")
    with pytest.raises(ValueError, match="belong to the support task"):
        evaluate("unused", routing(), label_guide=True)
    with pytest.raises(ValueError, match="pass your own train_data"):
        evaluate("unused", routing(), few_shot=2)
    with pytest.raises(ValueError, match="example 1: its last assistant message has no text"):
        evaluate(
            "unused",
            [
                {
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": None},
                    ]
                }
            ],
        )


@pytest.mark.slow
def test_limit_checks_only_the_examples_it_scores(base, tmp_path):
    broken = {"messages": [{"role": "user", "content": "no answer here"}]}
    path = write_jsonl(tmp_path / "mine.jsonl", [*routing()[:1], broken])
    result = evaluate(base, path, limit=1, max_new_tokens=4)
    assert result.scores.n == 1


@pytest.mark.slow
def test_ftlab_eval_scores_a_text_task_on_the_command_line(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", routing())
    done = run_ftlab(
        "eval",
        "--model",
        "smollm2-135m-instruct",
        "--data",
        str(path),
        "--max-new-tokens",
        "8",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert set(scores) == {"n", "exact", "word_f1"} and scores["n"] == 3
    assert "compared as text" in done.stderr  # chosen by --task auto: said, not only in --json
    shown = run_ftlab(
        "eval", "--model", "smollm2-135m-instruct", "--data", str(path), "--max-new-tokens", "8"
    )
    assert "text metrics" in shown.stdout and "word_f1" in shown.stdout
    assert "gold:   billing" in shown.stdout or scores["exact"] == 1.0
    refused = run_ftlab(
        "eval", "--model", "smollm2-135m-instruct", "--data", str(path), "--task", "support"
    )
    assert refused.returncode == 1 and "is not JSON" in refused.stderr


@pytest.mark.slow
def test_few_shot_examples_of_a_text_task_spread_over_its_answers(base):
    from ftlab.evaluation import _answer_label
    from ftlab.prompting import pick_shots

    pool = routing([(f"message {i}", answer) for i, answer in enumerate("aabbbc")])
    shots = pick_shots(pool, 3, _answer_label)
    assert [s["messages"][-1]["content"] for s in shots] == ["a", "b", "c"]
    result = evaluate(base, routing(), few_shot=3, train_data=pool, max_new_tokens=4)
    assert result.task == "text" and result.scores.n == 3


def test_an_empty_gold_answer_is_refused_with_its_example():
    empty = routing([("hello", " ")])
    with pytest.raises(ValueError, match="example 1: its last assistant message .* is empty"):
        evaluate("unused", empty)
