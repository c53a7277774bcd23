"""Chat requests are answered together, in batches that requests join while they decode.

On a CPU, generating one token for 16 rows costs far less than 16 times one row: the
model's weights are read once per step either way. So one decoding thread answers every
request for the same model in one batch (up to `max_rows` choices: `ftlab serve
--chat-batch`, `ftlab.server.decoding.BatchDecoder`). A request that arrives while the
batch decodes joins it at the next token, once its rows fit; several models decode at
once, a token of each in turn, while a model that is not loaded yet loads on a thread of
its own. Each request's text reaches its own `ChatHandle` as it
is generated, so streaming works the same in a batch as alone, and a request is
answered as soon as its own choices are finished, not when the batch's longest answer is.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ftlab.generation import prompt_ids
from ftlab.server.decoding import (
    BatchDecoder,
    ChatRows,
    Delta,
    JoinFailed,
    Sampling,
    Usage,
    answer_room,
)
from ftlab.server.defaults import DEFAULT_CHAT_BATCH

log = logging.getLogger(__name__)
_DONE = object()
# How long the first waiting request waits for others to join its batch: far less than a
# token takes, and enough for requests sent at the same moment to arrive.
GATHER_S = 0.02
# A request for a model that is decoding joins its batch only when the batch may go on for
# more tokens than this; otherwise it waits for the batch to end. Joining costs a forward
# pass of its own, about as much as a token for the whole batch on a CPU, so a batch of
# short answers that ends soon is cheaper to wait for: joining every request as soon as
# it came made notebook 04's scoring (16 requests in flight, 48 tokens at most) 1.13x
# slower (`make bench-chat`).
JOIN_IF_TOKENS_LEFT = 64
BATCH_SIZES_KEPT = 1000  # `ChatBatcher.batch_sizes` of a server that runs for weeks


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
    rows: ChatRows | None = None  # once it is decoding
    arrived: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.handle = ChatHandle(self.sampling.n)


@dataclass(eq=False)
class _Batch:
    """One model's requests decoding together, and how many rows they hold."""

    source: str
    decoder: BatchDecoder
    requests: list[_Pending] = field(default_factory=list)
    version: object = None  # the model's files when the batch started (`ChatBatcher.version`)

    @property
    def rows(self) -> int:
        return self.decoder.width


def _still_wanted(group: list[_Pending]) -> list[_Pending]:
    """The requests of `group` whose clients are still there (the others are ended)."""
    for pending in group:
        if pending.handle.cancelled:
            pending.handle.deliver(_DONE)
    return [p for p in group if not p.handle.cancelled]


