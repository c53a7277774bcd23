"""Reading a fine-tuning job's result file, as the local server and OpenAI serve it."""

import base64

import pytest

from ftlab.course import parse_results_csv

CSV = (
    "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
    "1,2.5,0.4,,\n"
    "2,1.25,0.6,1.5,0.55\n"
)
ROWS = [
    {"step": 1.0, "train_loss": 2.5, "train_accuracy": 0.4},
    {
        "step": 2.0,
        "train_loss": 1.25,
        "train_accuracy": 0.6,
        "valid_loss": 1.5,
        "valid_mean_token_accuracy": 0.55,
    },
]


def test_plain_csv_becomes_rows_of_numbers_without_empty_cells():
    assert parse_results_csv(CSV.encode()) == ROWS


def test_base64_encoded_csv_as_openai_serves_it_gives_the_same_rows():
    assert parse_results_csv(base64.b64encode(CSV.encode())) == ROWS
    assert parse_results_csv(base64.b64encode(CSV.encode()) + b"\n") == ROWS
    wrapped = base64.encodebytes(CSV.encode())  # MIME style: lines of 76 characters
    assert wrapped.count(b"\n") > 1 and parse_results_csv(wrapped) == ROWS


def test_anything_else_is_refused_with_what_it_starts_with():
    with pytest.raises(ValueError, match=r"not the CSV a fine-tuning job writes.*'epoch,loss"):
        parse_results_csv(b"epoch,loss\n1,2\n")
    with pytest.raises(ValueError, match="Fix: pass the id from job.result_files"):
        parse_results_csv(base64.b64encode(b"<html>not found</html>"))
