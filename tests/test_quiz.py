"""The quiz: banks, grading, the notebook widget driven like a learner, progress, the CLI."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import platformdirs
import pytest

from ftlab.quiz import (
    BankError,
    ProgressStore,
    ProgressWarning,
    list_banks,
    load_bank,
    progress_path,
    show_quiz,
)
from ftlab.quiz.bank import parse_number
from ftlab.quiz.progress import RECORD_FIELDS
from ftlab.quiz.terminal import run_terminal

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


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own home, data, cache and FTLAB_HOME folders, and no FTLAB_PROGRESS,
    so that nothing reads or writes the real ones (the CLI subprocesses inherit this too)."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "ftlab-home"))
    monkeypatch.delenv("FTLAB_PROGRESS", raising=False)
    return home


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


def test_a_quiz_whose_answers_could_not_be_saved_says_so_and_fails(tmp_path: Path) -> None:
    right = load_bank("quick_check").questions[0].correct_choices[0]
    folder = tmp_path / "progress"  # FTLAB_PROGRESS pointing at a folder: nothing can be saved
    folder.mkdir()
    result = run_cli("quick_check", stdin=f"{right + 1}\n", progress=folder)
    assert result.returncode == 1, result.stdout
    assert "Score: 1 / 1" in result.stdout and "Errno" not in result.stdout
    assert "1 of your answers could not be saved" in result.stdout
    assert "Fix: set FTLAB_PROGRESS to a file in a folder you can write to" in result.stdout


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
    first = load_bank("quick_check").questions[0].choices[0].text
    assert "  Q1: right after 2 attempt(s): What does fine-tuning do?\n" in result.stdout
    assert f"      last answer: 1. {first}\n" in result.stdout
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


def test_reset_forgets_one_quiz_and_keeps_the_others(tmp_path: Path) -> None:
    progress = tmp_path / "p.json"
    saved = {"banks": {"quick_check": {"0": {**SAVED_NUMERIC, "question": "Q"}}}}
    saved["banks"]["retired_quiz"] = {"2": SAVED_NUMERIC}
    progress.write_text(json.dumps(saved))
    done = run_cli("--reset", "quick_check", stdin="", progress=progress)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Forgot your 1 saved answer(s) to quick_check in {progress}.\n"
    assert ProgressStore(progress).load()["banks"] == {"retired_quiz": {"2": SAVED_NUMERIC}}
    again = run_cli("--reset", "quick_check", stdin="", progress=progress)
    assert again.returncode == 0 and "nothing to forget" in again.stdout
    gone = run_cli("--reset", "retired_quiz", stdin="", progress=progress)  # a bank since removed
    assert gone.returncode == 0 and "Forgot your 1 saved answer(s)" in gone.stdout
    for wrong in ([], ["nosuch"], ["quick_check", "--progress"]):
        refused = run_cli("--reset", *wrong, stdin="", progress=progress)
        assert refused.returncode == 2 and refused.stdout == "", refused.stdout


def test_list_shows_every_bank_with_its_size(tmp_path: Path) -> None:
    result = run_cli("--list", stdin="", progress=tmp_path / "p.json")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert "quick_check                  1 question  (Quick check)" in lines
    assert len(lines) == len(list_banks())
    for extra in (["--progress"], ["quick_check"]):  # what the learner meant is not ignored
        mixed = run_cli("--list", *extra, stdin="", progress=tmp_path / "p.json")
        assert mixed.returncode == 2 and "--list takes no quiz name and no --progress" in (
            mixed.stderr
        )


def test_progress_of_one_quiz_shows_option_numbers_from_1_with_text_and_numbers_as_written(
    mixed_bank: Path, progress_file: Path
) -> None:
    quiz = show_quiz(str(mixed_bank))
    quiz.questions[0].choose(1)
    quiz.questions[0].check()
    quiz.questions[1].choose(0, 2)
    quiz.questions[1].check()
    quiz.questions[2].number.value = "150"  # Enter
    result = run_cli("--progress", str(mixed_bank), stdin="", progress=progress_file)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:] == [
        "  Q1: right after 1 attempt(s): Pick B.",
        "      last answer: 2. B",
        "  Q2: right after 1 attempt(s): Tick the even numbers.",
        "      last answer: 1. 2; 3. 4",
        "  Q3: wrong after 1 attempt(s): How many tokens?",
        "      last answer: 150",
    ]

    # The options changed since: the numbers the learner chose, and that it changed.
    changed = json.loads(json.dumps(MIXED_BANK))
    changed[0]["answers"].reverse()
    mixed_bank.write_text(json.dumps(changed))
    result = run_cli("--progress", str(mixed_bank), stdin="", progress=progress_file)
    assert "      last answer: option 2 (the quiz has changed since)" in result.stdout
    assert "      last answer: 1. 2; 3. 4" in result.stdout


# -- where progress is kept ------------------------------------------------------------------------
def test_progress_is_kept_in_the_user_data_folder_whatever_ftlab_home_says(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = platformdirs.user_data_path("ftlab") / "progress.json"
    assert progress_path() == expected
    assert home in expected.parents, "the test's own home, never the real one"
    monkeypatch.setenv("FTLAB_HOME", str(tmp_path / "shared-read-only-home"))
    assert progress_path() == expected, "a class's shared FTLAB_HOME does not move it"
    store = ProgressStore()
    assert store.path == expected
    store.record("mixed", 0, "Pick B.", 1, True)
    assert json.loads(expected.read_text())["banks"]["mixed"]["0"]["correct"] is True
    assert not (tmp_path / "shared-read-only-home").exists()
    assert not (tmp_path / "ftlab-home").exists()


def test_ftlab_progress_overrides_the_default_and_takes_nothing_from_the_old_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "ftlab-home" / "progress.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"version": 1, "banks": {"mixed": {"2": SAVED_NUMERIC}}}))
    chosen = tmp_path / "elsewhere" / "mine.json"
    monkeypatch.setenv("FTLAB_PROGRESS", str(chosen))
    assert progress_path() == chosen
    store = ProgressStore()
    assert store.path == chosen and store.bank("mixed") == {}
    store.record("mixed", 0, "Pick B.", 1, True)
    assert sorted(json.loads(chosen.read_text())["banks"]["mixed"]) == ["0"]
    assert not platformdirs.user_data_path("ftlab").exists()


def test_an_old_progress_file_in_ftlab_home_is_copied_across_once(tmp_path: Path) -> None:
    old = tmp_path / "ftlab-home" / "progress.json"
    old.parent.mkdir()
    original = json.dumps({"version": 1, "banks": {"mixed": {"2": SAVED_NUMERIC}}})
    old.write_text(original)
    new = platformdirs.user_data_path("ftlab") / "progress.json"

    store = ProgressStore()
    assert store.path == new
    assert new.read_text() == original, "copied as it was"
    assert old.read_text() == original, "the old file is kept"
    assert store.bank("mixed") == {"2": SAVED_NUMERIC}
    store.record("mixed", 0, "Pick B.", 1, True)

    again = ProgressStore()  # a new notebook: the old file is not copied over the new one
    assert sorted(again.bank("mixed")) == ["0", "2"]
    assert old.read_text() == original
    assert sorted(p.name for p in new.parent.iterdir()) == ["progress.json", "progress.json.lock"]


def test_an_old_progress_file_that_someone_else_owns_is_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class's shared FTLAB_HOME: its one record mixes every learner's answers."""
    old = tmp_path / "ftlab-home" / "progress.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"version": 1, "banks": {"mixed": {"2": SAVED_NUMERIC}}}))
    monkeypatch.setattr(os, "getuid", lambda: old.stat().st_uid + 1)
    assert ProgressStore().bank("mixed") == {}
    assert not (platformdirs.user_data_path("ftlab") / "progress.json").exists()


