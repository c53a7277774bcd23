"""Prompting baselines for the support task: a detailed prompt, few-shot prompts and RAG.

These are what fine-tuning is compared against in notebook 01: the same
[system, user] task, with the label guide spelled out in the system message,
K solved examples as earlier turns of the conversation, or the most relevant
store-policy sections in the system message.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ftlab.paths import data_dir
from ftlab.support import INTENTS, gold_answer, prompt_messages

# The labelling guide, written for the model: the task's own system prompt names the keys but
# not the values, so this is what "write a clearer prompt" means for the support task.
LABEL_GUIDE = "\n".join(
    [
        "Allowed values:",
        '- "intent" is what the customer wants done, exactly one of:',
        '  - "order_status": where an order is, when it arrives, tracking, whether it shipped '
        "(also when the customer is angry that it is late)",
        '  - "return_request": send an item back, exchange it or get a replacement',
        '  - "refund_status": the refund for an item already returned has not arrived, '
        "or when it will",
        '  - "cancel_order": stop or cancel an order',
        '  - "change_address": change where an order is delivered',
        '  - "product_question": a question before or about buying: features, sizes, materials, '
        "stock, colours, care, shipping options and times, store policies",
        '  - "complaint": a problem with a product or the service, without asking for a return, '
        "refund, cancellation or address change",
        '  - "other": anything else: thanks or praise with no request, jobs, sponsorship, '
        "greetings, unrelated messages",
        '- "order_id" is the order number written as "AC-" and five digits in capitals (the '
        'customer may type "ac 12345"; answer "AC-12345"), or null if the message has none.',
        '- "sentiment" is the customer\'s tone: "positive" (thanks, praise, delight), "negative" '
        '(anger, frustration, disappointment), otherwise "neutral".',
        "",
        "Answer with the JSON object alone, on one line, for example:",
        '{"intent": "order_status", "order_id": "AC-12345", "sentiment": "negative"}',
    ]
)


def _split_system(messages: Sequence[dict]) -> tuple[dict | None, list[dict]]:
    """(the leading system message or None, the messages after it)."""
    if messages and messages[0]["role"] == "system":
        return messages[0], list(messages[1:])
    return None, list(messages)


def _add_to_system(messages: Sequence[dict], text: str) -> list[dict]:
    """A copy of a prompt with `text` appended to its leading system message (or, in a
    prompt without one, as a new system message at the start)."""
    system, rest = _split_system(messages)
    content = text if system is None else f"{system['content']}\n\n{text}"
    return [{"role": "system", "content": content}, *rest]


def with_label_guide(messages: Sequence[dict]) -> list[dict]:
    """A copy of a prompt with `LABEL_GUIDE` appended to its (first) system message."""
    return _add_to_system(messages, LABEL_GUIDE)


def support_intent(example: dict) -> Hashable:
    """The intent of a support example's gold answer."""
    return gold_answer(example).get("intent")


def pick_shots(
    train_examples: Sequence[dict], k: int, label: Callable[[dict], Hashable] = support_intent
) -> list[dict]:
    """K training examples covering as many different labels as possible, deterministically:
    intents for the support task; for another task, any `label`, such as the answer's text.

    Round-robin over the labels (the support intents in their fixed order, then others in
    the order they first appear), taking the earliest unused example of each, so the same
    file always gives the same shots.
    """
    if k <= 0:
        return []
    by_intent: dict[Hashable, list[dict]] = {}
    for example in train_examples:
        by_intent.setdefault(label(example), []).append(example)
    order = [i for i in INTENTS if i in by_intent] + [i for i in by_intent if i not in INTENTS]
    shots: list[dict] = []
    rank = 0
    while len(shots) < k and any(rank < len(by_intent[i]) for i in order):
        shots += [by_intent[i][rank] for i in order if rank < len(by_intent[i])]
        rank += 1
    return shots[:k]


