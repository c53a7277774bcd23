"""Chat requests that arrive together are answered together, in one batch.

On a CPU, generating one token for 16 rows costs far less than 16 times one row: the
model's weights are read once per step either way. So one decoding thread takes every
waiting request for the same model (up to `max_rows` choices: `ftlab serve
--chat-batch`), answers them in one batch (`ftlab.server.decoding.decode_batch`), then
looks again. A request that arrives while a batch runs waits for the next one. Each
request's text reaches its own `ChatHandle` as it is generated, so streaming works the
same in a batch as alone, and a request is answered as soon as its own choices are
finished, not when the batch's longest answer is.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ftlab.generation import prompt_ids
from ftlab.server.decoding import (
    ChatRows,
    ContextTooLong,
    Delta,
    Sampling,
    Usage,
    answer_room,
    decode_batch,
)
from ftlab.server.defaults import DEFAULT_CHAT_BATCH

_DONE = object()
# How long the first waiting request waits for others to join its batch: far less than a
# token takes, and enough for requests sent at the same moment to arrive.
GATHER_S = 0.02


class ChatHandle:
    """One submitted request of `choices` choices: `async for` over `deltas()` reads its
    deltas, and raises the request's error."""

    def __init__(self, choices: int = 1) -> None:
        self.usage = Usage()
        self._events: queue.Queue[Any] = queue.Queue()
        self._cancelled = threading.Event()
        self._unfinished = choices
        self._wake_reader: Callable[[], None] = lambda: None

    async def deltas(self) -> AsyncIterator[Delta]:
        """The deltas as they are generated, awaited on the event loop, not in a blocked thread.

        The web server's worker threads are few (40): a class's chat requests waiting
        in threads left none for job polls and uploads, which then waited behind every
        answer.
        """
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(arrived.set)
            except RuntimeError:  # the loop has closed: nobody is reading any more
                pass

        self._wake_reader = wake
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:  # each wait is followed by draining, so no event is missed
                await arrived.wait()
                arrived.clear()
                continue
            if event is _DONE:
                return
            if isinstance(event, BaseException):
                raise event
            yield event

    def cancel(self) -> None:
        """The client went away: drop this request's rows from their batch."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def answered(self) -> bool:
        """Every choice has its finish reason: a later error must not spoil the answer."""
        return self._unfinished <= 0

    def deliver(self, event: Any) -> None:
        self._events.put(event)
        if isinstance(event, Delta) and event.finish_reason:
            self._unfinished -= 1
            if self.answered:  # the reader is done now, not when the whole batch is
                self._events.put(_DONE)
        self._wake_reader()


@dataclass(eq=False)
class _Pending:
    source: str
    messages: list[dict]
    sampling: Sampling
    handle: ChatHandle = field(init=False)

    def __post_init__(self) -> None:
        self.handle = ChatHandle(self.sampling.n)


class ChatBatcher:
    """A queue of chat requests and the one thread that answers them in batches.

    `load(source)` returns `(model, tokenizer)` for a model source; it is called on
    the decoding thread before every batch. `batch_sizes` records the rows of every
    batch run so far.
    With `threaded=False` no thread is started: `run_pending` answers what is waiting
    on the caller's thread, which makes a batch's contents exact (tests, benchmarks).
    """

    def __init__(
        self,
        load: Callable[[str], tuple[Any, Any]],
        max_rows: int = DEFAULT_CHAT_BATCH,
        threaded: bool = True,
    ) -> None:
        self.load = load
        self.max_rows = max(1, max_rows)
        self.threaded = threaded
        self.batch_sizes: list[int] = []
        self._pending: list[_Pending] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, source: str, messages: list[dict], sampling: Sampling) -> ChatHandle:
        pending = _Pending(source, messages, sampling)
        with self._wake:
            self._pending.append(pending)
            if self.threaded and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="chat-batcher", daemon=True)
                self._thread.start()
            self._wake.notify()
        return pending.handle

    def _next_batch(self) -> list[_Pending]:
        """The oldest waiting request, and the next ones for the same model while rows fit."""
        with self._wake:
            while not self._pending:
                self._wake.wait()
            # Requests sent together (a thread pool, a class) arrive a few ms apart.
            deadline = time.monotonic() + GATHER_S
            while sum(p.sampling.n for p in self._pending) < self.max_rows:
                if (left := deadline - time.monotonic()) <= 0:
                    break
                self._wake.wait(left)
            first = self._pending[0]
            batch, rows = [], 0
            for pending in self._pending:
                fits = rows + pending.sampling.n <= self.max_rows
                if pending.source == first.source and (fits or not batch):
                    batch.append(pending)
                    rows += pending.sampling.n
            self._pending = [p for p in self._pending if p not in batch]
            return batch

    def run_pending(self) -> None:
        """Answer every waiting request now, batch after batch, on this thread."""
        while self._pending:
            self._run(self._next_batch())

    def _loop(self) -> None:
        while True:
            self._run(self._next_batch())

    def _run(self, batch: list[_Pending]) -> None:
        try:
            self._answer([p for p in batch if not p.handle.cancelled])
        except Exception as error:  # noqa: BLE001 - every unfinished request is told
            for pending in batch:
                if not pending.handle.answered:
                    pending.handle.deliver(error)
        finally:
            for pending in batch:
                pending.handle.deliver(_DONE)

    def _answer(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        model, tokenizer = self.load(batch[0].source)
        requests = []
        for pending in batch:
            if pending.handle.cancelled:  # its client left while the model was loading
                continue
            handle, ids = pending.handle, prompt_ids(tokenizer, pending.messages)
            try:
                room = answer_room(model, ids)
            except ContextTooLong as error:  # only this request fails
                handle.deliver(error)
                continue
            requests.append(
                ChatRows(
                    ids,
                    pending.sampling,
                    min(pending.sampling.max_tokens, room),
                    handle.usage,
                    emit=handle.deliver,
                    cancelled=lambda handle=handle: handle.cancelled,
                )
            )
        if requests:
            self.batch_sizes.append(sum(r.sampling.n for r in requests))
            decode_batch(model, tokenizer, requests)
