"""`ftlab room`: the instructor's view of a workshop, read from a real shared server."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from server_helpers import client, start, tiny_examples, upload, wait_for

from ftlab import cli
from ftlab.api_jobs import DEMO_KEY
from ftlab.quiz.progress import ProgressStore
from ftlab.room import format_room, room_report


def test_the_room_shows_each_learners_work_and_quiz(tmp_path, capsys):
    keys = tmp_path / "keys.txt"
    keys.write_text("ana sk-ana\nben sk-ben\n")
    homes = tmp_path / "home"
    progress = ProgressStore(homes / "ana" / "progress.json")
    progress.record("01_what_is_fine_tuning", 0, "Q1", 0, correct=True)
    progress.record("01_what_is_fine_tuning", 1, "Q2", 1, correct=False)
    damaged = homes / "ben" / "progress.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text("{not json")
    with start(tmp_path / "data", keys=keys) as server:
        ana = client(server, "sk-ana")
        file_id = upload(ana, tiny_examples(3))  # too few examples: the job fails at once
        job = ana.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file_id)
        wait_for(ana, job.id)
        ben = client(server, "sk-ben")  # notebook 04's failure on purpose is left out
        demo = ben.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=upload(ben, tiny_examples(3)),
            metadata={DEMO_KEY: "fails on purpose"},
        )
        wait_for(ben, demo.id)

        pattern = str(homes / "{name}" / "progress.json")
        rows = room_report(server.base_url, keys, pattern)
        assert [row.name for row in rows] == ["ana", "ben"]
        ana_row, ben_row = rows
        assert ana_row.files == 1 and ana_row.jobs == {"failed": 1}
        assert ana_row.last_job.startswith("failed") and ana_row.models == []
        assert (ana_row.quiz_right, ana_row.quiz_answered) == (1, 2)
        assert ben_row.files == 1 and ben_row.jobs == {} and ben_row.last_job is None
        assert ben_row.quiz_answered == 0
        assert ben_row.quiz_problem.startswith("was unreadable")
        assert damaged.read_text() == "{not json"  # another person's file is never changed
        table = format_room(rows)
        assert "1 failed" in table and "1/2" in table and "0 of 2 learners" in table
        assert "0/0 (damaged file)" in table and "ben's quiz record: was unreadable" in table
        assert ana_row.last_job_at >= job.created_at and ana_row.unfinished_jobs == []
        assert ana_row.quiz_file_found and ben_row.quiz_file_found
        assert "No learner has a quiz record" not in table
        wrong = str(tmp_path / "jupyter-{name}" / "progress.json")  # a mistyped pattern
        table = format_room(room_report(server.base_url, keys, wrong))
        assert "No learner has a quiz record at --progress's place yet (2 looked for)" in table

        command = ["room", "--url", server.base_url, "--keys", str(keys), "--json"]
        assert cli.main([*command, "--progress", pattern]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed[0]["name"] == "ana" and printed[0]["jobs"] == {"failed": 1}
        assert cli.main([*command, "--progress", str(homes / "progress.json")]) == 2
        assert "has no {name}" in capsys.readouterr().err

        newer = tmp_path / "newer-keys.txt"  # cleo is in a keys file the server was not given
        newer.write_text("ana sk-ana\nben sk-ben\ncleo sk-cleo\n")
        cleo = room_report(server.base_url, newer)[2]
        assert cleo.problem == "the server refused this learner's key (401)"
        no_v1 = server.base_url.removesuffix("/v1")  # the whole room fails, not each learner
        with pytest.raises(ConnectionError, match="answered 404 .* ending in /v1"):
            room_report(no_v1, keys)
        with pytest.raises(ConnectionError, match="must start with http:// or https://"):
            room_report(server.base_url.removeprefix("http://"), keys)
        assert "refused this learner's key" in format_room([cleo])
    assert cli.main(["room", "--url", server.base_url, "--keys", str(keys)]) == 2
    assert "cannot reach the server" in capsys.readouterr().err


def test_the_room_names_unfinished_jobs_so_a_runaway_one_can_be_cancelled():
    from ftlab.room import LearnerRow

    rows = [
        LearnerRow("ana", files=1, jobs={"running": 1}, unfinished_jobs=["ftjob-a1"]),
        LearnerRow("ben", files=0),
    ]
    table = format_room(rows)
    assert "Jobs not finished (to cancel one, see the README): ana ftjob-a1" in table
    assert "ben" not in table.splitlines()[-1]


class OneLearnerFails(http.server.BaseHTTPRequestHandler):
    """A stand-in server whose lists are empty, except that ben's requests fail with a 500."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        failing = self.headers.get("Authorization") == "Bearer sk-ben"
        body = json.dumps(
            {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
            if failing
            else {"object": "list", "data": [], "has_more": False}
        ).encode()
        self.send_response(500 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_one_learners_server_error_is_their_row_not_the_whole_room(tmp_path, capsys):
    keys = tmp_path / "keys.txt"
    keys.write_text("ana sk-ana\nben sk-ben\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OneLearnerFails)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        ana, ben = room_report(url + "/v1", keys)
        assert ana.problem is None and ana.files == 0
        assert ben.problem == "the server answered 500 for this learner's data"
        assert cli.main(["room", "--url", url, "--keys", str(keys)]) == 0  # /v1 added
        assert "answered 500" in capsys.readouterr().out
    finally:
        server.shutdown()
    assert cli.main(["room", "--url", "http://127.0.0.1:80o0/v1", "--keys", str(keys)]) == 2
    assert "--url is 'http://127.0.0.1:80o0/v1', which is not a web address" in (
        capsys.readouterr().err
    )
