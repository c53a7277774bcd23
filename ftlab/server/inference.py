"""Chat completions for the base model, fine-tuned models and checkpoints.

Loaded models stay in a small LRU cache so the second request is fast. One thread
generates (`ftlab.server.batching`): on a CPU, two generations at once would only
share the same cores, while requests that arrive together are answered in one batch.
A streamed answer reads its text from its handle as the batch produces it; a client
that goes away mid-stream cancels its rows and leaves the rest of the batch running.
Requests wait for their answers on the event loop, not in the web server's few worker
threads, so job polls and uploads are answered at once however many chats are waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ftlab.models import (
    DEFAULT_MODEL,
    ModelNotFoundError,
    adapter_base_model,
    builtin_model_dir,
    is_adapter_dir,
    load_model,
    prepare_for_inference,
    run_adapter,
)
from ftlab.server.batching import ChatBatcher, ChatHandle
from ftlab.server.decoding import ContextTooLong, Delta, Sampling, Usage
from ftlab.server.defaults import DEFAULT_CHAT_BATCH
from ftlab.server.errors import (
    APIError,
    invalid_value,
    missing_parameter,
    model_not_found,
    unrecognized,
)
from ftlab.server.store import Store, new_id

BASE_MODELS = (DEFAULT_MODEL,)
# OpenAI lets an answer run to the end of the context; a 135M model on a CPU that
# has lost its way would take minutes, so an unset max_tokens means this many.
DEFAULT_MAX_TOKENS = 512
# The most one request may ask for: a class shares the server's decoding, and a 135M model
# never needs more for this course (on a 2-core CPU, 2,048 tokens take a minute or more).
MAX_TOKENS_LIMIT = 2048
# How often a request waiting for its whole answer checks that its client is still there.
CLIENT_CHECK_S = 0.5
ROLES = {"system", "developer", "user", "assistant"}


_PUTTING_BACK = threading.Lock()  # see Inference._served_adapter


def served_adapters(pairs: Mapping[str, str | Path]) -> dict[str, str]:
    """Model names and adapter folders given to `ftlab serve --adapter NAME=FOLDER`, checked:
    each is a LoRA adapter (or a training run's folder) of the built-in model, under a name
    of its own. Raises ValueError saying what to fix."""
    served = {}
    for name, folder in pairs.items():
        where = f"--adapter {name}={folder}"
        if not name or name != name.strip() or any(c.isspace() for c in name):
            raise ValueError(f"{where}: the model name must be one word, without spaces.")
        if name in BASE_MODELS or name.startswith("ft:"):
            raise ValueError(
                f"{where}: {name!r} is the name of the base model or of a fine-tuned one "
                "(ft:...). Fix: serve the adapter under another name."
            )
        adapter = run_adapter(Path(folder).expanduser())
        if not is_adapter_dir(adapter):
            unfinished = (Path(folder).expanduser() / "checkpoints").is_dir()
            raise ValueError(
                f"{where}: there is no LoRA adapter in {folder} (no adapter_config.json). "
                + (
                    "That run has not finished: serve it once `ftlab train` is done, or serve "
                    "one of its checkpoints/epoch-N folders."
                    if unfinished
                    else "Fix: give the folder `ftlab train --out` wrote, or its adapter/ folder."
                )
            )
        if problem := base_problem(adapter):
            raise ValueError(f"{where}: {problem}")
        served[name] = str(Path(adapter).resolve())
    return served


def base_problem(adapter: str | Path) -> str | None:
    """Why this server cannot serve an adapter folder (its base model is not the built-in
    one, or cannot be read), or None."""
    try:
        base = adapter_base_model(adapter)
    except ModelNotFoundError as error:
        return str(error)
    if base in (DEFAULT_MODEL, str(builtin_model_dir())):
        return None
    return (
        f"that adapter was trained from {base}, and this server serves {DEFAULT_MODEL} and the "
        "models fine-tuned from it. Fix: use `ftlab eval` or `ftlab.models.load_model` for "
        "adapters of other models."
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


# OpenAI's other chat fields. These change nothing in an answer, and are accepted and ignored:
IGNORED_CHAT_FIELDS = frozenset(
    {"user", "metadata", "store", "service_tier", "safety_identifier", "parallel_tool_calls"}
    | {"prompt_cache_key", "prompt_cache_options", "prompt_cache_retention"}
)
# These would change the answer in a way the local server cannot: refused, saying so (unless
# they ask for what it does anyway: HARMLESS_VALUES).
UNSUPPORTED_CHAT_FIELDS = frozenset(
    {"audio", "modalities", "prediction", "reasoning_effort", "verbosity", "web_search_options"}
    | {"functions", "function_call", "moderation"}
)
HARMLESS_VALUES = (None, [], ["text"], "none", "medium")  # "medium": verbosity's default


class ChatRequest(BaseModel):
    """The fields of `POST /v1/chat/completions` that the local server honours.

    Strictly typed, as OpenAI's are (and the job's hyperparameters): "0.5" is not a
    temperature, nor "yes" a stream."""

    model_config = ConfigDict(extra="allow", strict=True)  # others: see `unsupported`

    model: str
    messages: list[dict[str, Any]]
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)  # what torch's generators take
    n: int | None = Field(None, ge=1, le=16)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # Asked for, these would change the answer's form; the local server cannot give them, so
    # it says so rather than answer as if they had not been asked for.
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(parameter, why) for a feature asked for that this server does not have, or None.

        Fields that OpenAI's API does not have either are refused by `sampling`, as OpenAI
        refuses them: a misspelt option must not give an answer made without it."""
        for name, value in (self.model_extra or {}).items():
            if name in UNSUPPORTED_CHAT_FIELDS and value not in HARMLESS_VALUES:
                return name, f"{name} is not supported by the local server; leave it out."
        if self.logprobs:
            return "logprobs", "log probabilities are not supported by the local server."
        if self.top_logprobs:
            return "top_logprobs", "log probabilities are not supported by the local server."
        if self.tools or self.tool_choice not in (None, "none"):
            return "tools", "tool calling is not supported by the local server."
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            return "response_format", (
                f"{kind!r} is not supported by the local server; leave response_format out "
                "and ask for the format in the system prompt (or fine-tune for it)."
            )
        for name in ("presence_penalty", "frequency_penalty", "logit_bias"):
            if getattr(self, name):  # 0 and {} ask for nothing, and are accepted
                return name, f"{name} is not supported by the local server; leave it out."
        if self.stream_options is not None and not self.stream:
            return "stream_options", "stream_options is only allowed when stream is true."
        return None

    def sampling(self) -> Sampling:
        known = UNSUPPORTED_CHAT_FIELDS | IGNORED_CHAT_FIELDS
        for name in self.model_extra or {}:
            if name not in known:
                raise unrecognized(name, [*type(self).model_fields, *known])
        if (problem := self.unsupported()) is not None:
            raise invalid_value(*problem)
        for name in ("max_tokens", "max_completion_tokens"):
            if (getattr(self, name) or 0) > MAX_TOKENS_LIMIT:
                raise invalid_value(
                    name,
                    f"this server writes at most {MAX_TOKENS_LIMIT} tokens per answer (it is "
                    f"shared, and long answers on a CPU take minutes); ask for {MAX_TOKENS_LIMIT} "
                    "or fewer.",
                )
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise invalid_value("stop", "at most 4 stop sequences are allowed.")
        return Sampling(
            max_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            n=self.n or 1,
            stop=stops,
            seed=self.seed,
        )


def plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Check the messages and flatten content parts to text for the chat template."""
    if not messages:
        raise invalid_value("messages", "expected a non-empty array of messages.")
    plain = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role is None:
            raise missing_parameter(f"messages[{index}].role")
        if not isinstance(role, str):
            raise invalid_value(
                f"messages[{index}].role", f"expected a string such as 'user', not {role!r}."
            )
        if role in ("tool", "function"):
            raise invalid_value(
                f"messages[{index}].role",
                f"a {role!r} message answers a tool call, and the local server does not support "
                "tool calling; leave it out.",
            )
        if role not in ROLES:
            raise invalid_value(
                f"messages[{index}].role", f"{role!r} is not one of {', '.join(sorted(ROLES))}."
            )
        content = message.get("content")
        if content is None:  # OpenAI allows it only beside tool calls
            raise missing_parameter(f"messages[{index}].content")
        if isinstance(content, list):
            texts = [p.get("text") for p in content if isinstance(p, dict)]
            if not all(isinstance(t, str) for t in texts) or len(texts) != len(content):
                raise invalid_value(
                    f"messages[{index}].content", "only text content parts are supported."
                )
            content = "".join(texts)
        elif not isinstance(content, str):
            raise invalid_value(f"messages[{index}].content", "expected a string or an array.")
        plain.append({"role": "system" if role == "developer" else role, "content": content})
    return plain


def files_stamp(source: str) -> tuple[tuple[str, int, int, int], ...]:
    """What identifies the files of an adapter folder as they are now (empty for a base model's
    name): a folder that `ftlab train` has written again since it was loaded has another."""
    path = Path(source)
    stamp = []
    try:
        for file in sorted(path.iterdir()) if path.is_dir() else []:
            if file.name.startswith("adapter_"):  # adapter_config.json, adapter_model.*
                found = file.stat()
                stamp.append((file.name, found.st_ino, found.st_mtime_ns, found.st_size))
    except OSError:  # the folder is being replaced: loading it again will say what is wrong
        return (("unreadable", 0, 0, 0),)
    return tuple(stamp)


class ModelCache:
    """At most `size` loaded models, the least recently used dropped first.

    A model whose folder changed after it was loaded (an adapter retrained into the folder
    `ftlab serve --adapter` serves) counts as not loaded, so the next request gets the new one.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._models: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._stamps: dict[str, tuple] = {}

    def lookup(self, source: str) -> tuple[Any, Any] | None:
        """The model if it is loaded (and now the most recently used), else None."""
        if source in self._models and self._stamps.get(source) != files_stamp(source):
            self.drop(source)
        if source in self._models:
            self._models.move_to_end(source)
            return self._models[source]
        return None

    def add(
        self, source: str, loaded: tuple[Any, Any], keep: Collection[str], stamp: tuple
    ) -> tuple[Any, Any]:
        """Keep a model loaded from files with `stamp` (`files_stamp` taken before loading);
        making room drops the least recently used one not in `keep` (models decoding now
        stay: they are in memory until their batch ends anyway)."""
        self._models[source] = loaded
        self._stamps[source] = stamp
        self._models.move_to_end(source)
        for old in [name for name in self._models if name not in keep and name != source]:
            if len(self._models) <= self.size:
                break
            self.drop(old)
        return loaded

    def drop(self, source: str) -> None:
        self._models.pop(source, None)
        self._stamps.pop(source, None)


