"""Chat requests answered together in one batch get the answers they get alone.

The batcher runs without its thread here (`run_pending`), so the contents of each batch
are exact. Everything runs in float32 (no bf16 autocast): batched and single rows then
agree to rounding on every CPU, so the comparison does not depend on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
import torch

from ftlab.models import DEFAULT_MODEL, load_model, prepare_for_inference
from ftlab.server import decoding, inference
from ftlab.server.batching import JOIN_IF_TOKENS_LEFT, ChatBatcher, ChatHandle
from ftlab.server.decoding import ContextTooLong, Delta, Sampling
from ftlab.support import SYSTEM_PROMPT


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]


# Prompts of different lengths and settings that end in every way a choice can end.
REQUESTS = [
    (ask("where is AC-10293??"), Sampling(max_tokens=40, temperature=0)),
    (
        ask("I ordered the trail boots two weeks ago and nothing has arrived, order AC-55512."),
        Sampling(max_tokens=40, temperature=0),
    ),
    (ask("Thanks, the jacket fits perfectly!"), Sampling(max_tokens=3, temperature=0)),
    (ask("Can I return the tent?"), Sampling(max_tokens=40, temperature=0, stop=[" not"])),
    (
        [{"role": "user", "content": "Name three colours."}],
        Sampling(max_tokens=12, temperature=1.0, n=3, seed=7),
    ),
]


@pytest.fixture(scope="module")
def loaded():
    model, tokenizer = load_model(DEFAULT_MODEL)
    # As the server prepares it, but with the weights kept in float32 on bf16 CPUs too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ftlab.models.compute_dtype", lambda device: torch.float32)
        prepare_for_inference(model)
    return model, tokenizer


@pytest.fixture
def float32_decoding(monkeypatch):
    """Decoding without bf16 autocast, the shared prompt prefix included."""
    for module in ("ftlab.server.decoding", "ftlab.generation"):
        monkeypatch.setattr(f"{module}.autocast", lambda device: contextlib.nullcontext())


@pytest.fixture
def batcher(loaded, float32_decoding):
    return ChatBatcher(lambda source: loaded, threaded=False)


def collect(handle: ChatHandle) -> tuple[list[str], list[str], tuple[int, int]]:
    """Each choice's text and finish reason, and the usage, read as the server reads them
    (`handle.deltas()` on an event loop); returns when the request is answered."""

    async def read() -> list[Delta]:
        return [delta async for delta in handle.deltas()]

    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for delta in asyncio.run(read()):
        texts[delta.index] = texts.get(delta.index, "") + delta.text
        if delta.finish_reason:
            assert delta.index not in reasons, "a choice finished twice"
            reasons[delta.index] = delta.finish_reason
    order = sorted(texts)
    usage = (handle.usage.prompt_tokens, handle.usage.completion_tokens)
    return [texts[i] for i in order], [reasons[i] for i in order if i in reasons], usage


@pytest.mark.slow
def test_requests_that_wait_together_are_one_batch_with_the_answers_they_get_alone(batcher):
    alone = []
    for messages, sampling in REQUESTS:
        handle = batcher.submit(DEFAULT_MODEL, messages, sampling)
        batcher.run_pending()
        alone.append(collect(handle))
    assert batcher.batch_sizes == [1, 1, 1, 1, 3]

    handles = [batcher.submit(DEFAULT_MODEL, m, s) for m, s in REQUESTS]
    batcher.run_pending()
    assert batcher.batch_sizes[5:] == [7], "all seven choices should share one batch"
    together = [collect(h) for h in handles]
    assert together == alone

    reasons = {reason for _, finishes, _ in alone for reason in finishes}
    assert reasons == {"stop", "length"}
    assert alone[2][1] == ["length"] and alone[2][2][1] == 3
    assert alone[3][1] == ["stop"] and " not" not in alone[3][0][0]
    assert len(set(alone[4][0])) > 1, "three sampled choices should differ"


@pytest.mark.slow
def test_a_batch_computes_the_shared_system_prompt_once_and_answers_the_same(
    batcher, loaded, monkeypatch
):
    prefixes: list[int] = []
    encode = decoding.encode_prefix
    monkeypatch.setattr(
        decoding,
        "encode_prefix",
        lambda model, ids: prefixes.append(len(ids)) or encode(model, ids),
    )
    support = REQUESTS[:4]  # every one starts with the course's system prompt
    alone = []
    for messages, sampling in support:
        handle = batcher.submit(DEFAULT_MODEL, messages, sampling)
        batcher.run_pending()
        alone.append(collect(handle))
    assert prefixes == [], "a batch of one row has nothing to share"

    handles = [batcher.submit(DEFAULT_MODEL, m, s) for m, s in support]
    batcher.run_pending()
    assert batcher.batch_sizes[-1] == 4
    assert [collect(h) for h in handles] == alone
    system_tokens = len(loaded[1](SYSTEM_PROMPT)["input_ids"])
    assert len(prefixes) == 1 and prefixes[0] > system_tokens, prefixes


@pytest.mark.slow
def test_a_batch_holds_at_most_max_rows_and_other_models_wait_their_turn(loaded, float32_decoding):
    sources = []

    def load(source):
        sources.append(source)
        return loaded

    batcher = ChatBatcher(load, max_rows=4, threaded=False)
    greedy = Sampling(max_tokens=3, temperature=0)
    handles = [
        batcher.submit("a", ask("hello"), greedy),
        batcher.submit("b", ask("hello"), greedy),
        batcher.submit("a", ask("hi"), Sampling(max_tokens=3, temperature=0, n=2)),
        batcher.submit("a", ask("hey"), Sampling(max_tokens=3, temperature=0, n=2)),
        batcher.submit("a", ask("yo"), greedy),
    ]
    batcher.run_pending()
    # "b" waits for "a" to finish; meanwhile "a" takes no more requests (or "b" could wait
    # for ever), and a request that does not fit holds back the later ones of its model.
    assert sources == ["a", "b", "a"]
    assert batcher.batch_sizes == [3, 1, 3]
    assert all(collect(h)[0] for h in handles)


def alone(batcher: ChatBatcher, messages: list[dict], sampling: Sampling):
    handle = batcher.submit(DEFAULT_MODEL, messages, sampling)
    batcher.run_pending()
    return collect(handle)


@pytest.mark.slow
def test_requests_join_a_batch_mid_way_and_get_the_answers_they_get_alone(batcher, monkeypatch):
    first = ask("I ordered the trail boots two weeks ago and nothing has arrived, order AC-55512.")
    longer = ask("My order AC-77120 arrived with a torn tent. " * 6)  # longer than the batch so far
    story = [{"role": "user", "content": "Write a story about a fox."}]  # shorter, nothing shared
    requests = [
        (first, Sampling(max_tokens=90, temperature=0)),  # may go on long enough to join
        (longer, Sampling(max_tokens=24, temperature=0)),
        (story, Sampling(max_tokens=120, temperature=0)),  # outlasts the others
    ]
    expected = [alone(batcher, m, s) for m, s in requests]
    batcher.batch_sizes.clear()
    cuts: list[int] = []
    cut = decoding._cut_front
    monkeypatch.setattr(decoding, "_cut_front", lambda cache, n: cuts.append(n) or cut(cache, n))

    borrowed: list[int] = []
    copy = decoding.DynamicCache
    monkeypatch.setattr(decoding, "DynamicCache", lambda **kv: borrowed.append(1) or copy(**kv))

    running = batcher.submit(DEFAULT_MODEL, *requests[0])
    for _ in range(3):
        batcher._turn()  # the first request's prompt and three tokens
    joining = [batcher.submit(DEFAULT_MODEL, *requests[1])]
    batcher._turn()
    joining.append(batcher.submit(DEFAULT_MODEL, *requests[2]))
    batcher.run_pending()
    assert batcher.batch_sizes == [1, 1, 1], "the two later requests should join the first"
    assert [collect(h) for h in (running, *joining)] == expected
    assert borrowed == [1], "the second request should start from the first's system prompt"
    assert cuts, "the padding left by the longer prompts should be cut once they finished"


def test_a_batch_of_short_answers_is_waited_for_not_joined(batcher):
    short = Sampling(max_tokens=JOIN_IF_TOKENS_LEFT, temperature=0)
    first = batcher.submit(DEFAULT_MODEL, ask("hello"), short)
    batcher._turn()
    later = batcher.submit(DEFAULT_MODEL, ask("hi"), short)
    batcher._turn()
    assert batcher.batch_sizes == [1], "a batch that ends soon should not be joined"
    batcher.run_pending()
    assert batcher.batch_sizes == [1, 1] and collect(first)[0] and collect(later)[0]


@pytest.mark.slow
def test_two_models_decode_in_turn_so_a_short_answer_does_not_wait_for_a_long_one(
    loaded, float32_decoding
):
    batcher = ChatBatcher(lambda source: loaded, threaded=False, max_models=2)
    story = [{"role": "user", "content": "Write a long story about a fox."}]
    long = batcher.submit("a", story, Sampling(max_tokens=60, temperature=0))
    batcher._turn()
    short = batcher.submit("b", ask("hello"), Sampling(max_tokens=3, temperature=0))
    while not short.answered:
        batcher._turn()
    assert not long.answered, "the second model's request waited for the first's"
    batcher.run_pending()
    assert collect(long)[2][1] == 60 and collect(short)[2][1] == 3


@pytest.mark.slow
def test_one_bad_or_cancelled_request_leaves_the_rest_of_its_batch_alone(batcher):
    greedy = Sampling(max_tokens=8, temperature=0)
    alone = batcher.submit(DEFAULT_MODEL, ask("where is AC-10293??"), greedy)
    batcher.run_pending()
    expected = collect(alone)

    too_long = batcher.submit(DEFAULT_MODEL, ask("boots " * 9000), greedy)
    gone = batcher.submit(DEFAULT_MODEL, ask("hello there"), greedy)
    mid_way = batcher.submit(DEFAULT_MODEL, ask("Can I return the tent?"), greedy)
    kept = batcher.submit(DEFAULT_MODEL, ask("where is AC-10293??"), greedy)
    bad_seed = batcher.submit(DEFAULT_MODEL, ask("hi"), Sampling(max_tokens=8, seed=2**70))
    bad_sampling = batcher.submit(DEFAULT_MODEL, ask("hi"), Sampling(8, temperature=float("nan")))
    gone.cancel()  # the client left before its batch started

    deliver = mid_way.deliver

    def leave_after_first(event):  # ...and this one after its first piece of text
        deliver(event)
        mid_way.cancel()

    mid_way.deliver = leave_after_first
    batcher.run_pending()

    with pytest.raises(ContextTooLong, match="maximum context length"):
        collect(too_long)
    assert collect(gone) == ([], [], (0, 0))
    texts, reasons, _ = collect(mid_way)
    assert len(texts) == 1 and reasons == [], "a cancelled choice stops without finishing"
    with pytest.raises((RuntimeError, ValueError, OverflowError)):
        collect(bad_seed)  # settings the API refuses, failing only their own request here
    with pytest.raises(RuntimeError):
        collect(bad_sampling)
    assert collect(kept) == expected
    assert batcher.batch_sizes[-1] == 4


@pytest.mark.slow
def test_a_failure_mid_batch_reaches_only_the_requests_still_answering(loaded, float32_decoding):
    model, tokenizer = loaded

    class FailsOnFourthStep:
        """The real model, until its fourth forward pass fails as a crash would."""

        steps = 0

        def __getattr__(self, name):
            return getattr(model, name)

        def __call__(self, **inputs):
            self.steps += 1
            if self.steps == 4:
                raise RuntimeError("the decoding step failed")
            return model(**inputs)

    batcher = ChatBatcher(lambda source: (FailsOnFourthStep(), tokenizer), threaded=False)
    short = batcher.submit(DEFAULT_MODEL, ask("hello"), Sampling(max_tokens=2, temperature=0))
    long = batcher.submit(DEFAULT_MODEL, ask("hello"), Sampling(max_tokens=20, temperature=0))
    batcher.run_pending()

    texts, reasons, usage = collect(short)  # finished at step 2: its answer stands
    assert texts[0] and reasons == ["length"] and usage[1] == 2
    with pytest.raises(RuntimeError, match="the decoding step failed"):
        collect(long)


@pytest.mark.slow
def test_a_short_answer_returns_before_the_batch_ends(loaded, float32_decoding):
    batcher = ChatBatcher(lambda source: loaded)  # with its thread, as in the server
    story = [{"role": "user", "content": "Write a long story about a fox."}]
    long = batcher.submit(DEFAULT_MODEL, story, Sampling(max_tokens=60, temperature=0))
    short = batcher.submit(DEFAULT_MODEL, ask("hello"), Sampling(max_tokens=2, temperature=0))
    texts, reasons, usage = collect(short)  # returns once its two tokens are out
    assert reasons == ["length"] and usage[1] == 2
    assert not long.answered, "the short request had to wait for the long one"
    texts, reasons, usage = collect(long)
    assert reasons == ["length"] and usage[1] == 60
    assert batcher.batch_sizes == [2]


def test_an_answer_cut_by_max_tokens_inside_a_character_ends_before_it(tokenizer):
    ids = tokenizer.encode("Happy trails! 🌲", add_special_tokens=False)
    cut = next(k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    choice = decoding._Choice(tokens=ids[:cut])
    assert choice.finish(tokenizer, 0, "length").text == "Happy trails! "
    ended = decoding._Choice(tokens=ids[:cut]).finish(tokenizer, 0, "stop")
    assert ended.text.endswith("\ufffd")  # the model itself ended there: its text is kept


@pytest.mark.slow
def test_a_request_that_fails_to_join_leaves_the_batch_it_joins_alone(loaded, float32_decoding):
    model, tokenizer = loaded

    class PromptsFail:
        """The real model, except that computing a prompt fails while `failing` is set."""

        failing = False

        def __getattr__(self, name):
            return getattr(model, name)

        def __call__(self, **inputs):
            if self.failing and inputs["input_ids"].shape[1] > 1:
                raise RuntimeError("out of memory computing the prompt")
            return model(**inputs)

    flaky = PromptsFail()
    batcher = ChatBatcher(lambda source: (flaky, tokenizer), threaded=False)
    story = [{"role": "user", "content": "Write a long story about a fox."}]
    long = Sampling(max_tokens=80, temperature=0)
    expected = alone(batcher, story, long)

    running = batcher.submit(DEFAULT_MODEL, story, long)
    batcher._turn()
    flaky.failing = True
    joining = batcher.submit(DEFAULT_MODEL, ask("hello"), Sampling(max_tokens=5, temperature=0))
    broken = batcher.submit(DEFAULT_MODEL, [{"content": "hi"}], long)  # no role: no prompt
    batcher._turn()
    flaky.failing = False
    batcher.run_pending()
    with pytest.raises(RuntimeError, match="out of memory computing the prompt"):
        collect(joining)
    with pytest.raises(Exception, match="role"):
        collect(broken)
    assert collect(running) == expected


def test_models_still_decoding_are_not_dropped_from_the_model_cache():
    """The cache's rule only: a loaded model is replaced by a name, as real loads take time."""
    cache = inference.ModelCache(2)

    def add(name: str, keep: set[str] = frozenset()) -> None:
        cache.add(name, (f"model {name}", None), keep, stamp=())

    add("a")
    add("b")
    add("c", keep={"a"})  # "a" is decoding: "b" makes room, though used more recently
    assert list(cache._models) == ["a", "c"]
    add("d", keep={"a", "c"})  # nothing may go: one more for now
    assert list(cache._models) == ["a", "c", "d"]
    add("e")
    assert list(cache._models) == ["d", "e"]


