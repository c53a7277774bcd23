"""Chat requests wait for their answers without holding one of the web server's threads.

FastAPI runs plain (non-async) endpoints in a pool of 40 worker threads. When each waiting
chat held one, a class's chats filled the pool, and a job poll or an upload then queued
behind them until answers came out (measured: 45 s for one poll with 64 chats in flight).
"""

from __future__ import annotations

import asyncio
import threading

import httpx

from ftlab.models import DEFAULT_MODEL
from ftlab.server.app import create_app
from ftlab.server.auth import Authenticator
from ftlab.server.inference import Inference
from ftlab.server.store import Store
from ftlab.server.worker import Worker

CHATS = 60  # more than the 40 worker threads


def test_a_poll_is_answered_while_more_chats_wait_than_the_server_has_threads(tmp_path):
    store = Store(tmp_path)
    inference = Inference(store)
    decoding_may_start = threading.Event()
    load = inference.batcher.load

    def held_load(source: str):
        """The real model, once the test lets decoding start: until then every chat waits."""
        decoding_may_start.wait()
        return load(source)

    inference.batcher.load = held_load
    app = create_app(
        store,
        auth=Authenticator(),
        worker=Worker(store),
        inference=inference,
        max_upload_bytes=2**20,
    )
    hello = [{"role": "user", "content": "Hi"}]
    chat = {"model": DEFAULT_MODEL, "messages": hello, "max_tokens": 1}

    async def poll_while_chats_wait():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ftlab") as http:
            chats = [
                asyncio.create_task(http.post("/v1/chat/completions", json=chat))
                for _ in range(CHATS)
            ]
            await asyncio.sleep(0.5)  # every chat reaches the server and starts waiting
            try:
                # Not a speed limit: a poll stuck behind the chats never answers until they do.
                models = await asyncio.wait_for(http.get("/v1/models"), timeout=30)
                waiting = sum(not c.done() for c in chats)
            finally:
                decoding_may_start.set()
            return models, waiting, await asyncio.gather(*chats)

    try:
        models, waiting, answers = asyncio.run(poll_while_chats_wait())
    finally:
        store.close()
    assert models.status_code == 200, models.text
    assert DEFAULT_MODEL in [m["id"] for m in models.json()["data"]]
    assert waiting == CHATS, "the poll was answered while every chat was still waiting"
    assert [a.status_code for a in answers] == [200] * CHATS
    assert all(a.json()["choices"][0]["finish_reason"] == "length" for a in answers)
