"""Write the deliberately broken data files of the data lab, and their README.

Each file teaches one family of mistake, made the way people really make it
(str() instead of json.dumps, "bot" for "assistant", a file saved from Excel as
Windows-1252, ...). Every other line is a sound support-triage example, so the
checker's report points at exactly the broken lines. `EXPECTED` records, for
each file, the (line, code) pairs `ftlab validate` must report; the tests hold
the checker to it, and README.md is written from it.

    python data/broken/make_broken.py          # rewrite the files and README.md
    python data/broken/make_broken.py --check  # fail if they are stale
"""

from __future__ import annotations

import argparse
import codecs
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ftlab.support import SYSTEM_PROMPT, make_example

HERE = Path(__file__).resolve().parent

# Realistic customer messages and their labels (text, intent, order_id, sentiment).
MESSAGES = [
    (
        "Hi, where is order AC-31877? The tracking page hasn't changed since Monday.",
        "order_status",
        "AC-31877",
        "neutral",
    ),
    (
        "I want to send back the hiking boots from ac-40211, they're a size too small.",
        "return_request",
        "AC-40211",
        "neutral",
    ),
    (
        "Returned the tent two weeks ago and still no refund. Order AC-55290. Getting annoyed.",
        "refund_status",
        "AC-55290",
        "negative",
    ),
    (
        "please cancel AC-61024 before it ships, I ordered the wrong colour",
        "cancel_order",
        "AC-61024",
        "neutral",
    ),
    (
        "Can you deliver AC-72315 to my office instead? 14 Harbour Street, Leeds.",
        "change_address",
        "AC-72315",
        "neutral",
    ),
    (
        "Is the Alpine rain jacket fully waterproof or just water resistant?",
        "product_question",
        None,
        "neutral",
    ),
    (
        "The zip on my new backpack broke on the first day. Really poor quality.",
        "complaint",
        None,
        "negative",
    ),
    (
        "Just wanted to say the customer service team was brilliant yesterday, thank you!",
        "other",
        None,
        "positive",
    ),
    (
        "My parcel AC-18842 says delivered but it's not here. What is going on??",
        "order_status",
        "AC-18842",
        "negative",
    ),
    (
        "Do you ship to Norway, and how long does it usually take?",
        "product_question",
        None,
        "neutral",
    ),
    (
        "Love the fleece I got in AC-29930! Can I exchange it for a medium though?",
        "return_request",
        "AC-29930",
        "positive",
    ),
    ("Waited 40 minutes on the phone and the agent hung up on me.", "complaint", None, "negative"),
    ("Are you hiring for the summer at the Bristol store?", "other", None, "neutral"),
    (
        "When will the refund for AC-83391 show up on my card? The courier collected it Friday.",
        "refund_status",
        "AC-83391",
        "neutral",
    ),
    (
        "Cancel my order AC-90517 please. Found it cheaper elsewhere, sorry!",
        "cancel_order",
        "AC-90517",
        "neutral",
    ),
    (
        "I moved last week - can AC-24468 go to my new flat? 7 Mill Lane, York.",
        "change_address",
        "AC-24468",
        "neutral",
    ),
    (
        "Thanks so much, AC-37702 arrived a day early and the kids love the sleeping bags",
        "other",
        "AC-37702",
        "positive",
    ),
    ("the stove in AC-45583 leaks gas at the valve. not ok.", "complaint", "AC-45583", "negative"),
    (
        "Has AC-58126 shipped yet? I need it before Saturday's trip.",
        "order_status",
        "AC-58126",
        "neutral",
    ),
]
# For the multi-turn examples: a first message without the order number, which comes next.
FORGOT_NUMBER = [
    (
        "Hi, where is my order? The tracking page hasn't changed since Monday.",
        "order_status",
        "AC-31877",
        "neutral",
    ),
    (
        "I'd like to return the boots I bought, they're too small.",
        "return_request",
        "AC-40211",
        "neutral",
    ),
    (
        "Still no refund for the tent I sent back two weeks ago. Not impressed.",
        "refund_status",
        "AC-55290",
        "negative",
    ),
    ("Please cancel my order before it ships!", "cancel_order", "AC-61024", "neutral"),
    (
        "Can my parcel go to my office instead? 14 Harbour Street, Leeds.",
        "change_address",
        "AC-72315",
        "neutral",
    ),
    (
        "My order says delivered but nothing came. What is going on??",
        "order_status",
        "AC-18842",
        "negative",
    ),
    (
        "I love the fleece, but could I swap it for a medium?",
        "return_request",
        "AC-29930",
        "positive",
    ),
    (
        "When will my refund show up? The courier collected the return on Friday.",
        "refund_status",
        "AC-83391",
        "neutral",
    ),
    (
        "Cancel my order please, found it cheaper elsewhere, sorry!",
        "cancel_order",
        "AC-90517",
        "neutral",
    ),
    (
        "I moved last week - can my order go to my new flat? 7 Mill Lane, York.",
        "change_address",
        "AC-24468",
        "neutral",
    ),
    (
        "Has my order shipped yet? I need it before Saturday's trip.",
        "order_status",
        "AC-58126",
        "neutral",
    ),
    (
        "The stove you sent leaks gas at the valve, I want a replacement.",
        "return_request",
        "AC-45583",
        "negative",
    ),
]
# For the Windows-1252 file: messages with accents, a pound sign and curly quotes.
ACCENTED = [
    (
        "Bonjour, ma commande AC-50713 n’est pas arrivée. Où est-elle ?",
        "order_status",
        "AC-50713",
        "neutral",
    ),
    (
        "The £45 gift card from AC-66120 doesn’t work at checkout.",
        "complaint",
        "AC-66120",
        "negative",
    ),
    (
        "Könnt ihr AC-12958 an meine neue Adresse schicken? Müllerstraße 5, München.",
        "change_address",
        "AC-12958",
        "neutral",
    ),
    ("Is the “Summit” down jacket machine washable?", "product_question", None, "neutral"),
]