def test_a_model_whose_folder_changed_is_loaded_again(monkeypatch, tmp_path):
    """The server's loader (`Inference._load`): from the cache while the files are the same."""
    from ftlab.server.store import Store

    loads = []
    monkeypatch.setattr(inference, "load_for_inference", lambda s: loads.append(s) or (s, None))
    server = inference.Inference(Store(tmp_path / "data"))
    adapter = tmp_path / "adapter"
    weights = adapter / "adapter_model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"old")
    for source in (str(adapter), str(adapter), DEFAULT_MODEL, DEFAULT_MODEL):
        server._load(source)
    assert loads == [str(adapter), DEFAULT_MODEL]
    weights.with_suffix(".new").write_bytes(b"new weights")
    weights.with_suffix(".new").replace(weights)  # as `ftlab train` replaces its files
    server._load(str(adapter))
    server._load(DEFAULT_MODEL)
    assert loads == [str(adapter), DEFAULT_MODEL, str(adapter)]
    server.store.close()


def test_a_request_never_joins_a_batch_of_a_model_whose_files_changed(loaded, float32_decoding):
    """A learner retrains the adapter a batch is answering with: later requests wait for that
    batch to end and get the model loaded again, not the old one's answers."""
    versions = {"mine": 1}
    loads = []
    batcher = ChatBatcher(
        lambda source: loads.append(source) or loaded, threaded=False, version=versions.get
    )
    long = Sampling(max_tokens=JOIN_IF_TOKENS_LEFT + 20, temperature=0)  # long enough to join
    story = [{"role": "user", "content": "Write a story about a fox."}]
    first = batcher.submit("mine", story, long)
    batcher._turn()
    versions["mine"] = 2  # the folder was written again
    later = batcher.submit("mine", ask("hello"), Sampling(max_tokens=5, temperature=0))
    batcher._turn()
    assert batcher.batch_sizes == [1], "the request should not join the old model's batch"
    batcher.run_pending()
    assert batcher.batch_sizes == [1, 1] and loads == ["mine", "mine"]
    assert collect(first)[0] and collect(later)[0]


