"""Prompting baselines: few-shot prompts and the policy retriever."""

from __future__ import annotations

import pytest

from ftlab.paths import data_dir
from ftlab.prompting import (
    LABEL_GUIDE,
    Passage,
    PolicyRetriever,
    few_shot_messages,
    markdown_sections,
    pick_shots,
    rag_messages,
    with_label_guide,
)
from ftlab.support import SYSTEM_PROMPT, gold_answer, make_example

TRAIN = [
    make_example("where is AC-11111", "order_status", "AC-11111", "neutral"),
    make_example("track AC-22222 please", "order_status", "AC-22222", "neutral"),
    make_example("I want to send this jacket back", "return_request", None, "neutral"),
    make_example("refund for AC-33333 still missing", "refund_status", "AC-33333", "negative"),
    make_example("thanks, you are great", "other", None, "positive"),
]
QUESTION = make_example("cancel AC-44444 now", "cancel_order", "AC-44444", "negative")

POLICY = """# Policies

Intro text about the shop.

## Returns
Send items back within 60 days with the prepaid label.

## Refunds
Refunds reach your card 5-10 business days after the return arrives.

## Shipping
Standard shipping takes 3-7 business days.
"""


def test_pick_shots_covers_different_intents_first():
    shots = pick_shots(TRAIN, 3)
    assert [gold_answer(s)["intent"] for s in shots] == [
        "order_status",
        "return_request",
        "refund_status",
    ]
    assert pick_shots(TRAIN, 3) == shots  # deterministic
    five = pick_shots(TRAIN, 5)
    assert len({gold_answer(s)["intent"] for s in five[:4]}) == 4
    assert len(pick_shots(TRAIN, 50)) == len(TRAIN)
    assert pick_shots(TRAIN, 0) == []


def test_few_shot_messages_put_shots_between_system_and_question():
    messages = few_shot_messages(QUESTION, TRAIN[:2])
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert messages[1]["content"] == "where is AC-11111"
    assert messages[-1]["content"] == "cancel AC-44444 now"
    assert few_shot_messages(QUESTION, []) == QUESTION["messages"][:2]


def test_few_shot_messages_end_on_the_question_with_or_without_a_system_message():
    conversation = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "hello, about an order"},
        {"role": "assistant", "content": "Which order?"},
        {"role": "user", "content": "cancel AC-44444 now"},
        QUESTION["messages"][2],
    ]
    shots = TRAIN[:2]
    with_system = few_shot_messages({"messages": conversation}, shots)
    assert [m["role"] for m in with_system] == ["system", *["user", "assistant"] * 3, "user"]
    assert with_system[0]["content"] == SYSTEM_PROMPT
    assert [m["content"] for m in with_system[-3:]] == [
        "hello, about an order",
        "Which order?",
        "cancel AC-44444 now",
    ]
    without = few_shot_messages({"messages": conversation[1:]}, shots)
    assert without == with_system[1:]  # the shots come first, the question last
    # A multi-turn shot contributes its last question and its answer.
    shot = {"messages": [*conversation[:2], conversation[2], *TRAIN[0]["messages"][1:]]}
    (question, answer, *_) = few_shot_messages(QUESTION, [shot])[1:]
    assert (question["content"], answer["content"]) == (
        "where is AC-11111",
        TRAIN[0]["messages"][2]["content"],
    )


def test_system_additions_to_a_prompt_without_a_system_message_get_their_own():
    prompt = QUESTION["messages"][1:2]  # the user message alone
    guided = with_label_guide(prompt)
    assert guided == [{"role": "system", "content": LABEL_GUIDE}, *prompt]
    with_policies = rag_messages({"messages": QUESTION["messages"][1:]}, [Passage("A", "b")])
    assert [m["role"] for m in with_policies] == ["system", "user"]
    assert with_policies[0]["content"] == "Relevant store policies:\n\n## A\nb"
    assert with_policies[1] == prompt[0]