def test_a_failed_copy_of_the_old_file_warns_at_the_caller_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "ftlab-home" / "progress.json"
    old.parent.mkdir()
    old.write_text("{}")

    def disk_full(self: ProgressStore, content: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ProgressStore, "_write_bytes", disk_full)
    with pytest.warns(ProgressWarning, match="could not take over your earlier answers") as caught:
        ProgressStore()
    assert caught[0].filename == __file__
    assert old.read_text() == "{}"
    assert not (platformdirs.user_data_path("ftlab") / "progress.json").exists()


def test_progress_warnings_point_at_the_notebook_cell(
    mixed_bank: Path, progress_file: Path
) -> None:
    progress_file.parent.mkdir(parents=True)
    progress_file.write_text("not json")
    with pytest.warns(ProgressWarning, match="was unreadable") as caught:
        show_quiz(str(mixed_bank))  # the line a learner sees the warning point at
    assert caught[0].filename == __file__
    progress_file.write_text("not json either")
    with pytest.warns(ProgressWarning, match="was unreadable") as caught:
        ProgressStore().bank("mixed")
    assert caught[0].filename == __file__


# -- saved answers and changed options -------------------------------------------------------------
def test_a_saved_answer_whose_options_changed_is_not_restored(
    mixed_bank: Path, progress_file: Path
) -> None:
    first = show_quiz(str(mixed_bank))
    first.questions[0].choose(1)  # B, the right one
    first.questions[0].check()
    first.questions[1].choose(0, 2)
    first.questions[1].check()
    record = ProgressStore().bank("mixed")["0"]
    assert record["options"] == first.questions[0].question.options_key

    reordered = json.loads(json.dumps(MIXED_BANK))
    reordered[0]["answers"].reverse()  # C, B, A: index 1 is still B, but the options moved
    reordered[1]["answers"][0]["answer"] = "two"
    mixed_bank.write_text(json.dumps(reordered))
    again = show_quiz(str(mixed_bank))
    assert again.questions[0].radio.value is None
    assert again.questions[0].feedback.value == ""
    assert again.questions[1].feedback.value == ""
    assert "Score: 0 / 3" in again.score.value

    again.questions[0].choose("B")
    again.questions[0].check()
    record = ProgressStore().bank("mixed")["0"]
    assert record["attempts"] == 1, "attempts at the old options do not count"
    assert (
        record["last_answer"] == 1 and record["options"] == again.questions[0].question.options_key
    )


