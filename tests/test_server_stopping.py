"""Stopping the server (Ctrl-C, SIGTERM) while chats are being answered.

uvicorn waits for open requests before the app shuts down. A long answer used to hold it
until its 5 s grace period ran out; uvicorn then cancelled the request, logged a traceback,
and the client got a bare `Internal Server Error` in plain text, which the SDK retried into
a server that was gone. Now every chat in flight gets an OpenAI-shaped 503 at once.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest
from server_helpers import BASE, start

LONG = {
    "model": BASE,
    "messages": [{"role": "user", "content": "Write a long story about a fox."}],
    "max_tokens": 2048,
    "temperature": 0,
}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_server_answers_the_chats_in_flight_with_a_503(tmp_path, sig):
    server = start(tmp_path / "data")
    url = f"{server.base_url}/chat/completions"
    answers: dict[str, httpx.Response] = {}
    asked = threading.Thread(
        target=lambda: answers.update(plain=httpx.post(url, json=LONG, timeout=120))
    )
    try:
        with httpx.stream("POST", url, json={**LONG, "stream": True}, timeout=120) as stream:
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
            asked.start()  # the plain request joins the stream's batch, or waits for it
            time.sleep(1.0)
            server.process.send_signal(sig)
            frames = [line[6:] for line in lines if line.startswith("data: ")]
        asked.join(timeout=60)
        assert server.process.wait(timeout=60) in (0, 130, -sig)
    finally:
        server.stop()
    error = json.loads(frames[-1])["error"]  # the stream's last frame, in place of [DONE]
    assert error["code"] == "server_stopping" and "Send the request again" in error["message"]
    plain = answers["plain"]
    assert plain.status_code == 503 and plain.headers["x-should-retry"] == "false"
    assert plain.json()["error"]["code"] == "server_stopping"
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