def example(i: int) -> dict:
    return make_example(*MESSAGES[i % len(MESSAGES)])


def line(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def answer(i: int) -> str:
    return example(i)["messages"][2]["content"]


def conversation(i: int, **reply_keys: object) -> list[dict]:
    """A two-turn example: the customer forgets the order number, the assistant asks for it.

    `first__weight=0` sets `weight` on the first reply, `last__weight=1` on the last.
    """
    text, intent, order_id, sentiment = FORGOT_NUMBER[i % len(FORGOT_NUMBER)]
    first = {"role": "assistant", "content": "Could you give me your order number, please?"}
    last = {
        "role": "assistant",
        "content": json.dumps({"intent": intent, "order_id": order_id, "sentiment": sentiment}),
    }
    for key, value in reply_keys.items():
        target, _, name = key.partition("__")
        (first if target == "first" else last)[name] = value
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": text},
        first,
        {"role": "user", "content": f"Sorry! It's {order_id}."},
        last,
    ]


@dataclass
class Broken:
    """One broken file: its lines, what the checker must say, and what to tell the learner."""

    name: str
    summary: str
    lines: list[str] = field(default_factory=list)
    expected: list[tuple[int | None, str]] = field(default_factory=list)
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # where, what, fix
    encoding: str = "utf-8"
    bom: bool = False
    newline: str = "\n"
    # What a careful repair keeps: how many examples, and the labels of those whose answer
    # is missing (by user message), which the learner must write from the guide.
    savable: int = 0
    hand_labels: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)

    def good(self, i: int, value: dict | None = None) -> None:
        self.lines.append(line(value if value is not None else example(i)))
        self.savable += 1

    def bad(self, text: str, codes: list[str], what: str, fix: str, savable: int = 1) -> None:
        """A broken line; `savable` is how many examples a careful repair gets from it."""
        self.lines.append(text)
        self.savable += savable
        number = len(self.lines)
        self.expected += [(number, code) for code in codes]
        self.notes.append((f"line {number}", what, fix))

    def file_level(self, code: str, what: str, fix: str) -> None:
        self.expected.append((None, code))
        self.notes.append(("file", what, fix))

    def content(self) -> bytes:
        text = "".join(f"{entry}{self.newline}" for entry in self.lines)
        data = text.encode(self.encoding)
        return (codecs.BOM_UTF8 + data) if self.bom else data


