"""Text: `POST /v1/completions`, the subset of OpenAI's completions API that a genforge text model
can honour, so OpenAI's own clients work against `genforge serve`.

Request fields: `model`, `prompt` (a string or a list of strings), `max_tokens` (default 16, as
OpenAI's), `temperature` (0-2; 0 = greedy), `top_p`, `n`, `stop` (a string or up to 4), `seed`,
`stream` (server-sent events) with `stream_options.include_usage`, `user`; `top_k` is an
extension. OpenAI fields with no meaning here (`logprobs`, `echo`, `suffix`, `best_of`,
`logit_bias`, the penalties) are accepted at their neutral values only, and refused otherwise
naming the field, rather than silently ignored.

Completion i of a request (prompt-major, then n) draws from its own generator seeded by
(`seed`, i), as `TextPipeline.complete` does: the same request gives the same text alone, amid
other requests, streamed or not. All completions go through one `DecodeScheduler` (continuous
batching, deploy/scheduler.py).

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}` (plus the service's
usual top-level `field`), with OpenAI's 400 for invalid parameters and 404 for a model this server
does not serve; authentication (401) and rate limits (429) are the service's middleware, in its
own shape, which OpenAI's client reports just the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from genforge.deploy.batching import BatcherClosed, BatcherOverloaded
from genforge.deploy.metrics import Counter, Gauge, Histogram, ServiceMetrics
from genforge.deploy.routes import ROUTES, ServiceRoutes
from genforge.deploy.scheduler import ChoiceSpec, CompletionStream, DecodeScheduler, TokenEvent
from genforge.deploy.service import ApiError
from genforge.models.text.sampling import SamplingParams

log = logging.getLogger("genforge.deploy")
MAX_STOPS = 4  # OpenAI's limit
# prompts up to this many characters are tokenized on the event loop: for them a hop to a worker
# thread costs more than the tokenization
INLINE_ENCODE_CHARS = 16 * 1024


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = Field(False, description="send a last chunk with the request's token usage")
    # OpenAI pads chunks against length side channels when asked; accepted, nothing is padded here
    include_obfuscation: bool = Field(False, description="accepted and ignored")


class CompletionRequest(BaseModel):
    # strict: "3" is not a count; unknown fields are typos, not options
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, description="the served model's id (GET /v1/models); optional")
    prompt: str | list[str] = Field(..., description="a prompt, or a list of prompts")
    max_tokens: int | None = Field(16, ge=1, description="tokens to generate per completion (default 16)")
    temperature: float | None = Field(1.0, ge=0, le=2, description="0 = greedy; default 1")
    top_p: float | None = Field(1.0, gt=0, le=1, description="nucleus sampling mass; default 1 (off)")
    top_k: int | None = Field(None, ge=0, description="extension: keep the k most likely tokens; 0 = off")
    n: int | None = Field(1, ge=1, description="completions per prompt")
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end a completion")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="random if omitted (X-Genforge-Seed)")
    stream: bool | None = Field(False, description="server-sent events, one chunk per new text")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="ignored")
    # OpenAI fields accepted at their neutral values only (NEUTRAL)
    logprobs: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


# field -> values that change nothing; any other value is refused (this server does not do it)
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (None,),
    "echo": (None, False),
    "suffix": (None, ""),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
}


class CompletionError(Exception):
    """An error of /v1/completions, answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code},
            "field": self.param,
        }
        return JSONResponse(body, status_code=self.status)


