"""Serving a text run: /v1/completions driven by the official `openai` client on a real loopback
server (plain, n > 1, stop, streaming, errors, auth), continuous batching (determinism amid other
requests, requests joining a running batch, slots freed on disconnect), metrics and routes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from genforge.cli import app
from genforge.models.pipeline import load_pipeline
from test_serve_models import make_run, serving

openai = pytest.importorskip("openai", reason="the openai client is a test dependency (pip install openai)")

KEY = "t3xt-key"
CORPUS = (
    "ROMEO: But soft, what light through yonder window breaks?\n"
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?\n"
    "ROMEO: It is the east, and Juliet is the sun.\n"
)


def make_text_run(directory: Path, steps: int = 5) -> Path:
    """A text run as a user makes one: CORPUS ingested (char tokenizer), then a small GPT trained
    for a few steps; returns the run directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.txt").write_text(CORPUS * 8, encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(
        app, ["data", "ingest", str(directory / "corpus.txt"), "--out", str(directory / "data")]
    )
    assert res.exit_code == 0, res.output
    size = ["model.block_size=32", "model.n_layer=2", "model.n_head=2", "model.n_embd=32"]
    args = ["train", "--model", "gpt", "--data", str(directory / "data"), "--out", str(directory / "run")]
    res = runner.invoke(
        app, [*args, "--steps", str(steps), "--batch-size", "8", *(f"--set={s}" for s in size)]
    )
    assert res.exit_code == 0, res.output
    return directory / "run"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    return make_text_run(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def text(text_run):
    run = text_run
    # a chunk per token (stream_interval_ms 0): the streaming tests below see each token's event
    with serving(run, api_key=KEY, max_n=8, max_tokens=200, max_prompt_tokens=64, stream_interval_ms=0) as server:
        yield server, load_pipeline(run)


def client(server, key: str | None = KEY):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key or "none", max_retries=0, timeout=60)


def test_completion_equals_the_pipeline(text):
    server, pipe = text
    resp = client(server).completions.create(
        model="gpt",
        prompt="ROMEO:",
        max_tokens=40,
        temperature=0.8,
        top_p=0.95,
        seed=5,
        extra_body={"top_k": 10},
    )
    [want] = pipe.complete(["ROMEO:"], max_tokens=40, temperature=0.8, top_k=10, top_p=0.95, seed=5)
    assert resp.object == "text_completion" and resp.model == "gpt" and resp.id.startswith("cmpl-")
    [choice] = resp.choices
    assert choice.text == want.text and len(choice.text) == 40  # char tokenizer: a token is a character
    assert choice.finish_reason == "length" and choice.index == 0 and choice.logprobs is None
    assert (
        resp.usage.prompt_tokens == 6 and resp.usage.completion_tokens == 40 and resp.usage.total_tokens == 46
    )
    # another seed, another text; the same seed, the same text
    other = client(server).completions.create(model="gpt", prompt="ROMEO:", max_tokens=40, seed=6)
    again = client(server).completions.create(model="gpt", prompt="ROMEO:", max_tokens=40, seed=6)
    assert other.choices[0].text == again.choices[0].text != choice.text


def test_the_int8_runtime_serves_what_the_pipeline_makes_with_it(text_run):
    """`--text-runtime onnx-int8`: the service's completions (plain and streamed, through OpenAI's
    client) are the pipeline's under the same runtime."""
    pytest.importorskip("onnxruntime")
    pipe = load_pipeline(text_run)
    want = pipe.complete(["ROMEO:", "JULIET: O"], n=2, max_tokens=30, temperature=0.8, seed=3, runtime="onnx-int8")
    with serving(text_run, text_runtime="onnx-int8") as server:
        got = client(server, None).completions.create(
            model="gpt", prompt=["ROMEO:", "JULIET: O"], n=2, max_tokens=30, temperature=0.8, seed=3
        )
        stream = client(server, None).completions.create(
            model="gpt", prompt="ROMEO:", max_tokens=30, temperature=0.8, seed=3, stream=True
        )
        streamed = "".join(chunk.choices[0].text for chunk in stream)
    assert [c.text for c in got.choices] == [w.text for w in want]
    assert streamed == want[0].text and len(streamed) == 30