def bad_json() -> Broken:
    f = Broken("bad_json.jsonl", "JSON syntax: lines that are not one complete JSON object.")
    for i in range(3):
        f.good(i)
    f.bad(
        line(example(3))[:-1] + ",}",
        ["invalid_json"],
        "a trailing comma before the closing `}` (JSON allows none)",
        "delete the comma; write lines with `json.dumps`, which never adds one",
    )
    for i in range(4, 6):
        f.good(i)
    f.bad(
        str(example(6)),
        ["invalid_json"],
        "written with `str(example)`: Python's single quotes, not JSON",
        "write each line with `json.dumps(example)`",
    )
    for i in range(7, 9):
        f.good(i)
    full = line(example(9))
    f.bad(
        full[: len(full) * 2 // 3],
        ["invalid_json"],
        "the line is cut off in the middle of a string (a copy-paste that lost the end)",
        "restore the rest of the example, or delete the line",
        savable=0,
    )
    f.good(10)
    f.bad(
        line(example(11)) + " " + line(example(12)),
        ["invalid_json"],
        "two examples pasted onto one line",
        "put the second object on its own line",
        savable=2,
    )
    f.good(13)
    return f


def wrong_roles() -> Broken:
    f = Broken("wrong_roles.jsonl", "Roles: names the chat format does not know, or none.")
    f.good(0)
    e = example(1)
    e["messages"][2]["role"] = "bot"
    f.bad(
        line(e),
        ["unknown_role"],
        'the reply has role `"bot"`',
        'use `"assistant"` for the model\'s replies',
    )
    for i in range(2, 4):
        f.good(i)
    e = example(4)
    e["messages"][1]["role"] = "human"
    f.bad(line(e), ["unknown_role"], 'the customer\'s message has role `"human"`', 'use `"user"`')
    f.good(5)
    f.good(6)
    e = example(7)
    del e["messages"][1]["role"]
    f.bad(
        line(e),
        ["missing_role"],
        "the user message (`messages[1]`) has no role",
        'add `"role": "user"`',
    )
    e = example(8)
    e["messages"][1] = {"user": e["messages"][1]["content"]}
    f.bad(
        line(e),
        ["unrecognized_key", "missing_role", "missing_content"],
        'the user message is written `{"user": "..."}`',
        'write `{"role": "user", "content": "..."}`',
    )
    f.good(9)
    e = example(10)
    e["messages"][2]["role"] = "Assistant"
    f.bad(
        line(e),
        ["unknown_role"],
        'role `"Assistant"` with a capital A (roles are case-sensitive)',
        'write `"assistant"` in lower case',
    )
    f.good(11)
    return f


def missing_assistant() -> Broken:
    f = Broken("missing_assistant.jsonl", "The answer to learn is missing, misplaced, or not last.")
    for i in range(2):
        f.good(i)
    e = example(2)
    del e["messages"][2]
    f.hand_labels[MESSAGES[2][0]] = MESSAGES[2][1:]
    f.bad(
        line(e),
        ["no_assistant_message", "last_not_assistant"],
        "system and user messages only: nothing to learn",
        "add the wanted reply as the last message, with role `assistant`",
    )
    for i in range(3, 5):
        f.good(i)
    e = example(5)
    reply = e["messages"].pop()
    e["answer"] = reply["content"]
    f.bad(
        line(e),
        ["unrecognized_key", "no_assistant_message", "last_not_assistant"],
        'the answer is in a top-level `"answer"` key, outside `messages`',
        'move it into `messages` as `{"role": "assistant", "content": ...}`',
    )
    for i in range(6, 8):
        f.good(i)
    e = example(8)
    e["messages"][2] = {"role": "assistant", "text": e["messages"][2]["content"]}
    f.bad(
        line(e),
        ["unrecognized_key", "missing_content"],
        'the reply\'s text is under `"text"` instead of `"content"`',
        'rename the key to `"content"`',
    )
    f.good(9)
    e = example(10)
    e["messages"] = [e["messages"][0], e["messages"][2], e["messages"][1]]
    f.bad(
        line(e),
        ["last_not_assistant"],
        "the reply comes before the customer's message (a warning: the file is still "
        "usable, but this example teaches answering before the question)",
        "put the messages in order: system, user, assistant",
    )
    for i in range(11, 13):
        f.good(i)
    return f


def bad_weights() -> Broken:
    f = Broken(
        "bad_weights.jsonl",
        "`weight` (which replies of a multi-turn example to learn) used wrongly.",
    )
    f.good(0, {"messages": conversation(0, first__weight=0)})
    f.good(1, {"messages": conversation(1, first__weight=0)})
    f.bad(
        line({"messages": conversation(2, first__weight="0")}),
        ["invalid_weight"],
        'weight is the string `"0"`',
        "write the number `0` (no quotes)",
    )
    f.good(3, {"messages": conversation(3, first__weight=0, last__weight=1)})
    f.bad(
        line({"messages": conversation(4, first__weight=0.5)}),
        ["invalid_weight"],
        "weight `0.5`: only 0 (skip) or 1 (learn) are allowed",
        "choose 0 or 1: this reply asks for the order number, which is never learned, so 0",
    )
    f.good(5, {"messages": conversation(5, first__weight=0)})
    e = {"messages": conversation(6, first__weight=0)}
    e["messages"][1]["weight"] = 0
    f.bad(
        line(e),
        ["weight_not_on_assistant"],
        "weight on a user message (user messages are never learned)",
        "remove the key",
    )
    f.good(7, {"messages": conversation(7, first__weight=0)})
    f.bad(
        line({"messages": conversation(8, first__weight=True)}),
        ["invalid_weight"],
        "weight `true`",
        "write `0`: this reply asks for the order number, which is never learned",
    )
    f.bad(
        line({"messages": conversation(9, first__weight=0, last__weight=0)}),
        ["no_assistant_message"],
        "every reply has weight 0, so nothing is learned",
        "set weight 1 on the final reply (or remove its weight)",
    )
    f.good(10, {"messages": conversation(10, first__weight=0)})
    f.good(11, {"messages": conversation(11, first__weight=0)})
    return f


def too_few() -> Broken:
    f = Broken("too_few.jsonl", "Too few examples: each one is fine, but there are only 7.")
    for i in range(7):
        f.good(i)
    f.file_level(
        "too_few_examples",
        "7 examples; OpenAI refuses fewer than 10",
        "write more examples: 50 to 100 varied ones is a sensible start",
    )
    return f


def latin1() -> Broken:
    f = Broken(
        "latin1.jsonl",
        "Encoding: saved as Windows-1252, not UTF-8. Only "
        "the lines with accents, a pound sign or curly quotes fail.",
        encoding="cp1252",
    )
    accented = iter(ACCENTED)
    for i in range(12):
        if i in (2, 5, 8, 10):
            f.bad(
                line(make_example(*next(accented))),
                ["invalid_encoding"],
                "a character saved as one Windows-1252 byte (`’`, `é`, `£`, `ü` or `“`)",
                "save the whole file as UTF-8 (Excel: *CSV UTF-8*; Python: "
                "`open(path, 'w', encoding='utf-8')`)",
            )
        else:
            f.good(i)
    return f


def mixed_problems() -> Broken:
    f = Broken(
        "mixed_problems.jsonl",
        "A file exported from a spreadsheet on Windows and edited "
        "by hand: one of each of the remaining problems. CRLF line ends are fine.",
        bom=True,
        newline="\r\n",
    )
    f.expected.append((1, "bom"))
    f.notes.append(
        (
            "line 1",
            "the file starts with a UTF-8 byte order mark (a warning)",
            "save as UTF-8 without BOM",
        )
    )
    f.good(0)
    f.good(1)
    f.bad("", ["blank_line"], "an empty line (a warning: it is skipped)", "delete it", savable=0)
    f.good(2)
    f.bad(
        line({"prompt": MESSAGES[3][0], "completion": answer(3)}),
        ["unrecognized_key", "unrecognized_key", "missing_messages"],
        "the legacy prompt/completion format",
        'convert to `{"messages": [system, user, assistant]}`',
    )
    f.bad(
        line({"messages": json.dumps(example(4)["messages"])}),
        ["messages_not_list"],
        "`messages` is a string holding JSON (encoded twice)",
        "put the list itself there, not `json.dumps` of it",
    )
    f.good(5)
    f.bad(
        line({"messages": []}),
        ["empty_messages"],
        "an example with no messages",
        "fill it in or delete the line",
        savable=0,
    )
    e = example(6)
    e["messages"][1] = e["messages"][1]["content"]
    f.bad(
        line(e),
        ["message_not_object"],
        "the user message is a bare string",
        'write `{"role": "user", "content": "..."}`',
    )
    e = example(7)
    e["messages"][1]["content"] = [{"type": "text", "text": e["messages"][1]["content"]}]
    f.bad(
        line(e),
        ["invalid_content"],
        "content given as a list of parts",
        "give the text as one string",
    )
    e = example(9)
    e["messages"][2]["content"] = None
    f.hand_labels[MESSAGES[9][0]] = MESSAGES[9][1:]
    f.bad(
        line(e),
        ["invalid_content"],
        "the reply's content is null (an empty spreadsheet cell)",
        "fill in the answer",
    )
    f.bad(
        line(example(8)["messages"]),
        ["not_an_object"],
        'the line is the list of messages, without the `{"messages": ...}` around it',
        'wrap it: `{"messages": [...]}`',
    )
    f.good(10)
    first = f.lines.index(line(example(1))) + 1
    f.bad(
        line(example(1)),
        ["duplicate_example"],
        f"the same example as line {first} (a warning)",
        "delete one copy",
        savable=0,
    )
    e = example(11)
    del e["messages"][0]
    f.bad(
        line(e),
        ["no_system_message"],
        "no system message (a warning)",
        "add the system prompt you will use with the model",
    )
    for i in range(12, 15):
        f.good(i)
    return f


FILES = [bad_json, wrong_roles, missing_assistant, bad_weights, too_few, latin1, mixed_problems]


def build() -> dict[str, Broken]:
    return {broken.name: broken for broken in (make() for make in FILES)}


EXPECTED: dict[str, list[tuple[int | None, str]]] = {
    name: sorted(broken.expected, key=lambda e: (e[0] is None, e[0] or 0, e[1]))
    for name, broken in build().items()
}


def readme(files: dict[str, Broken]) -> str:
    out = [
        "# Broken data files for the data lab",
        "",
        "Each file shows one family of mistake, made the way people really make it. The",
        "other lines are sound support-triage examples. Run the checker on a file and",
        "compare its report with the notes below:",
        "",
        "    ftlab validate data/broken/wrong_roles.jsonl",
        "",
        "Every file here is invalid (`ftlab validate` exits 1). Regenerate them, and",
        "this README, with `python data/broken/make_broken.py` (deterministic).",
        "",
    ]
    for broken in files.values():
        codes = sorted({code for _, code in broken.expected})
        out += [
            f"## `{broken.name}`",
            "",
            broken.summary,
            "",
            f"Codes: {', '.join(f'`{c}`' for c in codes)}",
            "",
            "| where | what is wrong | how to fix it |",
            "| --- | --- | --- |",
        ]
        out += [f"| {where} | {what} | {fix} |" for where, what, fix in broken.notes]
        out.append("")
    return "\n".join(out)


def outputs() -> dict[str, bytes]:
    files = build()
    result = {name: broken.content() for name, broken in files.items()}
    result["README.md"] = readme(files).encode("utf-8")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args()
    stale = [
        name
        for name, data in outputs().items()
        if not (HERE / name).is_file() or (HERE / name).read_bytes() != data
    ]
    if args.check:
        if stale:
            print(f"stale: {', '.join(stale)}; run python data/broken/make_broken.py")
            return 1
        return 0
    for name, data in outputs().items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(outputs())} files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