def few_shot_messages(example: dict, shots: Sequence[dict]) -> list[dict]:
    """The example's prompt with each shot as an earlier user/assistant exchange: after its
    system message if it has one, else at the start.

    A shot is its last user message and its answer (the last assistant message).
    """
    system, rest = _split_system(prompt_messages(example))
    turns = []
    for shot in shots:
        question = next(m for m in reversed(prompt_messages(shot)) if m["role"] == "user")
        answer = next(m for m in reversed(shot["messages"]) if m["role"] == "assistant")
        turns += [
            {"role": "user", "content": question["content"]},
            {"role": "assistant", "content": answer["content"]},
        ]
    return [*([system] if system is not None else []), *turns, *rest]


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    score: float = 0.0

    def render(self) -> str:
        return f"## {self.title}\n{self.text}"


def add_passages(messages: Sequence[dict], passages: Sequence[Passage]) -> list[dict]:
    """A copy of a prompt with the passages appended to its (first) system message (or, in
    a prompt without one, as a new system message at the start)."""
    if not passages:
        return list(messages)
    context = "\n\n".join(p.render() for p in passages)
    return _add_to_system(messages, f"Relevant store policies:\n\n{context}")


def rag_messages(example: dict, passages: Sequence[Passage]) -> list[dict]:
    """The example's prompt with the retrieved passages appended to the system message."""
    return add_passages(prompt_messages(example), passages)


TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an and are as at be but by can do for from has have i if in is it its me my not of on "
    "or our so that the this to was we what when where which will with you your".split()
)


def tokens(text: str) -> list[str]:
    """Lower-case word tokens without stop words (a light stemmer strips a plural 's')."""
    words = [w for w in TOKEN.findall(text.lower()) if w not in STOPWORDS]
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def markdown_sections(text: str) -> list[Passage]:
    """Split markdown into sections at its headings, of any level (text before the first
    heading is a section of its own)."""
    sections, title, lines = [], "Introduction", []
    for line in text.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*)", line)
        if heading:
            if "".join(lines).strip():
                sections.append(Passage(title, "\n".join(lines).strip()))
            title, lines = heading.group(1).strip(), []
        else:
            lines.append(line)
    if "".join(lines).strip():
        sections.append(Passage(title, "\n".join(lines).strip()))
    return sections


class PolicyRetriever:
    """BM25 search over the sections of a markdown policy document, in pure Python.

    BM25 scores a section by how often the query's words occur in it, weighting
    rare words up (idf) and long sections down, and is a strong simple baseline.
    """

    def __init__(self, passages: Sequence[Passage], k1: float = 1.5, b: float = 0.75) -> None:
        if not passages:
            raise ValueError("PolicyRetriever needs at least one passage to search.")
        self.passages = list(passages)
        self.k1, self.b = k1, b
        self.docs = [Counter(tokens(f"{p.title} {p.text}")) for p in self.passages]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.average = sum(self.lengths) / len(self.lengths)
        frequency = Counter(word for doc in self.docs for word in doc)
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in frequency.items()}

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> PolicyRetriever:
        """Index a markdown file (default: the course's `data/support/policies.md`)."""
        path = Path(path) if path is not None else data_dir() / "support" / "policies.md"
        if not path.is_file():
            raise FileNotFoundError(f"No policy document at {path}. Fix: pass the markdown path.")
        return cls(markdown_sections(path.read_text(encoding="utf-8")))

    def score(self, query: str) -> list[float]:
        words = tokens(query)
        scores = []
        for doc, length in zip(self.docs, self.lengths, strict=True):
            norm = self.k1 * (1 - self.b + self.b * length / self.average)
            scores.append(
                sum(
                    self.idf[w] * doc[w] * (self.k1 + 1) / (doc[w] + norm)
                    for w in words
                    if w in doc
                )
            )
        return scores

    def search(self, query: str, k: int = 2) -> list[Passage]:
        """The `k` best-matching sections (only those sharing at least one word with the query)."""
        scores = self.score(query)
        best = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        return [
            Passage(self.passages[i].title, self.passages[i].text, scores[i])
            for i in best
            if scores[i] > 0
        ]
