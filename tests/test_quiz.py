"""The quiz: banks, grading, the notebook widget driven like a learner, progress, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ftlab.quiz import BankError, ProgressStore, ProgressWarning, list_banks, load_bank, show_quiz
from ftlab.quiz.bank import parse_number
from ftlab.quiz.progress import RECORD_FIELDS

NOTEBOOK_BANKS = [
    "00_setup",
    "01_what_is_fine_tuning",
    "02_preparing_data",
    "03_local_lora",
    "04_api_fine_tuning",
    "05_evaluate_and_deploy",
]
FTLAB = Path(sys.executable).with_name("ftlab")

MIXED_BANK = [
    {
        "question": "Pick B.",
        "type": "multiple_choice",
        "answers": [
            {"answer": "A", "correct": False, "feedback": "A is the first letter."},
            {"answer": "B", "correct": True, "feedback": "B is what was asked for."},
            {"answer": "C", "correct": False, "feedback": "C comes after B."},
        ],
    },
    {
        "question": "Tick the even numbers.",
        "type": "many_choice",
        "answers": [
            {"answer": "2", "correct": True, "feedback": "2 is even."},
            {"answer": "3", "correct": False, "feedback": "3 is odd."},
            {"answer": "4", "correct": True, "feedback": "4 is even."},
        ],
    },
    {
        "question": "How many tokens?",
        "type": "numeric",
        "precision": 3,
        "answers": [
            {"type": "value", "value": 144000, "correct": True, "feedback": "Exactly 144,000."},
            {"type": "range", "range": [0, 100], "correct": False, "feedback": "Far too few."},
            {"type": "default", "feedback": "Multiply the three numbers."},
        ],
    },
]


# One question record of MIXED_BANK as ProgressStore.record writes it.
SAVED_NUMERIC = {
    "question": "How many tokens?",
    "attempts": 2,
    "last_answer": 144000.0,
    "correct": True,
    "ever_correct": True,
    "updated": "2026-11-25T20:50:00+00:00",
}


@pytest.fixture
def progress_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state" / "progress.json"
    monkeypatch.setenv("FTLAB_PROGRESS", str(path))
    return path


@pytest.fixture
def mixed_bank(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(MIXED_BANK))
    return path


# -- the shipped banks ---------------------------------------------------------------------------
def test_every_shipped_bank_loads_and_explains_every_option() -> None:
    assert set(NOTEBOOK_BANKS + ["quick_check"]) <= set(list_banks())
    for name in list_banks():
        bank = load_bank(name)
        for question in bank.questions:
            options = question.choices or question.numeric
            assert all(len(option.feedback.split()) >= 3 for option in options), (
                f"{name} question {question.index}: every option needs a real explanation"
            )


@pytest.mark.parametrize("name", NOTEBOOK_BANKS)
def test_notebook_banks_have_3_to_6_questions_and_a_numeric_one(name: str) -> None:
    types = [q.type for q in load_bank(name).questions]
    assert 3 <= len(types) <= 6, "a quiz closes a lesson: keep it short"
    assert "numeric" in types
    assert len(set(types)) >= 2, "mix the question types"


def test_quick_check_asks_what_fine_tuning_does() -> None:
    [question] = load_bank("quick_check").questions
    assert question.text == "What does fine-tuning do?"
    assert question.type == "multiple_choice" and len(question.choices) == 4
    right = question.choices[question.correct_choices[0]]
    assert "already-trained" in right.text and "your own examples" in right.text


def test_the_right_option_cannot_be_guessed_from_its_place_or_length() -> None:
    """Across the banks the right option is not always first, nor usually the longest."""
    singles = [q for name in list_banks() for q in load_bank(name).questions]
    singles = [q for q in singles if q.type == "multiple_choice"]
    places = [q.correct_choices[0] for q in singles]
    assert max(places.count(place) for place in set(places)) <= len(singles) / 2, places
    assert len(set(places)) >= 3, places
    longest = [
        q.index
        for q in singles
        if len(q.choices[q.correct_choices[0]].text) == max(len(c.text) for c in q.choices)
    ]
    assert len(longest) <= len(singles) / 3, f"the right option is the longest in {longest}"


def test_worked_numbers_in_the_banks_are_right() -> None:
    data_q = next(q for q in load_bank("02_preparing_data").questions if q.type == "numeric")
    assert data_q.grade(400 * 120 * 3).correct
    lora_q = next(q for q in load_bank("03_local_lora").questions if q.type == "numeric")
    assert lora_q.grade(8 * (1024 + 4096)).correct
    assert not lora_q.grade(1024 * 4096).correct


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (
            {
                "answers": [
                    {"answer": "x", "correct": True},
                    {"answer": "y", "correct": False, "feedback": "no"},
                ]
            },
            "answer 0 ('x'): \"feedback\" must explain",
        ),
        (
            {
                "answers": [
                    {"answer": "x", "correct": True, "feedback": "a"},
                    {"answer": "y", "correct": True, "feedback": "b"},
                ]
            },
            "needs exactly one correct option, has 2",
        ),
        ({"feeback": "typo"}, "unknown key(s) ['feeback']"),
        ({"type": "single"}, '"type" must be one of'),
    ],
)
def test_a_bad_bank_names_the_file_the_question_and_the_problem(
    tmp_path: Path, broken: dict, message: str
) -> None:
    questions = json.loads(json.dumps(MIXED_BANK))
    questions[0].update(broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(questions))
    with pytest.raises(BankError) as error:
        load_bank(path)
    assert f"{path}: question 0 ('Pick B.')" in str(error.value)
    assert message in str(error.value)


def test_numeric_question_without_a_default_answer_is_refused(tmp_path: Path) -> None:
    questions = json.loads(json.dumps(MIXED_BANK))
    questions[2]["answers"].pop()
    path = tmp_path / "no_default.json"
    path.write_text(json.dumps(questions))
    with pytest.raises(BankError, match=r"question 2 .*exactly one \{\"type\": \"default\""):
        load_bank(path)


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"question": "x",\n  }\n]')
    with pytest.raises(BankError, match=r"bad\.json: not valid JSON at line 3, column 3"):
        load_bank(path)


def test_unknown_bank_lists_the_available_ones() -> None:
    with pytest.raises(BankError, match=r"no quiz bank named 'nope' .*available: .*quick_check"):
        load_bank("nope")


# -- grading -------------------------------------------------------------------------------------
def test_numeric_grading_follows_jupyterquiz(mixed_bank: Path) -> None:
    question = load_bank(mixed_bank).questions[2]
    assert question.grade(144000).feedback == ("Exactly 144,000.",)
    assert question.grade(144049).correct, "precision 3 rounds to 3 significant digits"
    assert not question.grade(145000).correct
    assert question.grade(99.9).feedback == ("Far too few.",)
    assert question.grade(100).feedback == ("Multiply the three numbers.",), "ranges exclude hi"


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("144000", 144000.0),
        (" 144,000 ", 144000.0),
        ("1.5e3", 1500.0),
        ("3/4", 0.75),
        ("85%", 85.0),
        ("85 %", 85.0),
    ],
)
def test_parse_number_accepts_the_ways_people_write_numbers(text: str, number: float) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize(
    "text", ["", "twelve", "1/0", "nan", "inf", "1e999", "nan/1", "1e999/1", "inf/inf"]
)
def test_parse_number_rejects_non_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


def test_non_finite_answers_are_neither_graded_nor_saved(
    mixed_bank: Path, progress_file: Path
) -> None:
    question = load_bank(mixed_bank).questions[2]
    with pytest.raises(ValueError, match="must be a finite number"):
        question.grade(float("nan"))
    store = ProgressStore()
    store.record("mixed", 2, question.text, 144000.0, True)
    before = progress_file.read_bytes()
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        store.record("mixed", 2, question.text, float("inf"), False)
    assert progress_file.read_bytes() == before
    assert not list(progress_file.parent.glob(".progress.json.*.tmp"))


# -- the widget, driven like a learner ------------------------------------------------------------
def test_widget_shows_feedback_and_keeps_score(mixed_bank: Path, progress_file: Path) -> None:
    quiz = show_quiz(str(mixed_bank))
    single, many, numeric = quiz.questions
    assert quiz.score.value.endswith("Score: 0 / 3</div>")

    single.choose("A")
    single.check_button.click()
    assert single.feedback_text == "Not quite. A is the first letter."
    assert "ftlab-wrong" in single.feedback.value

    single.choose(1)
    single.check_button.click()
    assert single.feedback_text == "Correct! B is what was asked for."
    assert "ftlab-correct" in single.feedback.value

    many.choose(0)
    many.check_button.click()
    assert many.feedback_text.startswith("Right so far.")
    assert "ftlab-note" in many.feedback.value
    assert "1 more to find" in many.feedback_text
    many.choose("2", "4")
    many.check_button.click()
    assert many.feedback_text == "Correct!\n- 2: 2 is even.\n- 4: 4 is even."

    numeric.number.value = "144,000"
    numeric.check_button.click()
    assert numeric.feedback_text == "Correct! Exactly 144,000."
    assert "Score: 3 / 3" in quiz.score.value

    single.choose(2)
    single.check_button.click()
    assert "Score: 2 / 3" in quiz.score.value


def test_checking_without_an_answer_asks_for_one_and_records_nothing(
    mixed_bank: Path, progress_file: Path
) -> None:
    quiz = show_quiz(str(mixed_bank))
    quiz.questions[0].check_button.click()
    assert quiz.questions[0].feedback_text == "Choose an answer first, then press Check."
    quiz.questions[2].number.value = "lots"
    quiz.questions[2].check_button.click()
    assert "'lots' is not a number" in quiz.questions[2].feedback_text
    assert not progress_file.exists()


def test_choose_rejects_an_option_that_does_not_exist(mixed_bank: Path) -> None:
    quiz = show_quiz(str(mixed_bank), progress=False)
    with pytest.raises(ValueError, match=r"no option 'D'; the options are \['A', 'B', 'C'\]"):
        quiz.questions[0].choose("D")


def test_progress_survives_a_restart(mixed_bank: Path, progress_file: Path) -> None:
    first = show_quiz(str(mixed_bank))
    first.questions[0].choose(0)
    first.questions[0].check()
    first.questions[0].choose(1)
    first.questions[0].check()
    first.questions[2].choose(144000)
    first.questions[2].check()

    again = show_quiz(str(mixed_bank))  # a new widget, as after a kernel restart
    assert again.questions[0].radio.value == 1
    assert again.questions[0].feedback_text.startswith("Correct! B is what was asked for.")
    assert "2 attempts so far" in again.questions[0].feedback_text
    assert again.questions[2].number.value == "144,000"
    assert again.questions[1].feedback.value == ""
    assert "Score: 2 / 3" in again.score.value

    record = ProgressStore().bank("mixed")["0"]
    assert record["attempts"] == 2 and record["last_answer"] == 1 and record["correct"]
    [summary] = ProgressStore().summary()
    assert (summary.bank, summary.answered, summary.correct, summary.attempts) == ("mixed", 2, 2, 3)


def test_a_corrupt_progress_file_is_moved_aside_and_the_quiz_still_works(
    mixed_bank: Path, progress_file: Path
) -> None:
    progress_file.parent.mkdir(parents=True)
    progress_file.write_text('{"banks": {"mixed": {"0": {"attem')
    with pytest.warns(ProgressWarning, match="was unreadable .* moved it to .*corrupt-"):
        quiz = show_quiz(str(mixed_bank))
    [kept] = progress_file.parent.glob("progress.json.corrupt-*")
    assert kept.read_text() == '{"banks": {"mixed": {"0": {"attem'
    quiz.questions[0].choose(1)
    quiz.questions[0].check()
    assert quiz.questions[0].feedback_text == "Correct! B is what was asked for."
    assert json.loads(progress_file.read_text())["banks"]["mixed"]["0"]["correct"] is True


def test_a_progress_file_that_is_not_utf8_is_moved_aside(progress_file: Path) -> None:
    progress_file.parent.mkdir(parents=True)
    progress_file.write_bytes(b"\xff\xfe{}")
    with pytest.warns(ProgressWarning, match=r"was unreadable \(UnicodeDecodeError: .*corrupt-"):
        assert ProgressStore().summary() == []
    [kept] = progress_file.parent.glob("progress.json.corrupt-*")
    assert kept.read_bytes() == b"\xff\xfe{}"


@pytest.mark.parametrize(
    ("key", "damaged", "problem"),
    [
        ("0", {**SAVED_NUMERIC, "attempts": "2"}, "record '0': \"attempts\" is '2', not"),
        ("0", {k: v for k, v in SAVED_NUMERIC.items() if k != "attempts"}, 'no "attempts"'),
        ("x", SAVED_NUMERIC, "record 'x': the key is not a question number"),
        ("0", {**SAVED_NUMERIC, "last_answer": float("nan")}, '"last_answer" is nan'),
        ("0", {**SAVED_NUMERIC, "correct": "yes"}, "\"correct\" is 'yes', not true or false"),
        ("0", {**SAVED_NUMERIC, "updated": None}, '"updated" is None, not a string'),
        ("0", ["not", "a", "record"], "record '0': not an object"),
    ],
)
def test_damaged_records_are_set_aside_and_the_valid_ones_kept(
    progress_file: Path, key: str, damaged: object, problem: str
) -> None:
    progress_file.parent.mkdir(parents=True)
    # json.dumps writes NaN as the old writer did, which is not JSON either.
    original = json.dumps({"version": 1, "banks": {"mixed": {key: damaged, "2": SAVED_NUMERIC}}})
    progress_file.write_text(original)
    with pytest.warns(ProgressWarning, match="had 1 damaged record") as caught:
        assert ProgressStore().bank("mixed") == {"2": SAVED_NUMERIC}
    assert problem in str(caught[0].message)
    assert re.search(
        r"moved it to .*corrupt-.* and kept its 1 valid record", str(caught[0].message)
    )
    [kept] = progress_file.parent.glob("progress.json.corrupt-*")
    assert kept.read_text() == original
    assert json.loads(progress_file.read_text())["banks"] == {"mixed": {"2": SAVED_NUMERIC}}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: no second warning
        entry = ProgressStore().record("mixed", 0, "Pick B.", 1, True)
    assert entry["attempts"] == 1
    assert set(RECORD_FIELDS) == set(entry)
    assert sorted(ProgressStore().bank("mixed")) == ["0", "2"]


def test_a_failed_write_leaves_the_old_file_whole_and_no_temp_files(
    mixed_bank: Path, progress_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiz = show_quiz(str(mixed_bank))
    quiz.questions[0].choose(1)
    quiz.questions[0].check()
    before = progress_file.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # fails after the data was written to the temp
    quiz.questions[0].choose(0)
    quiz.questions[0].check()
    assert progress_file.read_bytes() == before
    assert sorted(p.name for p in progress_file.parent.iterdir()) == [
        "progress.json",
        "progress.json.lock",
    ]
    assert "could not be saved: [Errno 28] No space left on device" in (
        quiz.questions[0].feedback_text
    )
    assert quiz.questions[0].feedback_text.startswith("Not quite. A is the first letter.")


# -- the terminal runner through the real command line --------------------------------------------
def run_cli(*args: str, stdin: str, progress: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FTLAB_PROGRESS": str(progress)}
    return subprocess.run(
        [str(FTLAB), "quiz", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_terminal_quiz_reads_piped_answers_and_records_them(tmp_path: Path) -> None:
    progress = tmp_path / "progress.json"
    right = load_bank("quick_check").questions[0].correct_choices[0]
    result = run_cli("quick_check", stdin=f"seven\n5\n{right + 1}\n", progress=progress)
    assert result.returncode == 0, result.stderr
    assert "Question 1 of 1. What does fine-tuning do?" in result.stdout
    assert "'seven' is not an option number; try again." in result.stdout
    assert "there is no option 5; choose 1 to 4" in result.stdout
    assert "Correct! Yes. Fine-tuning starts from a pretrained" in result.stdout
    assert result.stdout.rstrip().endswith("Score: 1 / 1")
    record = json.loads(progress.read_text())["banks"]["quick_check"]["0"]
    assert record["last_answer"] == right and record["correct"] is True

    shown = run_cli("--progress", stdin="", progress=progress)
    assert shown.returncode == 0
    assert any(
        line.split()[:4] == ["quick_check", "1/1", "1/1", "1"] for line in shown.stdout.splitlines()
    ), shown.stdout


def test_terminal_quiz_explains_a_wrong_answer_and_stops_at_end_of_input(tmp_path: Path) -> None:
    first = load_bank("02_preparing_data").questions[0]
    wrong = next(i for i, c in enumerate(first.choices) if c.text.startswith("One message"))
    right = first.correct_choices[0]
    result = run_cli("02_preparing_data", stdin=f"{wrong + 1}\n", progress=tmp_path / "p.json")
    assert result.returncode == 1
    assert "Not quite. Yes. JSONL means" not in result.stdout
    assert "Not quite. The turns of one conversation stay together" in result.stdout
    assert f"The right answer: {right + 1}. One whole example" in result.stdout
    assert "stopped after 1 of 5 questions" in result.stdout


def test_terminal_quiz_unknown_bank_lists_the_available_ones(tmp_path: Path) -> None:
    result = run_cli("quik_check", stdin="", progress=tmp_path / "p.json")
    assert result.returncode == 2
    assert "no quiz bank named 'quik_check'" in result.stderr
    assert "quick_check" in result.stderr.split("available:")[1]


def test_terminal_quiz_moves_a_non_utf8_file_aside_and_saves_the_answer(
    tmp_path: Path,
) -> None:
    progress = tmp_path / "p.json"
    progress.write_bytes(b"\xff\xfe{}")
    right = load_bank("quick_check").questions[0].correct_choices[0]
    result = run_cli("quick_check", stdin=f"{right + 1}\n", progress=progress)
    assert result.returncode == 0, result.stderr
    assert "Score: 1 / 1" in result.stdout
    assert json.loads(progress.read_text())["banks"]["quick_check"]["0"]["correct"] is True
    [kept] = tmp_path.glob("p.json.corrupt-*")
    assert kept.read_bytes() == b"\xff\xfe{}"
    assert result.stderr.startswith("warning: quiz progress file")
    assert "UnicodeDecodeError" in result.stderr


def test_progress_warnings_are_one_plain_line_on_stderr(tmp_path: Path) -> None:
    progress = tmp_path / "p.json"
    progress.write_text('{"banks": {"quick_check": {"0": {"attem')
    result = run_cli("--progress", stdin="", progress=progress)
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"warning: quiz progress file {progress} was unreadable (")
    assert line.endswith("and started a fresh record")


def test_progress_of_one_quiz_skips_a_record_with_a_bad_key(tmp_path: Path) -> None:
    progress = tmp_path / "p.json"
    good = {**SAVED_NUMERIC, "question": "What does fine-tuning do?", "last_answer": 0}
    progress.write_text(json.dumps({"banks": {"quick_check": {"0": good, "x": good}}}))
    result = run_cli("--progress", "quick_check", stdin="", progress=progress)
    assert result.returncode == 0, result.stderr
    assert "Q1: right after 2 attempt(s), last answer 0: What does fine-tuning do?" in (
        result.stdout
    )
    assert "record 'x': the key is not a question number" in result.stderr


def test_progress_of_an_unknown_quiz_lists_the_available_ones(tmp_path: Path) -> None:
    progress = tmp_path / "p.json"
    result = run_cli("--progress", "nosuch", stdin="", progress=progress)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no quiz bank named 'nosuch'" in result.stderr
    assert "quick_check" in result.stderr.split("available:")[1]

    progress.write_text(json.dumps({"banks": {"retired_quiz": {"2": SAVED_NUMERIC}}}))
    kept = run_cli("--progress", "retired_quiz", stdin="", progress=progress)
    assert kept.returncode == 0, kept.stderr
    assert "Q3: right after 2 attempt(s)" in kept.stdout


def test_list_shows_every_bank_with_its_size(tmp_path: Path) -> None:
    result = run_cli("--list", stdin="", progress=tmp_path / "p.json")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert "quick_check                  1 question  (Quick check)" in lines
    assert len(lines) == len(list_banks())
