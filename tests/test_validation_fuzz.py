"""Fuzzing the data checker: no bytes, and no mangled example, may make it raise."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftlab.support import make_example
from ftlab.validation import ERROR_CODES, WARNING_CODES, cached_tokenizer, validate_bytes

# derandomize: the same inputs on every run, so a failure in CI can be replayed as it was (and
# a run passes or fails by the code alone). Raise max_examples locally to explore further.
FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
N = 12
EXAMPLES = [
    make_example(
        f"Hi, order AC-{20000 + i} has not arrived, it's been {i + 2} days.",
        "order_status",
        f"AC-{20000 + i}",
        "negative",
    )
    for i in range(N)
]
VALID = b"".join(json.dumps(e).encode("utf-8") + b"\n" for e in EXAMPLES)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def assert_sound(report, n_lines: int) -> None:
    """What every report must satisfy, whatever the input."""
    assert isinstance(report.valid, bool)
    assert report.valid == (not report.errors)
    for problem in report.problems:
        assert problem.code in ERROR_CODES or problem.code in WARNING_CODES
        assert problem.line is None or 1 <= problem.line <= n_lines
        problem.message.encode("utf-8")  # printable: no lone surrogates
    assert len(report.examples) == len(report.example_lines)
    data = json.loads(report.to_json())
    assert set(data) == {"valid", "errors", "warnings", "stats"}
    report.format_text().encode("utf-8")
    report._repr_html_().encode("utf-8")


def lines_in(data: bytes) -> int:
    ends = b"\n" if b"\n" in data else b"\r"  # a file with no LF ends its lines with CR
    return max(1, data.count(ends) + 1)


@FAST
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data):
    assert_sound(validate_bytes(data, count_tokens=False), lines_in(data))


@FAST
@given(st.lists(st.text(max_size=200), max_size=15))
def test_random_text_lines_never_raise(lines):
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    assert_sound(validate_bytes(data, count_tokens=False), lines_in(data))


BYTE_EDIT = st.tuples(
    st.sampled_from(["delete", "insert", "flip"]),
    st.integers(0, len(VALID) - 1),
    st.integers(0, 255),
)


@FAST
@given(st.lists(BYTE_EDIT, min_size=1, max_size=8))
def test_byte_mutations_of_a_valid_file_never_raise(edits):
    data = bytearray(VALID)
    for kind, position, value in edits:
        position %= max(1, len(data))
        if kind == "delete" and data:
            del data[position]
        elif kind == "insert":
            data.insert(position, value)
        elif data:
            data[position] ^= 1 << (value % 8)
    report = validate_bytes(bytes(data), count_tokens=False)
    assert_sound(report, lines_in(bytes(data)))


def mutate(draw, example: dict) -> None:
    """Walk into the example and drop a key, retype a value, or add a stray key there."""
    container: dict | list = example
    while True:
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = container[key]
        if isinstance(child, dict | list) and draw(st.booleans()):
            container = child
            continue
        action = draw(st.sampled_from(["drop", "retype", "add"]))
        if action == "drop":
            del container[key]
        elif action == "retype":
            container[key] = draw(JSON_VALUES)
        elif isinstance(container, dict):
            container[draw(st.text(max_size=12))] = draw(JSON_VALUES)
        else:
            container.append(draw(JSON_VALUES))
        return


def mutated_file(data) -> tuple[bytes, set[int]]:
    """The valid file with a few examples mangled, and the lines left untouched."""
    examples = copy.deepcopy(EXAMPLES)
    touched = set(data.draw(st.lists(st.integers(0, N - 1), min_size=1, max_size=4)))
    for index in touched:
        for _ in range(data.draw(st.integers(1, 3))):
            mutate(data.draw, examples[index])
    text = "\n".join(json.dumps(e) for e in examples) + "\n"
    return text.encode("utf-8", "surrogatepass"), {i + 1 for i in range(N) if i not in touched}


@FAST
@given(st.data())
def test_structural_mutations_never_raise_and_spare_other_lines(data):
    content, untouched = mutated_file(data)
    report = validate_bytes(content, count_tokens=False)
    assert_sound(report, N)
    assert untouched <= set(report.example_lines)


@settings(FAST, max_examples=25)
@given(st.data())
def test_structural_mutations_with_token_statistics(data):
    content, _ = mutated_file(data)
    report = validate_bytes(content, tokenizer=cached_tokenizer())
    assert_sound(report, N)
    if report.examples:
        assert report.stats["total_tokens"] > 0
