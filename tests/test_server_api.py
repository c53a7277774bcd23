"""The local server's files, jobs, models and error contract, driven by the official SDK.

One single-user server (upload limit 0.3 MB) serves the whole module.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from server_helpers import BASE, client, jsonl, messages, start, tiny_examples, upload, wait_for

from ftlab.server.app import BASE_MODEL_CREATED, create_app
from ftlab.server.auth import Authenticator
from ftlab.server.inference import Inference
from ftlab.server.store import Store
from ftlab.server.worker import Worker

MB = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # 0.3 MB is no whole number of bytes: the limit is still shown as given.
    with start(tmp_path_factory.mktemp("server"), max_upload_mb=0.3) as handle:
        yield handle


@pytest.fixture(scope="module")
def api(server):
    return client(server)


@pytest.fixture(scope="module")
def training_file(api):
    """A valid training file, for requests that fail before any job exists."""
    return upload(api, tiny_examples(10))


def raw(server, method: str, path: str, **kwargs) -> httpx.Response:
    """A request the SDK would never send malformed, sent with httpx."""
    headers = {"Authorization": "Bearer any-key", **kwargs.pop("headers", {})}
    return httpx.request(method, server.base_url + path, headers=headers, timeout=60, **kwargs)


def assert_error(response: httpx.Response, status: int, **expected) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for key, value in expected.items():
        assert error[key] == value, error
    return error


# ---- files ----------------------------------------------------------------------------------


def test_upload_retrieve_download_delete(api):
    data = jsonl(tiny_examples(3))
    created = api.files.create(file=("mine.jsonl", data), purpose="fine-tune")
    assert created.id.startswith("file-")
    assert (created.filename, created.bytes, created.purpose, created.status) == (
        "mine.jsonl",
        len(data),
        "fine-tune",
        "processed",
    )
    assert api.files.retrieve(created.id) == created
    assert api.files.content(created.id).read() == data
    deleted = api.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError, match=created.id):
        api.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        api.files.delete(created.id)


def test_file_names_are_never_paths(api, server):
    evil = "../../escape.jsonl"
    created = api.files.create(file=(evil, b"{}\n"), purpose="fine-tune")
    assert api.files.retrieve(created.id).filename == evil
    assert not (server.data_dir.parent / "escape.jsonl").exists()
    stored = sorted(p.name for p in (server.data_dir / "files").iterdir())
    assert created.id in stored and all(name.startswith("file-") for name in stored)


def test_file_pagination_newest_first_and_purpose_filter(api):
    ids = [api.files.create(file=(f"p{i}.jsonl", b"{}\n"), purpose="batch").id for i in range(5)]
    page = api.files.list(purpose="batch", limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more
    assert page.first_id == ids[4] and page.last_id == ids[3]
    assert [f.id for f in api.files.list(purpose="batch", limit=2)] == ids[::-1]
    assert [f.id for f in api.files.list(purpose="batch", order="asc")] == ids
    last = api.files.list(purpose="batch", limit=2, after=ids[1])
    assert [f.id for f in last.data] == [ids[0]] and not last.has_more


def test_upload_over_the_limit_is_refused(api):
    with pytest.raises(openai.APIStatusError) as caught:
        api.files.create(file=("big.jsonl", b"x" * (MB + 1000)), purpose="fine-tune")
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "file_too_large"
    assert "uploads up to 0.3 MB. " in caught.value.body["message"]


def test_an_upload_sent_in_chunks_stops_being_read_once_it_passes_the_limit(tmp_path):
    """No Content-Length: the bytes read are counted. Before, the whole upload was spooled to
    a temporary file and only then measured. The app is called as the ASGI server calls it,
    so that the test sees how much of the body it asked for."""
    store = Store(tmp_path / "data")
    app = create_app(
        store, auth=Authenticator(), worker=Worker(store), inference=Inference(store),
        max_upload_mb=0.3,
    )  # fmt: skip
    head = (
        b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    )
    chunks = [head, *[b"x" * 65536] * 640, b"\r\n--xyz--\r\n"]  # 40 MB
    asked = 0

    async def receive() -> dict:
        nonlocal asked
        asked += 1
        if asked > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[asked - 1], "more_body": asked < len(chunks)}

    answer: list[dict] = []

    async def send(message: dict) -> None:
        answer.append(message)

    headers = [(b"content-type", b"multipart/form-data; boundary=xyz")]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/files", "raw_path": b"/v1/files", "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("t", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    body = json.loads(b"".join(m.get("body", b"") for m in answer[1:]))
    assert (answer[0]["status"], body["error"]["code"]) == (413, "file_too_large")
    assert asked <= 8, f"read {asked} of {len(chunks)} pieces"  # 0.3 MB and 64 KiB: 6 pieces
    assert list(store.files_dir.iterdir()) == []  # nothing kept, not even a part


def test_bad_multipart_is_a_clear_400(server):
    broken = raw(
        server,
        "POST",
        "/files",
        content=b"--xyz\r\nnot a real part",
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert_error(broken, 400)
    no_boundary = raw(
        server, "POST", "/files", content=b"abc", headers={"Content-Type": "multipart/form-data"}
    )
    assert assert_error(no_boundary, 400)["message"] == (
        "Could not read the upload: Missing boundary in multipart. Send "
        "multipart/form-data with the fields 'purpose' and 'file'."
    )
    no_file = raw(server, "POST", "/files", data={"purpose": "fine-tune"})
    assert_error(no_file, 400, code="missing_required_parameter", param="file")
    as_field = raw(server, "POST", "/files", data={"purpose": "fine-tune", "file": "{}\n"})
    assert "-F 'file=@train.jsonl'" in assert_error(as_field, 400, param="file")["message"]
    no_purpose = raw(server, "POST", "/files", files={"file": ("a.jsonl", b"{}\n")})
    assert_error(no_purpose, 400, code="missing_required_parameter", param="purpose")
    as_json = raw(server, "POST", "/files", json={"purpose": "fine-tune"})
    assert "multipart/form-data" in assert_error(as_json, 400)["message"]
    as_text = raw(server, "POST", "/fine_tuning/jobs", content=b'{"model": "x"}')
    assert "Content-Type: application/json" in assert_error(as_text, 400)["message"]
    bad_purpose = raw(
        server, "POST", "/files", data={"purpose": "fun"}, files={"file": ("a.jsonl", b"{}\n")}
    )
    assert_error(bad_purpose, 400, param="purpose")


def test_uploads_cut_off_by_a_killed_server_are_removed_at_the_next_start(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / ".file-cutoff.partial").write_bytes(b'{"messages": [')  # as a SIGKILL leaves it
    with start(tmp_path) as server:
        assert client(server).files.list().data == []
    assert list(files.iterdir()) == []
    log = server.log_path.read_text()
    assert "Removed 1 unfinished upload(s) left by a stopped server: .file-cutoff.partial" in log


def test_file_contents_no_row_points_at_are_removed_at_the_next_start(tmp_path):
    with start(tmp_path) as server:
        api = client(server)
        kept = upload(api, tiny_examples(3))
    # A kill between the rename and the insert leaves bytes that no request can reach.
    (tmp_path / "files" / "file-strayafterkill").write_bytes(b'{"messages": []}\n')
    with start(tmp_path) as server:
        assert [f.id for f in client(server).files.list().data] == [kept]
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == [kept]
    assert "Removed 1 file(s) that no upload or job recorded" in server.log_path.read_text()


def test_a_file_whose_bytes_are_gone_is_a_404_that_says_so(tmp_path):
    with start(tmp_path) as server:
        api = client(server)
        file_id = upload(api, tiny_examples(3))
        (tmp_path / "files" / file_id).unlink()  # removed by hand, or a disk problem
        with pytest.raises(openai.NotFoundError, match="missing from the server's data folder"):
            api.files.content(file_id)


# ---- the error contract ---------------------------------------------------------------------


def test_job_create_errors(api, server):
    with pytest.raises(openai.BadRequestError) as caught:
        api.fine_tuning.jobs.create(model=BASE, training_file="file-doesnotexist")
    assert caught.value.body["message"] == "invalid training_file: file-doesnotexist"
    assert caught.value.body["param"] == "training_file"
    with pytest.raises(openai.BadRequestError) as caught:  # a file's name, not its id
        api.fine_tuning.jobs.create(model=BASE, training_file="train.jsonl")
    assert "expected the id of an uploaded file, like file-abc123" in caught.value.body["message"]

    file_id = upload(api, tiny_examples(10))
    with pytest.raises(openai.NotFoundError) as caught:
        api.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["message"] == (
        "The model `gpt-4o-mini-2024-07-18` does not exist or you do not have access to it. "
        "This server fine-tunes smollm2-135m-instruct only."
    )

    missing = raw(server, "POST", "/fine_tuning/jobs", json={"model": BASE})
    error = assert_error(missing, 400, code="missing_required_parameter", param="training_file")
    assert error["message"] == "Missing required parameter: 'training_file'."

    settings = {"n_epochs": 2}  # nothing a request asks for is dropped without a word
    mistakes = {
        "validation_file": {"validation_file": ""},
        "n_epochs": {"extra_body": settings},
        "hyperparameters": {"hyperparameters": settings, "method": {"type": "supervised"}},
        "method.supervised.hyperparameter": {
            "method": {"type": "supervised", "supervised": {"hyperparameter": settings}}
        },
        "metadata": {"metadata": {"note": "x" * 513}},
        "method.supervsed": {"method": {"type": "supervised", "supervsed": {}}},
        "method.type": {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}},
        "integrations": {"integrations": [{"type": "wandb", "wandb": {"project": "x"}}]},
        "sufix": {"extra_body": {"sufix": "mine"}},  # "Did you mean 'suffix'?"
    }
    for param, options in mistakes.items():
        with pytest.raises(openai.BadRequestError) as caught:
            api.fine_tuning.jobs.create(model=BASE, training_file=file_id, **options)
        assert caught.value.body["param"] == param, (param, caught.value.body)

    with pytest.raises(openai.BadRequestError) as caught:
        api.fine_tuning.jobs.create(
            model=BASE, training_file=file_id, hyperparameters={"n_epochs": 0}
        )
    assert caught.value.body["param"] == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as caught:
        api.fine_tuning.jobs.create(model=BASE, training_file=file_id, suffix="a:b")
    assert caught.value.body["param"] == "suffix"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("n_epochs", 0, "an integer from 1 to 50 (got 0)"),
        ("n_epochs", -1, "an integer from 1 to 50 (got -1)"),
        ("n_epochs", 51, "an integer from 1 to 50 (got 51)"),
        ("n_epochs", True, "an integer from 1 to 50 (got true)"),  # not 1 epoch
        ("n_epochs", "3", 'an integer from 1 to 50 (got "3")'),  # OpenAI: the wrong type
        ("batch_size", 100000, "an integer from 1 to 256 (got 100000)"),
        ("learning_rate_multiplier", -0.5, "a number greater than 0 and at most 10 (got -0.5)"),
        ("learning_rate_multiplier", 0, "a number greater than 0 and at most 10 (got 0)"),
        (
            "learning_rate_multiplier",
            1e9,
            "a number greater than 0 and at most 10 (got 1000000000.0)",
        ),
        ("learning_rate_multiplier", "1.5", 'a number greater than 0 and at most 10 (got "1.5")'),
    ],
)
def test_bad_hyperparameters_name_the_allowed_range(api, training_file, name, value, expected):
    with pytest.raises(openai.BadRequestError) as caught:
        api.fine_tuning.jobs.create(
            model=BASE, training_file=training_file, hyperparameters={name: value}
        )
    param = f"hyperparameters.{name}"
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.body["param"] == param
    assert (
        caught.value.body["message"]
        == f"Invalid value for '{param}': must be 'auto' or {expected}."
    )


def test_good_hyperparameters_are_taken_as_sent(api):
    job = api.fine_tuning.jobs.create(
        model=BASE,
        training_file=upload(api, tiny_examples(3)),  # fails validation: nothing trains
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 50,
                    "batch_size": "auto",
                    "learning_rate_multiplier": 2,
                }
            },
        },
    )
    chosen = job.method.supervised.hyperparameters
    assert (chosen.n_epochs, chosen.batch_size, chosen.learning_rate_multiplier) == (50, "auto", 2)


def test_malformed_requests_get_openai_shaped_errors(server):
    for body, said in [(b"{nope", "JSON"), (b'{"model": "x",\n "t": nope}', "line 2, column 7")]:
        not_json = raw(
            server,
            "POST",
            "/fine_tuning/jobs",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert said in assert_error(not_json, 400)["message"]
    empty = raw(server, "POST", "/fine_tuning/jobs")
    error = assert_error(empty, 400, code="missing_required_parameter", param="model")
    assert error["message"] == "Missing required parameter: 'model'."
    not_a_message = raw(
        server, "POST", "/chat/completions", json={"model": BASE, "messages": ["hi"]}
    )
    assert_error(not_a_message, 400, param="messages[0]")  # as in "messages[0].role"
    for role in (["user"], {"name": "user"}, 1):  # a list's or dict's membership test was a 500
        odd_role = raw(
            server,
            "POST",
            "/chat/completions",
            json={"model": BASE, "messages": [{"role": role, "content": "hi"}]},
        )
        assert (
            "expected a string such as 'user'"
            in assert_error(odd_role, 400, code="invalid_value", param="messages[0].role")[
                "message"
            ]
        )
    not_utf8 = raw(
        server,
        "POST",
        "/fine_tuning/jobs",
        content='{"model": "café"}'.encode("latin-1"),
        headers={"Content-Type": "application/json"},
    )
    assert "must be JSON text in UTF-8" in assert_error(not_utf8, 400)["message"]
    assert_error(raw(server, "GET", "/no/such/route"), 404, code="unknown_url")
    assert_error(raw(server, "PUT", "/files"), 405)
    assert_error(raw(server, "GET", "/fine_tuning/jobs", params={"limit": 0}), 400, param="limit")
    assert_error(raw(server, "GET", "/files", params={"after": "file-unknown"}), 400, param="after")


def test_unknown_job_is_404_everywhere(api):
    # The list calls fetch their first page at once, so every call below sends a request.
    for call in (
        api.fine_tuning.jobs.retrieve,
        api.fine_tuning.jobs.cancel,
        api.fine_tuning.jobs.list_events,
        api.fine_tuning.jobs.checkpoints.list,
    ):
        with pytest.raises(openai.NotFoundError, match="ftjob-nope"):
            call("ftjob-nope")


# ---- asynchronous file validation -------------------------------------------------------------


def test_too_few_examples_fail_the_job_after_create(api):
    job = api.fine_tuning.jobs.create(model=BASE, training_file=upload(api, tiny_examples(7)))
    assert job.status == "validating_files" and job.error.code is None
    failed = wait_for(api, job.id)
    assert failed.status == "failed"
    assert (failed.error.code, failed.error.param) == ("invalid_n_examples", "training_file")
    assert failed.error.message == (
        "Training file has 7 examples, but must have at least 10 examples"
    )
    assert messages(api, job.id)[:2] == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {job.training_file}",
    ]
    with pytest.raises(openai.BadRequestError, match="cannot be cancelled"):
        api.fine_tuning.jobs.cancel(job.id)


@pytest.mark.parametrize(
    ("line_5", "code", "where"),
    [
        (b'{"messages": [\n', "invalid_file_format", "line 5: "),
        (b'{"messages": [{"role": "user", "content": "hi"}]}\n', "invalid_training_file", "line 5"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}, '
            b'{"role": "assistant", "content": 5}]}\n',
            "invalid_training_file",
            "line 5, messages[1]: ",
        ),
    ],
)
def test_first_bad_line_is_named(api, line_5, code, where):
    lines = jsonl(tiny_examples(12)).splitlines(keepends=True)
    lines[4] = line_5
    job = api.fine_tuning.jobs.create(
        model=BASE,
        training_file=api.files.create(file=("t.jsonl", b"".join(lines)), purpose="fine-tune").id,
    )
    failed = wait_for(api, job.id)
    assert (failed.status, failed.error.code, failed.error.param) == (
        "failed",
        code,
        "training_file",
    )
    assert where in failed.error.message


def test_a_legacy_file_is_named_as_one_and_the_other_bad_lines_are_counted(api):
    legacy = b"".join(
        json.dumps({"prompt": f"Where is AC-{n}?", "completion": "order_status"}).encode() + b"\n"
        for n in range(12)
    )
    uploaded = api.files.create(file=("old.jsonl", legacy), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model=BASE, training_file=uploaded.id)
    failed = wait_for(api, job.id)
    assert failed.error.message.startswith(f"Training file {uploaded.id} is invalid: line 1: ")
    assert "this is the legacy prompt/completion format" in failed.error.message
    assert failed.error.message.endswith(
        "(missing_messages). 11 more lines of the file have problems too: `ftlab validate FILE` "
        "lists them all, so fix them before uploading the file again."
    )


def test_job_list_pagination(api):
    created = [
        api.fine_tuning.jobs.create(model=BASE, training_file=upload(api, tiny_examples(3)))
        for _ in range(3)
    ]
    first = api.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == [j.id for j in created[::-1][:2]] and first.has_more
    everything = [j.id for j in api.fine_tuning.jobs.list(limit=2)]
    assert everything[:3] == [j.id for j in created[::-1]]
    assert len(everything) == len(set(everything))


# ---- models and chat ----------------------------------------------------------------------------


def test_models(api):
    assert BASE in [m.id for m in api.models.list()]
    base = api.models.retrieve(BASE)
    assert base.id == BASE and base.created == BASE_MODEL_CREATED > 0
    assert base in api.models.list().data
    with pytest.raises(openai.PermissionDeniedError):
        api.models.delete(BASE)
    ghost = f"ft:{BASE}:local:x:abcd1234"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve(ghost)
    with pytest.raises(openai.NotFoundError) as caught:
        api.chat.completions.create(model=ghost, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found"


HELLO = [{"role": "user", "content": "Name three colours."}]


@pytest.mark.slow
def test_chat_greedy_is_repeatable_and_respects_max_tokens(api):
    first = api.chat.completions.create(model=BASE, messages=HELLO, temperature=0, max_tokens=8)
    again = api.chat.completions.create(model=BASE, messages=HELLO, temperature=0, max_tokens=8)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].finish_reason == "length"
    assert first.usage.completion_tokens == 8
    assert first.usage.total_tokens == first.usage.prompt_tokens + 8
    assert first.model == BASE and first.object == "chat.completion"


@pytest.mark.slow
def test_chat_stop_sequence_is_cut_off(api):
    full = api.chat.completions.create(model=BASE, messages=HELLO, temperature=0, max_tokens=30)
    text = full.choices[0].message.content
    stop = text.split()[2]
    cut = api.chat.completions.create(
        model=BASE, messages=HELLO, temperature=0, max_tokens=30, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


@pytest.mark.slow
def test_chat_sampling_n_and_seed(api):
    def sample(seed):
        reply = api.chat.completions.create(
            model=BASE, messages=HELLO, n=3, seed=seed, temperature=1.0, max_tokens=12
        )
        return [c.message.content for c in reply.choices]

    first = sample(7)
    assert len(first) == 3 and len(set(first)) > 1
    assert sample(7) == first


@pytest.mark.slow
def test_chat_streaming_matches_and_reports_usage(api):
    whole = api.chat.completions.create(model=BASE, messages=HELLO, temperature=0, max_tokens=20)
    chunks = list(
        api.chat.completions.create(
            model=BASE,
            messages=HELLO,
            temperature=0,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert (
        finishes[-1] == whole.choices[0].finish_reason and finishes.count(None) == len(finishes) - 1
    )
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


@pytest.mark.slow
def test_chat_request_errors(api):
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model=BASE, messages=HELLO, temperature=3)
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model=BASE, messages=[{"role": "robot", "content": "x"}])
    assert caught.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model=BASE, messages=HELLO, seed=2**64)
    assert caught.value.body["param"] == "seed"
    broken = {  # the messages OpenAI refuses too
        "messages[0].role": ([{"content": "x"}], "Missing required parameter"),
        "messages[0].content": ([{"role": "user"}], "Missing required parameter"),
        "messages[1].content": ([HELLO[0], {"role": "assistant", "content": None}], "Missing"),
        "messages[1].role": ([HELLO[0], {"role": "tool", "content": "42"}], "tool calling"),
    }
    for param, (sent, words) in broken.items():
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(model=BASE, messages=sent, max_tokens=1)
        assert caught.value.body["param"] == param and words in caught.value.body["message"]
    # A field OpenAI does not know is refused as OpenAI refuses it, with the one meant.
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(
            model=BASE, messages=HELLO, extra_body={"max_token": 3, "top_k": 5}
        )
    assert caught.value.body["message"] == (
        "Unrecognized request argument supplied: max_token. Did you mean 'max_tokens'?"
    )
    unsupported = {
        "logprobs": {"logprobs": True},
        "tools": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        "response_format": {"response_format": {"type": "json_object"}},
        "stream_options": {"stream_options": {"include_usage": True}},
        "presence_penalty": {"presence_penalty": 2},
        "frequency_penalty": {"frequency_penalty": -1},
        "logit_bias": {"logit_bias": {"0": -100}},
        "reasoning_effort": {"reasoning_effort": "low"},
        "modalities": {"modalities": ["text", "audio"]},
    }
    for param, options in unsupported.items():
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(model=BASE, messages=HELLO, max_tokens=2, **options)
        assert caught.value.body["param"] == param, param
    # Asking for none of them is fine; a longer answer than a shared server gives is refused.
    api.chat.completions.create(
        model=BASE, messages=HELLO, max_tokens=1, presence_penalty=0, logit_bias={}
    )
    api.chat.completions.create(  # nor are OpenAI's fields that change nothing in an answer
        model=BASE,
        messages=HELLO,
        max_tokens=1,
        user="ana",
        store=False,
        modalities=["text"],
        verbosity="medium",
        prompt_cache_retention="24h",
    )
    with pytest.raises(openai.BadRequestError) as caught:  # a hint among every known field
        api.chat.completions.create(model=BASE, messages=HELLO, extra_body={"usr": "ana"})
    assert caught.value.body["message"].endswith("Did you mean 'user'?")
    for name in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(model=BASE, messages=HELLO, **{name: 2049})
        assert caught.value.body["param"] == name and "at most 2048" in str(caught.value)
    # 3 MB of JSON is refused before it is parsed or tokenized (it stalled every chat).
    with pytest.raises(openai.APIStatusError) as caught:
        huge = [{"role": "user", "content": "word " * 600_000}]
        api.chat.completions.create(model=BASE, messages=huge, max_tokens=1)
    assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"
    greedy = api.chat.completions.create(model=BASE, messages=HELLO, max_tokens=4, temperature=0)
    for settings in ({"temperature": 1e-45, "seed": 1}, {"top_p": 0}):  # both greedy
        answer = api.chat.completions.create(model=BASE, messages=HELLO, max_tokens=4, **settings)
        assert answer.choices[0].message.content == greedy.choices[0].message.content


def test_a_request_body_sent_in_chunks_is_refused_once_it_passes_the_limit(server):
    """No Content-Length to refuse it by: the bytes read are counted instead."""
    message = {"role": "user", "content": "x" * 3_000_000}
    body = json.dumps({"model": BASE, "messages": [message]}).encode()
    pieces = (body[at : at + 65536] for at in range(0, len(body), 65536))
    response = raw(server, "POST", "/chat/completions", content=pieces)
    assert_error(response, 413, code="request_too_large")
    assert "more than that" in response.json()["error"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_longer_than_the_context_is_a_400_streamed_or_not(api, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "word " * 9000}],
            max_tokens=2,
            stream=stream,
        )
    assert (caught.value.body["code"], caught.value.body["param"]) == (
        "context_length_exceeded",
        "messages",
    )
    assert "maximum context length" in caught.value.body["message"]


@pytest.mark.slow
def test_many_concurrent_chats(api):
    """Requests in flight together are batched by the server; each still gets its own answer,
    streamed or not, the same as the same prompt in another batch."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(i: int) -> str:
        request = {
            "model": BASE,
            "messages": [{"role": "user", "content": f"Say the number {i % 3}."}],
            "temperature": 0,
            "max_tokens": 4,
        }
        if i % 2:
            chunks = api.chat.completions.create(**request, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return api.chat.completions.create(**request).choices[0].message.content

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(12)))
    assert all(answers)
    assert answers[:3] == answers[3:6] == answers[9:12]


def test_examples_longer_than_training_takes_fail_the_job_before_it_starts(api):
    examples = tiny_examples(12)
    examples[3]["messages"][1]["content"] = "Where is my order? " * 600  # about 3,000 tokens
    job = api.fine_tuning.jobs.create(model=BASE, training_file=upload(api, examples))
    failed = wait_for(api, job.id)
    assert (failed.error.code, failed.error.param) == ("invalid_training_file", "training_file")
    assert "An example of the training file is longer than the 2,048 tokens" in failed.error.message
    assert "line 4 (" in failed.error.message
    assert "Fine-tuning job started" not in messages(api, job.id)