@pytest.mark.slow
def test_a_model_loading_does_not_pause_the_batches_decoding(loaded, float32_decoding):
    """Loading and merging a fine-tuned model takes seconds: it happens on its own thread."""
    release = threading.Event()
    timer = threading.Timer(120, release.set)  # had the load blocked decoding, this ends it
    timer.start()
    tokens_when_the_load_began = []

    def load(source):
        if source == "slow":
            tokens_when_the_load_began.append(long.usage.completion_tokens)
            release.wait()
        if source == "broken":
            raise OSError("no adapter_config.json in runs/broken")
        return loaded

    batcher = ChatBatcher(load, max_models=3)  # with its thread, as in the server
    story = [{"role": "user", "content": "Write a long story about a fox."}]
    long = batcher.submit("a", story, Sampling(max_tokens=60, temperature=0))
    slow = batcher.submit("slow", ask("hello"), Sampling(max_tokens=3, temperature=0))
    broken = batcher.submit("broken", ask("hello"), Sampling(max_tokens=3, temperature=0))
    try:
        assert collect(long)[2][1] == 60
        assert not release.is_set(), "the long answer waited for another model's load"
        assert tokens_when_the_load_began[0] < 60  # so its tokens came while the load waited
        with pytest.raises(OSError, match="adapter_config"):
            collect(broken)
    finally:
        release.set()
        timer.cancel()
    assert collect(slow)[2][1] == 3