def test_markdown_sections_split_at_headings():
    sections = markdown_sections(POLICY)
    assert [s.title for s in sections] == ["Policies", "Returns", "Refunds", "Shipping"]
    assert sections[2].text.startswith("Refunds reach your card")


def test_retriever_ranks_the_matching_section_first(tmp_path):
    path = tmp_path / "policies.md"
    path.write_text(POLICY)
    retriever = PolicyRetriever.from_file(path)
    assert retriever.search("when will my refund arrive?", k=1)[0].title == "Refunds"
    assert retriever.search("how long does shipping take", k=1)[0].title == "Shipping"
    assert retriever.search("zebra xylophone") == []
    assert len(retriever.search("returns refunds shipping", k=2)) == 2


def test_retriever_finds_sections_of_the_course_policy():
    path = data_dir() / "support" / "policies.md"  # shipped: its absence is a failure
    retriever = PolicyRetriever.from_file(path)
    titles = [p.title for p in retriever.search("I need to change my delivery address", k=2)]
    assert any("Address" in title for title in titles)


def test_rag_messages_append_passages_to_the_system_message():
    passages = [Passage("Refunds", "Refunds take 5-10 days.")]
    messages = rag_messages(QUESTION, passages)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith(SYSTEM_PROMPT)
    assert "## Refunds\nRefunds take 5-10 days." in messages[0]["content"]
    assert rag_messages(QUESTION, []) == QUESTION["messages"][:2]


def test_retriever_refuses_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No policy document"):
        PolicyRetriever.from_file(tmp_path / "missing.md")


def test_evaluation_prompts_combine_few_shot_turns_and_policies():
    from ftlab.evaluation import build_prompts
    from ftlab.prompting import Passage, PolicyRetriever

    retriever = PolicyRetriever([Passage("Returns", "Return unworn items within 60 days.")])
    shot = make_example("cancel AC-11223 please", "cancel_order", "AC-11223", "neutral")
    example = make_example("can I return unworn boots?", "product_question", None, "neutral")
    (plain,) = build_prompts([example])
    (both,) = build_prompts([example], [shot], retriever, rag_k=1)
    assert plain == example["messages"][:2]
    assert "Return unworn items within 60 days." in both[0]["content"]
    assert [m["role"] for m in both] == ["system", "user", "assistant", "user"]
    assert both[-1]["content"] == "can I return unworn boots?"


def test_label_guide_names_exactly_the_task_labels():
    """The detailed prompt must offer every allowed value and no invented one."""
    import re

    from ftlab.prompting import LABEL_GUIDE
    from ftlab.support import INTENTS, SENTIMENTS, parse_answer

    intents = re.findall(r'^  - "([a-z_]+)":', LABEL_GUIDE, flags=re.MULTILINE)
    assert intents == list(INTENTS)
    for sentiment in SENTIMENTS:
        assert f'"{sentiment}"' in LABEL_GUIDE
    example_answer = parse_answer(LABEL_GUIDE.splitlines()[-1])
    assert example_answer == {
        "intent": "order_status",
        "order_id": "AC-12345",
        "sentiment": "negative",
    }


def test_label_guide_goes_into_the_system_message_before_policies():
    from ftlab.evaluation import build_prompts
    from ftlab.prompting import LABEL_GUIDE

    retriever = PolicyRetriever([Passage("Returns", "Return unworn items within 60 days.")])
    shot = make_example("cancel AC-11223 please", "cancel_order", "AC-11223", "neutral")
    example = make_example("can I return unworn boots?", "product_question", None, "neutral")
    (guided,) = build_prompts([example], label_guide=True)
    assert guided[0]["content"] == f"{SYSTEM_PROMPT}\n\n{LABEL_GUIDE}"
    assert guided[1:] == example["messages"][1:2]
    (everything,) = build_prompts([example], [shot], retriever, rag_k=1, label_guide=True)
    system = everything[0]["content"]
    assert system.index(LABEL_GUIDE) < system.index("Return unworn items")
    assert [m["role"] for m in everything] == ["system", "user", "assistant", "user"]
