"""Build the chat-format splits of the support-triage data set from the labelled sources.

The messages in `source/*.jsonl` were written and labelled by hand (see README.md);
this script only wraps each one in the course's system prompt and answer format,
checks the labels' form, and writes `train.jsonl`, `valid.jsonl` and `test.jsonl`.
It is deterministic: the same sources always give byte-identical files.

    python data/support/build.py          # rebuild the splits
    python data/support/build.py --check  # fail if the committed splits are stale
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

from ftlab.support import INTENTS, NEAR_COPY, ORDER_ID, SENTIMENTS, make_example
from ftlab.support import near_copies as similar_texts
from ftlab.validation import normalise

HERE = Path(__file__).resolve().parent
SOURCES = {
    "train": ["train_a.jsonl", "train_b.jsonl", "train_c.jsonl", "train_d.jsonl", "train_e.jsonl"],
    # Long e-mails and web-form messages: their writers already typed order numbers every way,
    # so they are not respelled. train_g.jsonl is the sarcasm round (see the datasheet): its
    # order numbers are typed as a customer would, so it is kept as typed too.
    "train_as_typed": ["train_f.jsonl", "train_g.jsonl"],
    "valid": ["valid.jsonl"],
    "test": ["test.jsonl"],
    # Outside messages, in no split (see the datasheet): short ones, long e-mails, and
    # messages written to trip a model up (sarcasm, instructions, pasted JSON, decoy numbers).
    "probe": ["probe.jsonl"],
    "probe_long": ["probe_long.jsonl"],
    "probe_edge": ["probe_edge.jsonl"],
    "probe_sarcasm": ["probe_sarcasm.jsonl"],
}
SEED = 20261125
# How customers type order numbers: AC-12345, ac-12345, "AC 12345" or AC12345.
ANY_ORDER_ID = re.compile(r"\bac[- ]?(\d{5})\b", re.IGNORECASE)


def read_source(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        problems = label_problems(record)
        if problems:
            raise SystemExit(f"{path.name}:{number}: " + "; ".join(problems))
        records.append(record)
    return records


def label_problems(record: dict) -> list[str]:
    """Form checks a hand-labelled record must pass (the meaning was checked by people)."""
    problems = []
    if set(record) != {"text", "intent", "order_id", "sentiment"}:
        problems.append(f"keys must be text, intent, order_id, sentiment, got {sorted(record)}")
        return problems
    if record["intent"] not in INTENTS:
        problems.append(f"unknown intent {record['intent']!r}")
    if record["sentiment"] not in SENTIMENTS:
        problems.append(f"unknown sentiment {record['sentiment']!r}")
    order_id, text = record["order_id"], record["text"]
    found = {f"AC-{digits}" for digits in ANY_ORDER_ID.findall(text)}
    if order_id is None and found:
        problems.append(f"order_id is null but the text mentions {sorted(found)}")
    if order_id is not None:
        if not ORDER_ID.fullmatch(order_id):
            problems.append(f"order_id {order_id!r} is not AC- plus 5 digits")
        elif order_id not in found:
            problems.append(f"order_id {order_id} does not appear in the text")
    return problems


HYPHENATED_ORDER_ID = re.compile(r"\b(ac)-(\d{5})\b", re.IGNORECASE)
# "AC 12345" is listed twice on purpose: customers type it about as often as the other two together.
OTHER_SPELLINGS = ("{ac} {digits}", "{ac}{digits}", "{ac} {digits}", "{ac_lower}{digits}")


def vary_order_id_spelling(records: list[dict], share: float = 0.2) -> list[dict]:
    """Respell a fixed share of the hyphenated order numbers as `AC 12345` or `AC12345`.

    The writers almost always typed the hyphen; real customers often do not, and a
    model that never saw the other spellings copies them into `order_id` as typed.
    The label stays canonical (`AC-12345`), which is what the model must learn.
    """
    chooser = random.Random(f"{SEED}-spelling")
    varied = []
    for record in sorted(records, key=lambda r: r["text"]):
        matches = HYPHENATED_ORDER_ID.findall(record["text"])
        if len(matches) == 1 and chooser.random() < share:
            ac, digits = matches[0]
            form = chooser.choice(OTHER_SPELLINGS)
            spelled = form.format(ac=ac, ac_lower=ac.lower(), digits=digits)
            record = {**record, "text": HYPHENATED_ORDER_ID.sub(spelled, record["text"])}
        varied.append(record)
    return varied


def near_copies(train: list[dict], held_out: list[dict]) -> list[tuple[str, str, float]]:
    """(training text, held-out text, similarity) for every pair at least NEAR_COPY alike.

    The rule (difflib's ratio, case and spacing ignored) lives in ftlab.support, so the data
    lab checks learners' new examples the same way.
    """
    return similar_texts([r["text"] for r in train], [r["text"] for r in held_out])


def build() -> dict[str, str]:
    """The text of each split file."""
    splits = {
        name: [r for f in files for r in read_source(HERE / "source" / f)]
        for name, files in SOURCES.items()
    }
    splits["train"] = vary_order_id_spelling(splits["train"]) + splits.pop("train_as_typed")
    seen: dict[str, str] = {}
    for name, records in splits.items():
        for record in records:
            key = normalise(record["text"])
            if key in seen:
                raise SystemExit(f"message repeated in {seen[key]} and {name}: {record['text']!r}")
            seen[key] = name
    held_out = [r for name, records in splits.items() if name != "train" for r in records]
    copies = near_copies(splits["train"], held_out)
    if copies:
        listing = "\n".join(f"  {score:.2f}  {a!r}\n        {b!r}" for a, b, score in copies)
        raise SystemExit(
            f"{len(copies)} training messages are near copies of held-out ones "
            f"(similarity >= {NEAR_COPY}); reword or drop them:\n{listing}"
        )
    texts = {}
    for name, records in splits.items():
        ordered = sorted(records, key=lambda r: r["text"])
        random.Random(f"{SEED}-{name}").shuffle(ordered)
        lines = [json.dumps(make_example(**r), ensure_ascii=False) for r in ordered]
        texts[name] = "\n".join(lines) + "\n"
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the files are current")
    args = parser.parse_args()
    stale = []
    for name, text in build().items():
        path = HERE / f"{name}.jsonl"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent.parent)}: {text.count(chr(10))} examples")
    if stale:
        print(f"stale: {', '.join(stale)}; run `python data/support/build.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