def test_n_and_several_prompts(text):
    server, pipe = text
    prompts = ["ROMEO:", "JULIET: O"]
    resp = client(server).completions.create(model="gpt", prompt=prompts, n=3, max_tokens=12, seed=9)
    want = pipe.complete(prompts, n=3, max_tokens=12, seed=9)
    assert [c.index for c in resp.choices] == list(range(6))
    assert [c.text for c in resp.choices] == [w.text for w in want]
    assert len({c.text for c in resp.choices}) == 6  # each completion draws on its own
    assert resp.usage.prompt_tokens == 6 + 9 and resp.usage.completion_tokens == 6 * 12


def test_stop_sequences(text):
    server, pipe = text
    c = client(server)
    full = c.completions.create(model="gpt", prompt="JULIET:", max_tokens=60, seed=2).choices[0].text
    stop = full[20:22]  # occurs in the text: it must end there, at its first occurrence
    cut = full[: full.index(stop)]
    resp = c.completions.create(model="gpt", prompt="JULIET:", max_tokens=60, seed=2, stop=stop)
    assert resp.choices[0].text == cut and resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == len(cut) + len(stop)  # the stop string's tokens were generated
    assert cut == pipe.complete(["JULIET:"], max_tokens=60, seed=2, stop=stop)[0].text
    # a list of stops: the earliest one wins; one that never occurs changes nothing
    early = full[5]
    resp = c.completions.create(
        model="gpt", prompt="JULIET:", max_tokens=60, seed=2, stop=["\x07", stop, early]
    )
    assert resp.choices[0].text == full[: full.index(early)]
    resp = c.completions.create(model="gpt", prompt="JULIET:", max_tokens=60, seed=2, stop="\x07never")
    assert resp.choices[0].text == full and resp.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stop", [None, "STOP-FROM-TEXT"])
def test_stream_equals_the_plain_response(text, stop):
    server, _ = text
    c = client(server)
    kwargs = dict(model="gpt", prompt=["ROMEO:", "JULIET:"], n=2, max_tokens=50, seed=11, temperature=0.9)
    if stop:
        full = c.completions.create(**kwargs).choices[0].text
        kwargs["stop"] = full[30:33]
    plain = c.completions.create(**kwargs)
    texts, finish, chunks = [""] * 4, [None] * 4, 0
    usage = None
    for chunk in c.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
        assert chunk.object == "text_completion" and chunk.id.startswith("cmpl-")
        if not chunk.choices:  # the usage chunk, last
            usage = chunk.usage
            continue
        chunks += 1
        for choice in chunk.choices:
            assert finish[choice.index] is None, "text after the finish reason"
            texts[choice.index] += choice.text
            finish[choice.index] = choice.finish_reason
    assert texts == [ch.text for ch in plain.choices]
    assert finish == [ch.finish_reason for ch in plain.choices]
    assert chunks > 4  # streamed piece by piece, not in one go
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens
    if stop:
        assert "stop" in finish