def load_for_inference(source: str) -> tuple[Any, Any]:
    """Load a model (merging its adapter) and prepare it for answering chats."""
    loaded = load_model(source)
    prepare_for_inference(loaded[0])
    return loaded


class Inference:
    """Resolves model names for an owner and answers chat completion requests."""

    def __init__(
        self,
        store: Store,
        max_models: int = 3,
        max_batch_rows: int = DEFAULT_CHAT_BATCH,
        adapters: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        # Adapters trained elsewhere (`ftlab train`), served to every key under these names.
        self.adapters = dict(adapters or {})
        self.cache = ModelCache(max_models)
        self.lock = threading.Lock()  # guards the cache: the batcher loads, deletions forget
        self.batcher = ChatBatcher(
            self._load, max_rows=max_batch_rows, max_models=max_models, version=files_stamp
        )

    def stop(self) -> None:
        """The server is stopping: every chat in flight, and any later one, gets a 503 now.

        uvicorn waits for open requests before the app shuts down; a long answer would
        hold it until its grace period ran out, and then the client got a bare 500."""
        self.batcher.close(
            APIError(
                503,
                "The server is stopping (Ctrl-C, or a restart), so this answer was not "
                "finished. Send the request again once the server is back: its files, jobs "
                "and models are kept.",
                type="server_error",
                code="server_stopping",
            )
        )

    def source(self, owner: str, name: str) -> str:
        """What `load_model` loads for a model name this owner may use."""
        if name in BASE_MODELS:
            return name
        if name in self.adapters:
            return self._served_adapter(name)
        model = self.store.get_model(owner, name)
        found = model or self.store.get_checkpoint_model(owner, name)
        if found is None and ("/" in name or name.startswith(".")):  # runs/03_lora, say
            raise model_not_found(
                name,
                "This server serves its own models, not folders or hub ids: an adapter trained "
                "with `ftlab train` is served when the server is started with "
                "`--adapter NAME=FOLDER`, as the model NAME; client.models.list() shows the "
                "ones you can use.",
            )
        if found is None:
            raise model_not_found(name)
        if not Path(found["path"]).is_dir():
            redo = (
                "delete it (client.models.delete) and fine-tune it again"
                if model
                else "fine-tune again"
            )
            raise APIError(  # 404, not 500: the SDK would retry a 5xx twice, in vain
                404,
                f"The model `{name}` exists, but its files are missing: there is no folder "
                f"{found['path']}. If the server's data folder ({self.store.root}) was copied "
                "from elsewhere, copy its models/ and jobs/ folders too, next to ftlab.db; if "
                f"the files were deleted, {redo}.",
                type="server_error",
                param="model",
                code="model_files_missing",
            )
        return found["path"]

    def _served_adapter(self, name: str) -> str:
        """The folder of an adapter served with `--adapter`, checked again on every request:
        a learner may be training into it again (with another base model, even)."""
        folder = self.adapters[name]
        if not is_adapter_dir(folder):
            # Puts back a run that a crashed new run had set aside; one request at a time, and
            # a training run in the folder (ModelNotFoundError) or a folder this server may
            # not change (OSError) leaves it as it is: the 404 below says what to do.
            with _PUTTING_BACK, contextlib.suppress(ModelNotFoundError, OSError):
                run_adapter(folder)
        if not is_adapter_dir(folder):
            raise APIError(  # 404, not 500: the SDK would retry a 5xx twice, in vain
                404,
                f"The model `{name}` is served from a folder (`ftlab serve --adapter`) that has "
                "no adapter now. If `ftlab train` is training that run again (it sets the "
                "earlier adapter aside), ask again once it has finished: no restart is needed. "
                "If the folder was deleted, restart the server with an --adapter folder that "
                "exists.",
                type="server_error",
                param="model",
                code="model_files_missing",
            )
        if problem := base_problem(folder):
            raise APIError(
                404,
                f"The model `{name}` (`ftlab serve --adapter`) cannot be served any more: "
                f"{problem}",
                param="model",
                code="model_not_supported",
            )
        return folder

    def forget(self, source: str) -> None:
        with self.lock:
            self.cache.drop(source)

    def _load(self, source: str) -> tuple[Any, Any]:
        """The batcher's loader, called on a thread of its own per model: a model already
        loaded is returned at once, even while another one loads (seconds, outside the lock).
        """
        with self.lock:
            found = self.cache.lookup(source)
        if found is not None:
            return found
        stamp = files_stamp(source)  # before loading: files written meanwhile are newer
        loaded = load_for_inference(source)
        with self.lock:  # which models are wanted is asked now, not before the load
            return self.cache.add(source, loaded, self.batcher.decoding_sources(), stamp)

    def _submit(self, request: ChatRequest, owner: str) -> ChatHandle:
        """Validate everything that can fail before any output exists, then queue it."""
        messages = plain_messages(request.messages)
        sampling = request.sampling()
        source = self.source(owner, request.model)
        return self.batcher.submit(source, messages, sampling)

    async def submit(self, request: ChatRequest, owner: str) -> ChatHandle:
        """Queue a request (the model lookup reads the store, so on a worker thread)."""
        return await run_in_threadpool(self._submit, request, owner)

    async def complete(
        self,
        request: ChatRequest,
        owner: str,
        client_left: Callable[[], Awaitable[bool]] | None = None,
    ) -> dict[str, Any] | None:
        """The whole answer, or None if `client_left()` turned true first.

        A client that gives up (its timeout, a restarted kernel) takes its request out of
        the queue, or its rows out of their batch: otherwise a busy server would go on
        answering requests nobody reads, and the SDK's retries would add more.
        """
        handle = await self.submit(request, owner)
        texts = [""] * (request.n or 1)
        reasons = ["stop"] * len(texts)

        async def read() -> None:
            async for delta in handle.deltas():
                texts[delta.index] += delta.text
                reasons[delta.index] = delta.finish_reason or reasons[delta.index]

        reading = asyncio.ensure_future(read())
        try:
            if not await _finished(reading, client_left):
                return None
            _result(reading)
        finally:
            reading.cancel()
            handle.cancel()  # a no-op once answered
        return {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": reason,
                }
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ],
            "usage": _usage(handle.usage),
            "system_fingerprint": None,
        }

    async def stream(
        self,
        request: ChatRequest,
        owner: str,
        client_left: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[str] | None:
        """Server-sent events: a role chunk per choice, content chunks, a finish chunk per
        choice, an optional usage chunk, then `[DONE]`; None if `client_left()` turned
        true before the answer started.

        The response starts with the answer's first delta, so a request that fails before
        (a prompt longer than the context, found when its batch starts) gets the same
        HTTP error as without streaming. Later errors become an `error` frame.
        """
        handle = await self.submit(request, owner)
        deltas = handle.deltas()
        first = asyncio.ensure_future(anext(deltas, None))
        try:
            if await _finished(first, client_left):
                return self._frames(request, handle, _prepend(_result(first), deltas))
        except BaseException:
            handle.cancel()
            raise
        finally:
            first.cancel()  # a no-op once it has its delta
        handle.cancel()
        return None

    async def _frames(
        self, request: ChatRequest, handle: ChatHandle, deltas: AsyncIterator[Delta]
    ) -> AsyncIterator[str]:
        base = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": None,
        }

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

        try:
            for index in range(request.n or 1):
                yield chunk([_choice(index, {"role": "assistant", "content": ""})])
            async for delta in deltas:
                if delta.text:
                    yield chunk([_choice(delta.index, {"content": delta.text})])
                if delta.finish_reason:
                    yield chunk([_choice(delta.index, {}, delta.finish_reason)])
            if request.stream_options and request.stream_options.include_usage:
                yield chunk([], usage=_usage(handle.usage))
            yield "data: [DONE]\n\n"
        except Exception as error:  # noqa: BLE001 - reported to the client in-stream
            code = "context_length_exceeded" if isinstance(error, ContextTooLong) else None
            message = f"{type(error).__name__}: {error}"
            reported = (
                error
                if isinstance(error, APIError)  # the server stopping, say: its own words
                else APIError(500, message, type="server_error", code=code)
            )
            yield f"data: {json.dumps(reported.body())}\n\n"
        finally:
            handle.cancel()  # a no-op once finished; stops the rows of a client that left


async def _finished(
    task: asyncio.Future, client_left: Callable[[], Awaitable[bool]] | None
) -> bool:
    """Wait for `task`; False if `client_left()` turned true first."""
    while not task.done():
        await asyncio.wait({task}, timeout=CLIENT_CHECK_S)
        if not task.done() and client_left is not None and await client_left():
            return False
    return True


def _result(task: asyncio.Future) -> Any:
    """The finished `task`'s result; a prompt too long for the model is the client's error."""
    try:
        return task.result()
    except ContextTooLong as error:
        raise APIError(400, str(error), param="messages", code="context_length_exceeded") from error


async def _prepend(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    if first is not None:
        yield first
    async for delta in rest:
        yield delta


def _choice(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