def test_a_saved_answer_from_an_older_file_without_options_is_still_restored(
    mixed_bank: Path, progress_file: Path
) -> None:
    progress_file.parent.mkdir(parents=True)
    old_record = {**SAVED_NUMERIC, "question": "Pick B.", "last_answer": 1}
    progress_file.write_text(json.dumps({"version": 1, "banks": {"mixed": {"0": old_record}}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiz = show_quiz(str(mixed_bank))
    assert quiz.questions[0].radio.value == 1
    assert quiz.questions[0].feedback_text.startswith("Correct! B is what was asked for.")
    quiz.questions[0].choose(0)
    quiz.questions[0].check()
    record = ProgressStore().bank("mixed")["0"]
    assert record["attempts"] == 3 and record["options"] == quiz.questions[0].question.options_key


def test_a_record_with_a_bad_options_field_is_set_aside(progress_file: Path) -> None:
    progress_file.parent.mkdir(parents=True)
    bad = {**SAVED_NUMERIC, "question": "Pick B.", "last_answer": 1, "options": 5}
    progress_file.write_text(json.dumps({"banks": {"mixed": {"0": bad, "2": SAVED_NUMERIC}}}))
    with pytest.warns(ProgressWarning, match='"options" is 5, not a string'):
        assert ProgressStore().bank("mixed") == {"2": SAVED_NUMERIC}


# -- decimal commas --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "number"),
    [("1,234", 1234.0), ("12,345,678", 12345678.0), ("1,234.5", 1234.5), ("-1,500", -1500.0)],
)
def test_commas_are_read_as_thousands_separators(text: str, number: float) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize(
    "text", ["538,6", "0,85", "1,5", "0,850", "1234,567", "1,23,456", ",5", "1,2345", "3/0,5"]
)
def test_a_decimal_comma_is_refused_not_misread(text: str) -> None:
    with pytest.raises(ValueError, match="use a dot for decimals, as in 0.85"):
        parse_number(text)


def test_a_dot_between_thousands_is_refused_with_both_readings() -> None:
    with pytest.raises(
        ValueError,
        match=r"'144\.000' reads two ways: write 144000 \(or 144,000\) "
        r"for thousands, or 144 for a decimal",
    ):
        parse_number("144.000")
    with pytest.raises(ValueError, match=r"write 1234 \(or 1,234\) for thousands, or 1\.2340 for"):
        parse_number("1.234")
    assert parse_number("0.850") == 0.85  # a leading zero: only a decimal
    assert parse_number("1.5") == 1.5 and parse_number("12.34") == 12.34


def test_the_widget_and_the_terminal_ask_for_a_decimal_dot(
    mixed_bank: Path, progress_file: Path
) -> None:
    quiz = show_quiz(str(mixed_bank))
    quiz.questions[2].number.value = "144000,5"  # Enter
    assert "use a dot for decimals" in quiz.questions[2].feedback_text
    assert not progress_file.exists()

    out = io.StringIO()
    bank = load_bank(mixed_bank)
    run_terminal(bank, None, stdin=io.StringIO("2\n1 3\n0,85\n144000\n"), stdout=out)
    assert "'0,85' is not a number here: use a dot for decimals" in out.getvalue()
    assert "; try again." in out.getvalue()
    assert out.getvalue().rstrip().endswith("Score: 3 / 3")


# -- the terminal on a tick-every-one question -----------------------------------------------------
def test_terminal_says_partly_right_and_numbers_each_explanation(
    mixed_bank: Path, progress_file: Path
) -> None:
    out = io.StringIO()
    store = ProgressStore()
    result = run_terminal(load_bank(mixed_bank), store, stdin=io.StringIO("2\n1\n"), stdout=out)
    text = out.getvalue()
    assert (result.answered, result.correct) == (2, 1)
    assert (
        "  Partly right: every option you ticked is right, but you missed 1 right option.\n"
        "  1. 2: 2 is even.\n"
        "  The right answer: 1. 2; 3. 4\n"
    ) in text
    assert "more to find" not in text and "Right so far" not in text
    assert store.bank("mixed")["1"]["last_answer"] == [0]

    out = io.StringIO()
    run_terminal(load_bank(mixed_bank), None, stdin=io.StringIO("2\n1 2\n"), stdout=out)
    assert "  Not quite.\n  1. 2: 2 is even.\n  2. 3: 3 is odd.\n  The right answer:" in (
        out.getvalue()
    )


def test_the_widget_still_asks_for_the_missing_options(mixed_bank: Path) -> None:
    many = show_quiz(str(mixed_bank), progress=False).questions[1]
    many.choose(2)
    many.check()
    assert many.feedback_text == (
        "Right so far.\n- 4: 4 is even.\n- You have not ticked every right option yet: "
        "1 more to find."
    )


# -- widget details --------------------------------------------------------------------------------
def test_option_labels_show_no_backticks(tmp_path: Path) -> None:
    quiz = show_quiz("04_api_fine_tuning", progress=False)
    labels = [label for q in quiz.questions if q.radio for label, _ in q.radio.options]
    labels += [box.description for q in quiz.questions for box in q.boxes]
    assert "The name of a fine-tuned model, to pass as model in chat calls." in labels
    assert not [label for label in labels if "`" in label]

    ticked = json.loads(json.dumps(MIXED_BANK))
    ticked[1]["answers"][0]["answer"] = "`2`"
    path = tmp_path / "ticked.json"
    path.write_text(json.dumps(ticked))
    many = show_quiz(str(path), progress=False).questions[1]
    assert many.boxes[0].description == "2"
    many.choose("`2`", "4")  # the bank's text still names the option
    assert many.check().correct


def test_enter_in_the_number_box_checks_the_answer_once(
    mixed_bank: Path, progress_file: Path
) -> None:
    numeric = show_quiz(str(mixed_bank)).questions[2]
    assert numeric.number.continuous_update is False, "the value arrives on Enter"
    numeric.choose(144000)  # filling the box from code checks nothing
    assert numeric.feedback.value == "" and not progress_file.exists()

    numeric.number.value = "99"  # the learner presses Enter
    assert numeric.feedback_text == "Not quite. Far too few."
    numeric.check_button.click()  # then clicks Check as well: the same answer, no new attempt
    assert ProgressStore().bank("mixed")["2"]["attempts"] == 1
    numeric.number.value = "144,000"
    assert numeric.feedback_text == "Correct! Exactly 144,000."
    assert ProgressStore().bank("mixed")["2"]["attempts"] == 2

    again = show_quiz(str(mixed_bank)).questions[2]  # restoring the box is no new attempt
    assert again.number.value == "144,000"
    again.check_button.click()
    assert ProgressStore().bank("mixed")["2"]["attempts"] == 2


def test_a_changed_answer_loses_the_verdict_of_the_old_one(
    mixed_bank: Path, progress_file: Path
) -> None:
    quiz = show_quiz(str(mixed_bank))
    single, many, numeric = quiz.questions
    single.choose("B")
    many.choose("2", "4")
    numeric.number.value = "144000"  # Enter
    for question in (single, many):
        question.check()
    assert "Score: 3 / 3" in quiz.score.value

    single.choose("C")  # chosen, not checked: "Correct!" would now be wrong
    assert (
        single.feedback_text == "Your answer has changed: press Check to see whether it is right."
    )
    assert "Score: 2 / 3" in quiz.score.value
    many.boxes[2].value = False  # unticking one of two right options
    assert many.feedback_text.startswith("Your answer has changed")
    numeric.number.value = ""  # the box emptied, then Enter
    assert numeric.feedback_text.startswith("Your answer has changed")
    assert "Score: 0 / 3" in quiz.score.value

    single.choose("B")  # back to the checked answer: the verdict needs a Check again
    single.check_button.click()
    assert single.feedback_text == "Correct! B is what was asked for."
    assert "Score: 1 / 3" in quiz.score.value
    assert ProgressStore().bank("mixed")["0"]["attempts"] == 1  # the same answer, no new try


def test_a_restored_quiz_shows_its_verdicts_and_names_each_check_button(
    mixed_bank: Path, progress_file: Path
) -> None:
    quiz = show_quiz(str(mixed_bank))
    quiz.questions[1].choose("2", "4")
    quiz.questions[1].check()
    again = show_quiz(str(mixed_bank))  # ticking two boxes in turn is no change of the learner's
    assert again.questions[1].feedback_text.startswith("Correct!")
    assert "Score: 1 / 3" in again.score.value
    assert [q.check_button.tooltip for q in again.questions] == [
        f"Check your answer to question {n}" for n in (1, 2, 3)
    ]


def test_a_range_answer_is_given_as_its_bounds() -> None:
    question = load_bank("00_setup").questions[4]
    assert question.numeric[0].kind == "range" and question.numeric[0].correct
    assert question.right_answer_text() == "at least 530 and below 550"
    assert not question.grade(550.0).correct and question.grade(549.0).correct


# -- quiz texts ------------------------------------------------------------------------------------
def test_the_checkpoint_question_agrees_with_notebook_04() -> None:
    """Notebook 04: an interrupted job carries on from its last checkpoint; a failed one does
    not, and the checkpoints a job lists are models to call."""
    question = load_bank("04_api_fine_tuning").questions[3]
    resume = question.choices[0]
    assert "failed job" in resume.text and not resume.correct
    assert "interrupted" in resume.feedback and "last checkpoint" in resume.feedback
    assert "beginning" not in resume.text
    [right] = question.correct_choices
    assert "models" in question.choices[right].text


def test_the_worth_it_question_says_what_a_wrong_label_costs() -> None:
    question = load_bank("05_evaluate_and_deploy").questions[3]
    volume = question.choices[0]
    assert "costs real money" in volume.text and not volume.correct
    assert "costly" in volume.feedback