@pytest.mark.slow
def test_a_load_nobody_waits_for_any_more_hands_its_place_on(loaded, float32_decoding):
    release, began = threading.Event(), threading.Event()

    def load(source):
        if source == "x":
            began.set()
            release.wait()
        return loaded

    batcher = ChatBatcher(load, max_models=1)
    left = batcher.submit("x", ask("hello"), Sampling(max_tokens=3, temperature=0))
    assert began.wait(60)
    left.cancel()  # its client went away while "x" loaded
    waiting = batcher.submit("y", ask("hello"), Sampling(max_tokens=3, temperature=0))
    woken = threading.Event()

    def wake_it():  # had "y" been forgotten, only another request would wake the batcher
        woken.set()
        batcher.submit("y", ask("hi"), Sampling(max_tokens=1, temperature=0))

    watchdog = threading.Timer(60, wake_it)
    watchdog.start()
    release.set()
    try:
        assert collect(waiting)[2][1] == 3
        assert not woken.is_set(), "the request for y waited for another request to wake it"
    finally:
        watchdog.cancel()


def test_a_closed_batcher_answers_waiting_and_later_requests_with_its_error():
    def load(source):
        raise AssertionError("a closed batcher loads nothing")

    batcher = ChatBatcher(load, threaded=False)
    waiting = batcher.submit(DEFAULT_MODEL, ask("hello"), Sampling(max_tokens=2))
    stopping = RuntimeError("the server is stopping")
    batcher.close(stopping)
    later = batcher.submit(DEFAULT_MODEL, ask("hello"), Sampling(max_tokens=2))
    batcher.run_pending()  # nothing left to answer
    for handle in (waiting, later):
        with pytest.raises(RuntimeError, match="the server is stopping"):
            collect(handle)