def test_stream_wire_format(text):
    """The raw server-sent events: `data: {json}` blocks, then `data: [DONE]`."""
    server, _ = text
    body = {"model": "gpt", "prompt": "ROMEO:", "max_tokens": 5, "seed": 1, "stream": True}
    with httpx.stream(
        "POST", server.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    blocks = raw.split("\n\n")
    assert blocks[-1] == "" and blocks[-2] == "data: [DONE]"
    events = [json.loads(b.removeprefix("data: ")) for b in blocks[:-2]]
    assert all(b.startswith("data: ") for b in blocks[:-1])
    assert [e["choices"][0]["finish_reason"] for e in events][-1] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    assert (
        "".join(e["choices"][0]["text"] for e in events)
        == client(server)
        .completions.create(model="gpt", prompt="ROMEO:", max_tokens=5, seed=1)
        .choices[0]
        .text
    )


def test_auth(text):
    server, _ = text
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").completions.create(model="gpt", prompt="ROMEO:", max_tokens=2)
    resp = httpx.post(server.url + "/v1/completions", json={"prompt": "ROMEO:"})
    assert resp.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").models.list()


@pytest.mark.parametrize(
    ("params", "param", "error"),
    [
        ({"max_tokens": 201}, "max_tokens", openai.BadRequestError),  # over the server's max_tokens
        ({"max_tokens": 0}, "max_tokens", openai.BadRequestError),
        ({"n": 9}, "n", openai.BadRequestError),  # over max_n
        ({"prompt": ["a", "b", "c"], "n": 3}, "n", openai.BadRequestError),  # 9 completions
        ({"temperature": 2.5}, "temperature", openai.BadRequestError),
        ({"temperature": -0.1}, "temperature", openai.BadRequestError),
        ({"top_p": 0}, "top_p", openai.BadRequestError),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", openai.BadRequestError),
        ({"stop": ""}, "stop", openai.BadRequestError),
        ({"prompt": "R" * 65}, "prompt", openai.BadRequestError),  # over max_prompt_tokens
        ({"prompt": "R" * 20_000}, "prompt", openai.BadRequestError),  # tokenized in a worker thread
        ({"prompt": []}, "prompt", openai.BadRequestError),
        ({"logprobs": 2}, "logprobs", openai.BadRequestError),  # not supported: refused, not ignored
        ({"echo": True}, "echo", openai.BadRequestError),
        ({"seed": -1}, "seed", openai.BadRequestError),
        ({"model": "gpt-4"}, "model", openai.NotFoundError),
    ],
)
def test_bad_parameters_are_4xx_naming_them(text, params, param, error):
    server, _ = text
    body = {"model": "gpt", "prompt": "ROMEO:", **params}
    with pytest.raises(error) as exc:
        client(server).completions.create(**body)
    assert exc.value.body["param"] == param and param in exc.value.body["message"]
    assert exc.value.body["type"] == "invalid_request_error"


def test_malformed_bodies(text):
    server, _ = text
    auth = {"Authorization": f"Bearer {KEY}"}
    for content, param in (
        (b"{not json", "body"),
        (b'{"prompt": 3}', "prompt"),
        (b'{"prompt": "a", "n": "2"}', "n"),
    ):
        resp = httpx.post(
            server.url + "/v1/completions",
            content=content,
            headers={**auth, "Content-Type": "application/json"},
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param and resp.json()["field"] == param
    unknown = httpx.post(server.url + "/v1/completions", json={"prompt": "a", "temprature": 1}, headers=auth)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "temprature"


def test_same_text_alone_and_amid_concurrent_requests(text):
    server, _ = text
    c = client(server)
    request = dict(model="gpt", prompt="ROMEO:", max_tokens=60, seed=123, temperature=1.0)
    alone = c.completions.create(**request).choices[0].text
    before = httpx.get(server.url + "/metrics").text

    def other(i):
        return (
            c.completions.create(model="gpt", prompt="JULIET:" * (1 + i % 3), max_tokens=40 + 5 * i, seed=i)
            .choices[0]
            .text
        )

    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        others = [pool.submit(other, i) for i in range(8)]
        amid = pool.submit(lambda: c.completions.create(**request).choices[0].text)
        assert amid.result() == alone
        assert len({f.result() for f in others}) == 8
    after = httpx.get(server.url + "/metrics").text
    steps = _metric(after, "genforge_decode_batch_size_count") - _metric(
        before, "genforge_decode_batch_size_count"
    )
    tokens = _metric(after, "genforge_decode_batch_size_sum") - _metric(
        before, "genforge_decode_batch_size_sum"
    )
    assert tokens / steps > 1.5, "the concurrent requests were not decoded together"


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} " if labels else name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.contextmanager
def slow_server(run: Path, step_s: float, **overrides):
    """A text server whose decode steps take at least `step_s` (a bigger model, simulated); yields
    it and a pipeline of its own (the served model is the server's alone)."""
    pipe = load_pipeline(run)
    decode = pipe.model.decode

    def slow_decode(*args, **kwargs):
        time.sleep(step_s)
        return decode(*args, **kwargs)

    pipe.model.decode = slow_decode
    from genforge.deploy.config import ServeConfig
    from genforge.deploy.server import ServiceServer

    cfg = ServeConfig(run_dir=str(pipe.path), port=0, **overrides)
    server = ServiceServer(cfg, pipe).start()
    try:
        server.wait_ready(60)
        yield server, load_pipeline(run)
    finally:
        server.stop()


def test_requests_join_the_running_batch_and_leave_it(text_run):
    """A short request sent while a long one is being decoded finishes long before it: it joined
    the running batch instead of waiting for it; afterwards every slot is free again."""
    with slow_server(text_run, 0.005) as (server, pipe):
        c = client(server, key=None)
        long_done = []

        def long():
            text = c.completions.create(model="gpt", prompt="ROMEO:", max_tokens=200, seed=1).choices[0].text
            long_done.append(time.perf_counter())
            return text

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(long)
            _wait_for(
                lambda: _metric(httpx.get(server.url + "/metrics").text, "genforge_active_sequences") == 1
            )
            short = c.completions.create(model="gpt", prompt="JULIET:", max_tokens=3, seed=2)
            short_done = time.perf_counter()
            assert not long_done, "the short request waited for the long one"
            assert short.choices[0].text == pipe.complete(["JULIET:"], max_tokens=3, seed=2)[0].text
            assert future.result() == pipe.complete(["ROMEO:"], max_tokens=200, seed=1)[0].text
        assert short_done < long_done[0]
        metrics = httpx.get(server.url + "/metrics").text
        assert _metric(metrics, "genforge_active_sequences") == 0
        assert _metric(metrics, "genforge_tokens_total", kind="completion") == 203
        assert _metric(metrics, "genforge_time_to_first_token_seconds_count") == 2


@pytest.mark.parametrize("interval_ms", [0, 25])
def test_stream_interval_groups_tokens_into_chunks(text_run, interval_ms):
    """With `stream_interval_ms`, a choice's first token goes out alone and at once, later text at
    most every interval (several tokens a chunk at 2 ms a step), the whole text unchanged; 0 sends a
    chunk per token."""
    with slow_server(text_run, 0.002, stream_interval_ms=interval_ms) as (server, pipe):
        [want] = pipe.complete(["ROMEO:"], max_tokens=60, temperature=0.8, seed=4)
        stream = client(server, None).completions.create(
            model="gpt", prompt="ROMEO:", max_tokens=60, temperature=0.8, seed=4, stream=True
        )
        pieces = [chunk.choices[0].text for chunk in stream]
    assert "".join(pieces) == want.text and want.n_tokens == 60
    assert len(pieces[0]) == 1  # the first token at once
    text_chunks = [p for p in pieces if p]
    if interval_ms == 0:  # a chunk per token, but a byte token ending inside a character waits for the next
        assert len(text_chunks) >= 50, [p for p in pieces if len(p) != 1]
    else:  # 60 steps of >= 2 ms: >= 120 ms, so about 5 or more chunks of ~12 tokens
        assert 4 <= len(text_chunks) <= 20, pieces


def test_a_closed_stream_frees_its_slot(text_run):
    with slow_server(text_run, 0.01) as (server, _):  # 1000 tokens: 10 s
        body = {"prompt": "ROMEO:", "max_tokens": 1000, "seed": 1, "stream": True}
        with httpx.stream("POST", server.url + "/v1/completions", json=body) as resp:
            next(resp.iter_lines())  # one chunk, then the client goes away
        _wait_for(
            lambda: _metric(httpx.get(server.url + "/metrics").text, "genforge_active_sequences") == 0, 3
        )
        generated = _metric(
            httpx.get(server.url + "/metrics").text, "genforge_tokens_total", kind="completion"
        )
        assert generated < 500, "the server kept decoding for a client that had gone"


def test_timeouts(text_run):
    """Longer than the request timeout: 504 in OpenAI's shape, or an error event once streaming;
    either way the work stops."""
    with slow_server(text_run, 0.01, request_timeout_s=0.5) as (server, _):
        body = {"prompt": "ROMEO:", "max_tokens": 1000, "seed": 1}
        resp = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
        assert resp.status_code == 504 and "0.5 s" in resp.json()["error"]["message"]
        with httpx.stream(
            "POST", server.url + "/v1/completions", json={**body, "stream": True}, timeout=30
        ) as resp:
            assert resp.status_code == 200
            last = [line for line in resp.iter_lines() if line][-1]
        error = json.loads(last.removeprefix("data: "))["error"]
        assert "0.5 s" in error["message"] and error["type"] == "server_error"
        _wait_for(
            lambda: _metric(httpx.get(server.url + "/metrics").text, "genforge_active_sequences") == 0, 3
        )
        generated = _metric(
            httpx.get(server.url + "/metrics").text, "genforge_tokens_total", kind="completion"
        )
        assert generated < 1000


def test_a_failing_step_fails_its_requests_not_the_service(text_run):
    with slow_server(text_run, 0.0) as (server, pipe):
        model = server.app.state.genforge.pipeline.model
        decode = model.decode
        model.decode = lambda *args: (_ for _ in ()).throw(RuntimeError("boom"))
        resp = httpx.post(server.url + "/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 5, "n": 2})
        assert resp.status_code == 500 and "RuntimeError" in resp.json()["error"]["message"]
        assert resp.json()["error"]["type"] == "server_error"
        model.decode = decode
        body = {"prompt": "ROMEO:", "max_tokens": 5, "seed": 4}
        ok = httpx.post(server.url + "/v1/completions", json=body).json()
        assert ok["choices"][0]["text"] == pipe.complete(["ROMEO:"], max_tokens=5, seed=4)[0].text
        assert _metric(httpx.get(server.url + "/metrics").text, "genforge_active_sequences") == 0


def _manifest(run: Path) -> dict:
    return json.loads((run.parent / "data" / "manifest.json").read_text())


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_models_metrics_and_routes(text, text_run, tmp_path):
    server, pipe = text
    c = client(server)
    [model] = c.models.list().data
    assert model.id == "gpt" and model.owned_by == "genforge"
    info = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert info["modality"] == "text" and info["vocab_size"] == pipe.tokenizer.vocab_size
    assert info["context_length"] == 32 and info["tokenizer"] == {
        "kind": "char",
        "vocab_size": info["vocab_size"],
    }
    assert info["limits"]["max_tokens"] == 200 and info["fingerprint"] == _manifest(text_run)["fingerprint"]
    c.completions.create(model="gpt", prompt="ROMEO:", max_tokens=3, seed=0)
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("genforge_tokens_total", "genforge_active_sequences", "genforge_decode_batch_size",
                 "genforge_time_to_first_token_seconds"):  # fmt: skip
        assert f"# TYPE {name} " in metrics
    assert (
        _metric(metrics, "genforge_requests_total", route="/v1/completions", method="POST", status="200") >= 1
    )
    paths = set(httpx.get(server.url + "/openapi.json").json()["paths"])
    assert "/v1/completions" in paths and "/v1/generate" not in paths
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(server.url + "/v1/generate", json={"n": 1}, headers=auth).status_code == 404
    assert "text.js" in httpx.get(server.url + "/").text  # the prompt-box page
    # an image run gets the image routes and page, and no completions
    with serving(make_run(tmp_path / "image")) as image:
        assert httpx.post(image.url + "/v1/completions", json={"prompt": "a"}).status_code == 404
        assert "app.js" in httpx.get(image.url + "/").text
        info = httpx.get(image.url + "/v1/models").json()
        assert info["modality"] == "image" and info["data"][0]["id"] == "serve-toy"