class ChatBatcher:
    """A queue of chat requests and the one thread that answers them in batches.

    A batch holds up to `max_rows` choices (`ftlab serve --chat-batch`). A request for a
    model that is decoding joins its batch at the next token when its rows fit and the batch
    may go on for more than `JOIN_IF_TOKENS_LEFT` tokens (a long answer does not hold it up);
    otherwise it waits for the batch to end. Up to `max_models` models decode at once, one
    token of each batch in turn, so one learner's long answer slows the others down instead
    of holding them up. When a request waits for a model and no more can decode, requests
    stop joining the running batches until one ends, so nobody waits for ever.

    `load(source)` returns `(model, tokenizer)` for a model source. With the thread, it is
    called on a thread of its own, so a model that takes seconds to load and merge does not
    pause the batches decoding meanwhile (a loading model holds one of the `max_models`
    places). `batch_sizes` records the rows of
    every group of requests started together (a new batch, or requests joining one).
    With `threaded=False` no thread is started: `run_pending` answers what is waiting
    on the caller's thread, which makes a batch's contents exact (tests, benchmarks).
    With `join=False` a request for a model that is decoding waits until its batch has
    ended, as the server did before (for `bench/chat_batching.py`). `version(source)` says
    which files a model would load from now (the server: `inference.files_stamp`): a request
    never joins a batch started from other files (an adapter retrained in place); it waits
    for that batch to end, and the model is loaded again.
    """

    def __init__(
        self,
        load: Callable[[str], tuple[Any, Any]],
        max_rows: int = DEFAULT_CHAT_BATCH,
        threaded: bool = True,
        max_models: int = 1,
        join: bool = True,
        version: Callable[[str], object] = lambda source: None,
    ) -> None:
        self.load, self.join, self.version = load, join, version
        self.max_rows = max(1, max_rows)
        self.max_models = max(1, max_models)
        self.threaded = threaded
        self.batch_sizes: list[int] = []  # the latest BATCH_SIZES_KEPT
        self._pending: list[_Pending] = []
        self._batches: list[_Batch] = []  # only the decoding thread changes it
        # Models loading on their own thread, and loaded ones (or their load's error) whose
        # requests have not started yet; both guarded by `_wake`.
        self._loading: set[str] = set()
        self._loaded: dict[str, tuple[Any, Any] | Exception] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed: Exception | None = None  # set by `close`: the error every request gets

    def submit(self, source: str, messages: list[dict], sampling: Sampling) -> ChatHandle:
        pending = _Pending(source, messages, sampling)
        with self._wake:
            if self._closed is not None:
                pending.handle.deliver(self._closed)
                pending.handle.deliver(_DONE)
                return pending.handle
            self._pending.append(pending)
            if self.threaded and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="chat-batcher", daemon=True)
                self._thread.start()
            self._wake.notify()
        return pending.handle

    def close(self, error: Exception) -> None:
        """Answer nothing more: every request waiting or decoding, and any submitted later,
        gets `error` at once (the server is stopping). The thread ends after the token it is
        computing, so the web server is not left waiting for long answers nobody will get."""
        with self._wake:
            self._closed = error
            self._wake.notify_all()
            threaded = self._thread is not None
        if not threaded:  # nothing decodes on another thread
            self._fail_all(error)

    def _fail_all(self, error: Exception) -> None:
        for batch in self._batches:
            self._end(batch, error)
        self._batches.clear()
        with self._wake:
            pending, self._pending = self._pending, []
        for waiting in pending:
            waiting.handle.deliver(error)
            waiting.handle.deliver(_DONE)

    def _admit(self) -> list[tuple[_Batch | str, list[_Pending]]]:
        """Take the waiting requests that can start now, in order of arrival: those for a
        model that is decoding while its batch has room, and those for a model that is
        loaded with a place among `max_models`. A request that cannot start holds back the
        later ones for its model; one that waits for a place stops all joining. With the
        thread, a model that may start is loaded on a thread of its own meanwhile, and this
        waits while every request waits for a model."""
        with self._wake:
            while self._closed is None:
                while not self._pending and not self._batches and self._closed is None:
                    self._wake.wait()
                if self._closed is not None:
                    break
                groups = self._take()
                if groups or self._batches or not self.threaded:
                    return groups
                self._wake.wait()  # woken by a new request, a finished load or `close`
            return []

    def _take(self) -> list[tuple[_Batch | str, list[_Pending]]]:
        """`_admit`'s choice, made with `_wake` held."""
        self._pending = _still_wanted(self._pending)
        wanted = {p.source for p in self._pending}
        for source in self._loaded.keys() - wanted:  # every request for it left: its place frees
            del self._loaded[source]
        running = {batch.source: batch for batch in self._batches}
        places = running.keys() | self._loading | self._loaded.keys()
        # Requests sent together (a thread pool, a class) arrive a few ms apart: the
        # first for a model that can start waits for the others, once.
        first = next((p for p in self._pending if p.source not in places), None)
        if first is not None and len(places) < self.max_models:
            deadline = first.arrived + GATHER_S
            while sum(p.sampling.n for p in self._pending) < self.max_rows:
                if (left := deadline - time.monotonic()) <= 0:
                    break
                self._wake.wait(left)
        rows = {source: batch.rows for source, batch in running.items()}
        groups: dict[str, list[_Pending]] = {}
        held: set[str] = set()
        starved = False
        for pending in self._pending:
            source = pending.source
            if source in held:
                continue
            batch = running.get(source)
            if source not in rows:  # a model that is not decoding
                if source not in places and len(places) >= self.max_models:
                    starved = True  # it waits for a place
                elif self.threaded and source not in self._loaded:
                    if source not in self._loading:
                        self._load_in_background(source)
                        places.add(source)
                else:
                    rows[source] = 0
                if source not in rows:
                    held.add(source)
                    continue
            elif batch is not None and (
                starved
                or not self.join
                or batch.version != self.version(source)
                or not batch.decoder.can_join()
                or batch.decoder.tokens_left() <= JOIN_IF_TOKENS_LEFT
            ):
                held.add(source)
                continue
            if rows[source] and rows[source] + pending.sampling.n > self.max_rows:
                held.add(source)
                continue
            rows[source] += pending.sampling.n
            groups.setdefault(source, []).append(pending)
        taken = {id(p) for group in groups.values() for p in group}
        self._pending = [p for p in self._pending if id(p) not in taken]
        return [(running.get(source, source), group) for source, group in groups.items()]

    def _load_in_background(self, source: str) -> None:
        """Load `source` on a thread of its own; its requests start once it is loaded (or
        get the load's error). Called with `_wake` held."""

        def load() -> None:
            loaded: tuple[Any, Any] | Exception = RuntimeError(f"loading {source} was stopped")
            try:
                loaded = self.load(source)
            except Exception as error:  # noqa: BLE001 - its requests are told
                loaded = error
            finally:  # whatever happened, the place is handed on and the waiters woken
                with self._wake:
                    self._loading.discard(source)
                    self._loaded[source] = loaded
                    self._wake.notify_all()

        threading.Thread(target=load, name=f"chat-load {source}", daemon=True).start()
        self._loading.add(source)  # only once the thread runs: else nobody would finish it

    def run_pending(self) -> None:
        """Answer every waiting request now, on this thread."""
        while self._pending or self._batches:
            self._turn()

    def _loop(self) -> None:
        while self._closed is None:
            try:
                self._turn()
            except Exception as error:  # noqa: BLE001 - a bug here must not hang every reader
                log.exception("the chat decoding loop failed; its batches are ended")
                for batch in self._batches:
                    self._end(batch, error)
                self._batches.clear()
        self._fail_all(self._closed)

    def _turn(self) -> None:
        """Start what can start, then one token for every batch (none once closed)."""
        for batch_or_source, group in self._admit():
            self._start(batch_or_source, group)
        for batch in list(self._batches):
            if self._closed is None:
                self._guarded(batch, batch.decoder.step)

    def _start(self, batch_or_source: _Batch | str, group: list[_Pending]) -> None:
        """Start `group` as a new batch, or add it to a running one."""
        group = _still_wanted(group)
        if not group:
            return
        if isinstance(batch_or_source, _Batch):
            batch = batch_or_source
        else:
            batch = self._new_batch(batch_or_source, group)
            if batch is None:
                return
            group = _still_wanted(group)  # loading a model takes seconds
            if not group:
                self._batches.remove(batch)
                return
        requests = [rows for p in group if (rows := self._rows(batch.decoder, p)) is not None]
        batch.requests += [p for p in group if p.rows is not None]
        if requests:
            self.batch_sizes.append(sum(r.sampling.n for r in requests))
            del self.batch_sizes[:-BATCH_SIZES_KEPT]
        self._guarded(batch, batch.decoder.join, requests)

    def _new_batch(self, source: str, group: list[_Pending]) -> _Batch | None:
        """A running batch for `source` (loaded here without the thread); None, with every
        request of `group` told why, if the model failed to load or to start decoding."""
        with self._wake:
            loaded = self._loaded.get(source)
        try:
            if loaded is None:  # without the thread, loaded here
                loaded = self.load(source)
            if isinstance(loaded, Exception):
                raise loaded
            batch = _Batch(source, BatchDecoder(*loaded), version=self.version(source))
            self._batches.append(batch)
        except Exception as error:  # noqa: BLE001 - its requests are told
            for pending in group:
                pending.handle.deliver(error)
                pending.handle.deliver(_DONE)
            batch = None
        with self._wake:  # only now: until it decodes, the cache must see it as wanted
            self._loaded.pop(source, None)
        return batch

    @staticmethod
    def _rows(decoder: BatchDecoder, pending: _Pending) -> ChatRows | None:
        """The request as decoder rows; None (and the request told) if it cannot fit."""
        handle = pending.handle
        try:
            ids = prompt_ids(decoder.tokenizer, pending.messages)
            room = answer_room(decoder.model, decoder.tokenizer, ids)
        except Exception as error:  # noqa: BLE001 - too long, or a template that refuses it:
            handle.deliver(error)  # only this request fails
            handle.deliver(_DONE)
            return None
        pending.rows = ChatRows(
            ids,
            pending.sampling,
            min(pending.sampling.max_tokens, room),
            handle.usage,
            emit=handle.deliver,
            cancelled=lambda: handle.cancelled,
        )
        return pending.rows

    def decoding_sources(self) -> set[str]:
        """The models decoding now or about to (the model cache must keep them)."""
        with self._wake:
            waiting = self._loading | self._loaded.keys()
        return waiting | {batch.source for batch in list(self._batches)}

    @staticmethod
    def _end(batch: _Batch, error: Exception) -> None:
        """End `batch` after a failure: every request still unanswered gets the error."""
        batch.decoder.abandon()
        for pending in batch.requests:
            if not pending.handle.answered:
                pending.handle.deliver(error)
            pending.handle.deliver(_DONE)
        batch.requests = []

    def _guarded(self, batch: _Batch, action: Callable[..., None], *args: Any) -> None:
        """Run one step of `batch` (a token, or requests joining), then tell each request
        that has nothing left to decode that it is done. If the step fails, the batch ends
        and every request of it still unanswered gets the error."""
        try:
            action(*args)
        except JoinFailed as failure:  # the batch is as it was: only the newcomers are told
            for pending in batch.requests:
                joining = any(pending.rows is request for request in failure.requests)
                if joining and not pending.handle.answered:
                    pending.handle.deliver(failure.__cause__)
        except Exception as error:  # noqa: BLE001 - every unfinished request is told
            self._end(batch, error)
        still = []
        for pending in batch.requests:
            if pending.rows is not None and batch.decoder.decoding(pending.rows):
                still.append(pending)
            else:
                pending.handle.deliver(_DONE)
        batch.requests = still
        if not batch.decoder.width and batch in self._batches:
            self._batches.remove(batch)