class TextMetrics:
    """The decode scheduler's metrics, rendered with the service's at /metrics."""

    def __init__(self, metrics: ServiceMetrics):
        self.tokens_total = Counter(
            "genforge_tokens_total",
            "Text tokens: prompt tokens read, completion tokens generated.",
            ("kind",),
        )
        self.active_sequences = Gauge(
            "genforge_active_sequences", "Completions holding a KV-cache slot (being decoded)."
        )
        self.decode_batch = Histogram(
            "genforge_decode_batch_size", "Sequences in one decode step.", (1, 2, 4, 8, 16, 32, 64, 128, 256)
        )
        self.time_to_first_token = Histogram(
            "genforge_time_to_first_token_seconds",
            "From a completion's arrival to its first generated token.",
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        metrics.extra.extend(
            [self.tokens_total, self.active_sequences, self.decode_batch, self.time_to_first_token]
        )

    # the scheduler's calls (its thread; the metrics lock)
    def step(self, batch: int) -> None:
        self.decode_batch.observe(batch)

    def first_token(self, seconds: float) -> None:
        self.time_to_first_token.observe(seconds)

    def tokens(self, generated: int) -> None:
        self.tokens_total.inc(generated, kind="completion")

    def active(self, delta: int) -> None:
        self.active_sequences.add(delta)


def _param(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the request field's name (`prompt`, `stop`, `stream_options`)."""
    named = [str(p) for p in loc if isinstance(p, str) and p not in ("str", "body") and "[" not in p]
    return named[0] if named else "body"


def parse_request(body: bytes) -> CompletionRequest:
    try:
        req = CompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param(tuple(first.get("loc", ())))
        raise CompletionError(400, f"{param}: {first.get('msg', 'invalid value')}", param) from None
    for name, neutral in NEUTRAL.items():
        value = getattr(req, name)
        if value not in neutral:
            raise CompletionError(400, f"{name}: not supported by this server (got {value!r})", name)
    if req.best_of is not None and req.best_of != (req.n or 1):
        raise CompletionError(400, f"best_of: only best_of = n is supported, got {req.best_of}", "best_of")
    return req


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        raise CompletionError(400, f"stop: at most {MAX_STOPS} sequences, got {len(stops)}", "stop")
    if any(not s for s in stops):
        raise CompletionError(400, "stop: a stop sequence must not be empty", "stop")
    return tuple(stops)


@ROUTES.register("text")
class TextRoutes(ServiceRoutes):
    """Text: POST /v1/completions through the decode scheduler; the prompt-box page at /."""

    page = "text.html"

    def __init__(self, state: Any):
        super().__init__(state)
        self.metrics = TextMetrics(state.metrics)
        self.scheduler: DecodeScheduler | None = None

    def start(self, pipeline: Any) -> None:
        cfg = self.state.config
        pipeline.model.eval()
        # the model, or its decode step in ONNX Runtime (the same cache, prefill and contract),
        # called through model.decode: the one entry point of the model's steps
        decoder = pipeline.model
        if hasattr(pipeline, "decoder") and (onnx := pipeline.decoder(cfg.text_runtime)) is not pipeline.model:
            from genforge.models.text.onnx_decode import ThroughModel

            decoder = ThroughModel(onnx)
        scheduler = DecodeScheduler(
            decoder,
            pipeline.tokenizer,
            slots=cfg.max_batch,
            max_waiting=cfg.max_pending,
            metrics=self.metrics,
            stream_interval=cfg.stream_interval_ms / 1000,
        )
        if cfg.warmup:
            scheduler.warmup(pipeline.encode_prompt(""))
        scheduler.start()
        self.scheduler = scheduler
        runtime = "torch" if decoder is pipeline.model else "onnxruntime"
        log.info("continuous batching over %d KV-cache slots (decode step: %s)", cfg.max_batch, runtime)

    def stop(self, timeout: float) -> bool:
        return self.scheduler is None or self.scheduler.close(timeout)

    def _pipeline(self) -> Any:
        try:
            return self.state.require_ready()
        except ApiError as exc:
            raise CompletionError(exc.status, exc.message) from None

    def info(self) -> dict[str, Any]:
        pipe, cfg = self.state.require_ready(), self.state.config
        tok = pipe.tokenizer
        return {
            "task": "complete",
            "vocab_size": tok.vocab_size,
            "context_length": pipe.block_size,
            "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size},
            "limits": {
                "max_n": cfg.max_n,
                "max_tokens": cfg.max_tokens,
                "max_prompt_tokens": cfg.max_prompt_tokens,
                "max_body_bytes": cfg.max_body_bytes,
            },
            "batching": {"enabled": True, "continuous": True, "slots": cfg.max_batch},
        }

    # the request ---------------------------------------------------------------------------------

    def choices(self, pipe: Any, req: CompletionRequest) -> tuple[list[ChoiceSpec], int, int]:
        """The request's completions (prompt-major, then n), its seed and its prompt tokens."""
        cfg = self.state.config
        if req.model is not None and req.model != pipe.name:
            raise CompletionError(
                404,
                f"model {req.model!r} is not served here; this server serves {pipe.name!r}",
                "model",
                "model_not_found",
            )
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        n = req.n or 1
        if not prompts:
            raise CompletionError(400, "prompt: expected a string or a non-empty list of strings", "prompt")
        if len(prompts) * n > cfg.max_n:
            raise CompletionError(
                400,
                f"n: at most {cfg.max_n} completions per request (prompts x n), got {len(prompts) * n}",
                "n",
            )
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        if max_tokens > cfg.max_tokens:
            raise CompletionError(
                400, f"max_tokens: at most {cfg.max_tokens} on this server, got {max_tokens}", "max_tokens"
            )
        params = SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_k=req.top_k or None,
            top_p=None if req.top_p in (None, 1.0) else req.top_p,
        )
        stops = _stops(req.stop)
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        specs, prompt_tokens = [], 0
        for i, prompt in enumerate(prompts):
            ids = tuple(pipe.encode_prompt(prompt))
            if len(ids) > cfg.max_prompt_tokens:
                raise CompletionError(
                    400,
                    f"prompt: at most {cfg.max_prompt_tokens} tokens on this server, prompt {i} has {len(ids)}",
                    "prompt",
                )
            prompt_tokens += len(ids)
            specs += [ChoiceSpec(i * n + j, ids, max_tokens, params, seed, stops) for j in range(n)]
        return specs, seed, prompt_tokens

    def submit(self, specs: list[ChoiceSpec], incremental: bool) -> CompletionStream:
        assert self.scheduler is not None
        try:
            return self.scheduler.submit(specs, incremental)
        except (BatcherClosed, BatcherOverloaded) as exc:
            raise CompletionError(503, str(exc)) from None

    async def events(self, stream: CompletionStream) -> AsyncIterator[list[TokenEvent]]:
        """The stream's events, as they come in, until every choice has finished, within the
        request timeout; cancels the rest of the work when the caller stops early (timeout,
        disconnect, error)."""
        timeout = self.state.config.request_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while not stream.done:
                try:
                    async with asyncio.timeout_at(deadline):
                        events = await stream.next_events()
                except TimeoutError:
                    raise CompletionError(504, f"request took longer than {timeout:g} s") from None
                if any(e.error is not None for e in events):
                    error = next(e.error for e in events if e.error is not None)
                    raise CompletionError(500, f"text generation failed ({type(error).__name__})")
                yield events
        finally:
            if not stream.done:
                stream.cancel()

    def install(self, app: FastAPI) -> None:
        metrics = self.metrics

        @app.exception_handler(CompletionError)
        async def completion_error(request: Request, exc: CompletionError) -> JSONResponse:
            return exc.response()

        @app.post("/v1/completions", tags=["completions"], openapi_extra={"requestBody": _BODY})
        async def completions(request: Request) -> Response:
            pipe = self._pipeline()
            req = parse_request(await request.body())
            prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
            if sum(map(len, prompts)) <= INLINE_ENCODE_CHARS:
                specs, seed, prompt_tokens = self.choices(pipe, req)
            else:  # a long prompt's tokenization would hold up every other request
                specs, seed, prompt_tokens = await run_in_threadpool(self.choices, pipe, req)
            stream = self.submit(specs, incremental=bool(req.stream))
            metrics.tokens_total.inc(prompt_tokens, kind="prompt")
            head = {
                "id": f"cmpl-{secrets.token_hex(12)}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": pipe.name,
            }
            headers = {"X-Genforge-Seed": str(seed)}
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                body = self._sse(stream, head, prompt_tokens, include_usage)
                headers["Cache-Control"] = "no-cache"
                return StreamingResponse(body, media_type="text/event-stream", headers=headers)
            texts, reasons, generated = [""] * len(specs), ["length"] * len(specs), 0
            async for events in self.events(stream):
                for event in events:
                    texts[event.index] += event.text
                    if event.finish_reason is not None:
                        reasons[event.index] = event.finish_reason
                        generated += event.completion_tokens
            choices = [
                {"text": text, "index": i, "logprobs": None, "finish_reason": reason}
                for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))
            ]
            usage = _usage(prompt_tokens, generated)
            return JSONResponse({**head, "choices": choices, "usage": usage}, headers=headers)

    async def _sse(
        self, stream: CompletionStream, head: dict[str, Any], prompt_tokens: int, include_usage: bool
    ) -> AsyncIterator[str]:
        """Server-sent events: a chunk per new text of a choice, its last one with the finish
        reason; the usage chunk when asked for; `data: [DONE]`. An error ends the stream with an
        `error` event (the status line has long been sent)."""
        generated = 0
        extra = {"usage": None} if include_usage else {}
        try:
            async for events in self.events(stream):
                chunks = []
                for event in events:
                    generated += event.completion_tokens
                    choice = {
                        "text": event.text,
                        "index": event.index,
                        "logprobs": None,
                        "finish_reason": event.finish_reason,
                    }
                    chunks.append(_event({**head, "choices": [choice], **extra}))
                yield "".join(chunks)  # one write for whatever came in since the last
            if include_usage:
                yield _event({**head, "choices": [], "usage": _usage(prompt_tokens, generated)})
            yield "data: [DONE]\n\n"
        except CompletionError as exc:
            yield _event(json.loads(exc.response().body))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _event(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


_BODY = {
    "description": "OpenAI completions request (the subset above); `top_k` is an extension.",
    "required": True,
    "content": {"application/json": {"schema": CompletionRequest.model_json_schema()}},
}
