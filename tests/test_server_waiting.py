"""Chat requests wait for their answers without holding a web server thread, and leave the
queue when their client gives up; uploads are written off the event loop the chats need.

FastAPI runs plain (non-async) endpoints in a pool of 40 worker threads. When each waiting
chat held one, a class's chats filled the pool, and a job poll or an upload then queued
behind them until answers came out (measured: 45 s for one poll with 64 chats in flight).
In these tests decoding is held back until the test lets it start, so every chat is still
waiting when the test looks.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from ftlab.models import DEFAULT_MODEL
from ftlab.server.app import create_app
from ftlab.server.auth import Authenticator
from ftlab.server.inference import Inference
from ftlab.server.store import Store
from ftlab.server.worker import Worker

CHATS = 60  # more than the 40 worker threads
HELLO = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


class HeldServer:
    """The server's app with the real model, whose decoding starts when `release()` is called."""

    def __init__(self, data_dir) -> None:
        self.store = Store(data_dir)
        self.inference = Inference(self.store)
        self._may_start = threading.Event()
        load = self.inference.batcher.load

        def held_load(source: str):
            self._may_start.wait()
            return load(source)

        self.inference.batcher.load = held_load
        self.handles = []  # every submitted request's handle, to see what the server did
        submit = self.inference.batcher.submit

        def recorded_submit(*args):
            self.handles.append(submit(*args))
            return self.handles[-1]

        self.inference.batcher.submit = recorded_submit
        self.app = create_app(
            self.store,
            auth=Authenticator(),
            worker=Worker(self.store),
            inference=self.inference,
            max_upload_mb=1,
        )

    def release(self) -> None:
        self._may_start.set()


@pytest.fixture
def held(tmp_path):
    server = HeldServer(tmp_path)
    yield server
    server.release()
    server.store.close()


def test_a_poll_is_answered_while_more_chats_wait_than_the_server_has_threads(held):
    async def every_chat_submitted():
        """Until every chat has reached the batcher (with a chat per thread, 40 of 60 did)."""
        while len(held.handles) < CHATS:
            await asyncio.sleep(0.01)

    async def poll_while_chats_wait():
        transport = httpx.ASGITransport(app=held.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ftlab") as http:
            chats = [
                asyncio.create_task(http.post("/v1/chat/completions", json=HELLO))
                for _ in range(CHATS)
            ]
            try:
                await asyncio.wait_for(every_chat_submitted(), timeout=60)
                # Not a speed limit: a poll stuck behind the chats never answers until they do.
                models = await asyncio.wait_for(http.get("/v1/models"), timeout=30)
                waiting = sum(not c.done() for c in chats)
            finally:
                held.release()
            return models, waiting, await asyncio.gather(*chats)

    models, waiting, answers = asyncio.run(poll_while_chats_wait())
    assert models.status_code == 200, models.text
    assert DEFAULT_MODEL in [m["id"] for m in models.json()["data"]]
    assert waiting == CHATS, "the poll was answered while every chat was still waiting"
    assert [a.status_code for a in answers] == [200] * CHATS
    assert all(a.json()["choices"][0]["finish_reason"] == "length" for a in answers)


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_whose_client_gave_up_is_never_decoded(held, stream):
    """A real HTTP server (uvicorn on a thread): the client times out and hangs up."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    url = f"http://127.0.0.1:{listening.getsockname()[1]}/v1/chat/completions"
    server = uvicorn.Server(uvicorn.Config(held.app, log_level="warning"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    serving.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with pytest.raises(httpx.ReadTimeout):  # decoding is held, so no answer can come
            httpx.post(url, json={**HELLO, "stream": stream}, timeout=httpx.Timeout(30, read=1))
        deadline = time.monotonic() + 30
        while not held.handles[0].cancelled:
            assert time.monotonic() < deadline, "the server kept the abandoned request"
            time.sleep(0.1)
        held.release()
        answer = httpx.post(url, json={**HELLO, "stream": stream}, timeout=120)
        assert answer.status_code == 200, answer.text
        assert held.inference.batcher.batch_sizes == [1], "only the second request was decoded"
    finally:
        server.should_exit = True
        serving.join(timeout=30)


def test_a_poll_is_answered_while_an_upload_is_being_written(held, monkeypatch):
    """Writing and fsyncing a large upload takes seconds; the event loop, which every chat
    stream and waiting chat needs, must not wait for it."""
    writing, may_finish = threading.Event(), threading.Event()
    add_file = held.store.add_file

    def slow_add_file(*args, **kwargs):
        writing.set()
        may_finish.wait(timeout=10)
        return add_file(*args, **kwargs)

    monkeypatch.setattr(held.store, "add_file", slow_add_file)

    async def poll_while_uploading():
        transport = httpx.ASGITransport(app=held.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ftlab") as http:
            upload = asyncio.create_task(
                http.post(
                    "/v1/files",
                    files={"file": ("train.jsonl", b"{}\n")},
                    data={"purpose": "fine-tune"},
                )
            )
            while not writing.is_set():
                await asyncio.sleep(0.01)
            try:
                models = await asyncio.wait_for(http.get("/v1/models"), timeout=30)
                still_writing = not upload.done()
            finally:
                may_finish.set()
            return models, still_writing, await upload

    models, still_writing, uploaded = asyncio.run(poll_while_uploading())
    assert models.status_code == 200, models.text
    assert still_writing, "the poll was only answered once the upload was written"
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["bytes"] == 3
