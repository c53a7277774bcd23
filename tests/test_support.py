"""The support-task metrics, on hand-made predictions with known scores."""

from __future__ import annotations

import json

import pytest

from ftlab.support import parse_answer, score, score_one

GOLD = {"intent": "order_status", "order_id": "AC-12345", "sentiment": "negative"}


def answer(**changes) -> str:
    return json.dumps({**GOLD, **changes})


def test_perfect_answer_earns_every_metric():
    assert all(score_one(answer(), GOLD).values())


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        (
            answer(intent="complaint"),
            {"json_valid", "schema_valid", "order_id_acc", "sentiment_acc"},
        ),
        (answer(order_id="ac-12345"), {"json_valid", "intent_acc", "sentiment_acc"}),
        (answer(sentiment="furious"), {"json_valid", "intent_acc", "order_id_acc"}),
        (
            json.dumps({**GOLD, "extra": 1}),
            {"json_valid", "intent_acc", "order_id_acc", "sentiment_acc", "exact"},
        ),
        # Not canonical: `$` let a final line break through, and `\d` other scripts' digits.
        (answer(order_id="AC-12345\n"), {"json_valid", "intent_acc", "sentiment_acc"}),
        (answer(order_id="AC-١٢٣٤٥"), {"json_valid", "intent_acc", "sentiment_acc"}),
        (  # a hedge: the same key twice earns nothing for its field, though JSON keeps the last
            answer()[:-1] + ', "intent": "complaint", "intent": "order_status"}',
            {"json_valid", "order_id_acc", "sentiment_acc"},
        ),
        ('{"intent": "order_status"', set()),
        ("Sure! Here is the JSON: " + answer(), set()),
        ("[1, 2]", set()),
        ("", set()),
    ],
)
def test_partial_answers_earn_exactly_their_metrics(prediction, expected):
    earned = {name for name, hit in score_one(prediction, GOLD).items() if hit}
    assert earned == expected


def test_score_averages_over_examples():
    golds = [GOLD, {**GOLD, "order_id": None}, {**GOLD, "intent": "other"}, GOLD]
    predictions = [answer(), answer(order_id=None), answer(), "not json"]
    scores = score(predictions, golds)
    assert scores.n == 4
    assert scores.json_valid == 0.75
    assert scores.schema_valid == 0.75
    assert scores.intent_acc == 0.5
    assert scores.order_id_acc == 0.75
    assert scores.sentiment_acc == 0.75
    assert scores.exact == 0.5


def test_score_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="2 predictions for 1"):
        score([answer(), answer()], [GOLD])
    with pytest.raises(ValueError, match="empty"):
        score([], [])


def test_parse_answer_accepts_surrounding_whitespace_only():
    assert parse_answer(f"  {answer()}\n") == GOLD
    assert parse_answer("```json\n" + answer() + "\n```") is None


def test_a_reasoning_models_thinking_before_its_answer_is_not_part_of_it():
    """Qwen3 writes an empty <think></think> before every answer (its template trains it to)."""
    assert parse_answer(f"<think>\n\n</think>\n\n{answer()}") == GOLD
    assert parse_answer(f"<think>It is about an order.</think>{answer()}") == GOLD
    assert parse_answer(f"<think>unfinished {answer()}") is None
    assert parse_answer(f"It is about an order.\n</think>\n\n{answer()}") == GOLD  # R1
    assert parse_answer(f"{answer()} <think></think>") is None  # only before the answer


def test_prompt_messages_are_everything_before_the_gold_answer():
    from ftlab.support import SYSTEM_PROMPT, make_example, prompt_messages

    single = make_example("where is AC-12345?", "order_status", "AC-12345", "neutral")
    assert prompt_messages(single) == single["messages"][:2]
    conversation = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "hi, it's about my order"},
        {"role": "assistant", "content": "Which order?", "weight": 0},
        {"role": "user", "content": "AC-12345, where is it?"},
        {"role": "assistant", "content": single["messages"][2]["content"]},
    ]
    prompt = prompt_messages({"messages": conversation})
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[2] == {"role": "assistant", "content": "Which order?"}  # no training weight
    assert "weight" in conversation[2]  # the example itself is not changed
    no_system = prompt_messages({"messages": conversation[1:]})
    assert [m["role"] for m in no_system] == ["user", "assistant", "user"]
