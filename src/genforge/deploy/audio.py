"""Audio: `POST /v1/generate` (clips as WAV, base64 WAVs in JSON, or .npy) and `POST /v1/enhance`
(restoration runs: a WAV upload -> the enhanced WAV), served through the image routes' micro-
batcher and engine (`AudioRoutes` extends `ImageRoutes`, `AudioEngine` extends `Engine`); the
gallery page `audio.html` plays the clips.

Generation. Body as the image endpoint's plus `speaker` (id or name, speaker-conditional models);
`format`:
- `wav` (default): one clip -> that clip as a 16-bit WAV at the run's sample rate; n > 1 -> ONE WAV
  holding the clips in order, each followed by `GAP_SECONDS` of silence except the last (the
  audio counterpart of the image endpoint's grid; headers `X-Genforge-Clips`,
  `X-Genforge-Clip-Samples`, `X-Genforge-Gap-Samples` give the layout);
- `json`: `{"audio": [base64 WAV per clip], "sample_rate", "shape", "seed", "labels", "speakers"}`;
- `npy`: float32 (n, T) in [-1, 1].
Without a speaker, a speaker-conditional model's clips take the (allowed) speakers in turn.

Determinism under batching: a request's clips depend on its seed only, not on what shares its
pass. Requests are merged as images are (each draws its own noise), and every merged pass runs
in chunks of exactly `BATCH_CHUNK` clips (the last padded): convolution and matrix kernels pick
their blocking by batch size, and the float sums they then add in another order differ in the
last bit, which a 16-bit WAV turns into different bytes (measured: up to 5e-8 between batch 1
and batch 3 of a transposed 1-D convolution). With one chunk size a clip's samples are bitwise
the same alone or in company. Service clips therefore equal `AudioPipeline.generate`'s to float
rounding (~1e-7), not bitwise.

Enhancement. The upload is a multipart form with the file in field `audio`, or the file as the
raw body (`audio/*` or `application/octet-stream`); anything libsndfile reads (WAV, FLAC, OGG,
MP3). Channels are averaged to mono; another sample rate is resampled to the run's with
`audio.resample` (soxr HQ) and the answer is at the run's rate (`X-Genforge-Sample-Rate`; the
upload's rate is in `X-Genforge-Input-Sample-Rate`). Errors: empty upload or no samples 400, not
audio 415 (content type) or 422 (unreadable content, non-finite samples), longer than
`max_audio_seconds` 413, a generation run 409. Each upload runs alone in its pass (uploads differ
in length, and an answer must not depend on its company). Nothing is written to disk.

Speaker allow-list (`ServeConfig.allowed_speakers`, `genforge serve --allow-speaker`): a cloned
voice is personal data, so an operator may publish a model while refusing some of its voices:
a request for a speaker not on the list gets 403 (whether or not the model knows that speaker),
and /v1/models lists only the allowed ones (`speakers`, `speaker_allowlist`).
"""

from __future__ import annotations

import base64
import dataclasses
import io
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from genforge.audio.resample import RESAMPLER, resample
from genforge.audio.wav import decode_audio, encode_wav
from genforge.core.errors import DataError, GenforgeError
from genforge.deploy.engine import (
    REQUEST_OPTIONS,
    WARMUP_OPTIONS,
    Engine,
    GenerateJob,
    GenerateResult,
    RestoreJob,
)
from genforge.deploy.metrics import Counter, ServiceMetrics
from genforge.deploy.routes import ROUTES
from genforge.deploy.schemas import GenerateRequest
from genforge.deploy.service import INLINE_ENCODE_BYTES, ApiError, ImageRoutes, encode_npy, generate_job

AudioFormat = Literal["wav", "json", "npy"]
EnhanceFormat = Literal["wav", "npy"]
GAP_SECONDS = 0.25  # silence after each clip but the last when n > 1 clips share one WAV
# clips per forward pass of a merged generation (module docstring). Measured on the default
# wavegan (1 s at 8 kHz, 1 thread): 14 ms for 1 clip, 22 ms for 4, 45 ms for 8: 4 gives a full
# pass's throughput (5.6 ms a clip) at 1.6x, not 3x, a lone request's latency.
BATCH_CHUNK = 4
UPLOAD_FIELD = "audio"

# per-request sampler options of the audio diffusion families (the page shows their controls)
for _family in ("diffwave", "spectral-diffusion"):
    REQUEST_OPTIONS.register(_family, ("steps", "guidance"))


class AudioGenerateRequest(GenerateRequest):
    speaker: int | str | None = Field(
        None, description="speaker id or name (speaker-conditional models); default: speakers in turn"
    )
    format: AudioFormat = Field(  # type: ignore[assignment]
        "wav",
        description="wav: one WAV (n > 1: the clips in order, with short silences between); "
        "json: base64 WAV per clip; npy: float32 (n, T)",
    )


def _pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """`x` with rows appended (copies of its first) up to `size` rows."""
    if len(x) >= size:
        return x
    return torch.cat([x, x[:1].expand(size - len(x), *x.shape[1:])])


class AudioEngine(Engine):
    """The engine on clips: outputs float32 (n, T) in [-1, 1], merged passes in fixed chunks."""

    chunk: ClassVar[int] = BATCH_CHUNK

    def __init__(self, pipeline: Any):
        super().__init__(pipeline)
        # uploads to enhance differ in length and run one per pass
        self.mergeable = self.task == "generate" and self.hook is not None

    def output_shape(self) -> tuple[int, ...]:
        return (int(getattr(self.model.config, "length", 0) or 0),)

    def to_output(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().float().reshape(len(x), -1).clamp(-1, 1).cpu().numpy().astype(np.float32)

    def from_input(self, items: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))

    def decode(
        self, latents: torch.Tensor, labels: torch.Tensor | None, options: dict[str, Any]
    ) -> torch.Tensor:
        n, size = len(latents), self.chunk
        speakers = options.get("speakers")
        outs = []
        for start in range(0, n, size):
            part = slice(start, start + size)
            opts = dict(options)
            if speakers is not None:
                opts["speakers"] = _pad(speakers[part], size)
            lab = None if labels is None else _pad(labels[part], size)
            out = super().decode(_pad(latents[part], size), lab, opts)
            outs.append(out[: min(size, n - start)])
        return torch.cat(outs)

    def warmup(self) -> None:
        if self.task == "restore":
            self.run([RestoreJob(np.zeros((1, self.pipeline.sample_rate // 4), np.float32))])
            return
        options = tuple(sorted((k, v) for k, v in WARMUP_OPTIONS.items() if k in self.options))
        speakers = (0,) if self.pipeline.speaker_conditional else None
        self.run([GenerateJob(1, 0, self.job_labels(1, None), options, speakers)])


class AudioMetrics:
    """Clips and seconds of audio served, rendered with the service's metrics at /metrics."""

    def __init__(self, metrics: ServiceMetrics):
        self.clips = Counter("genforge_audio_clips_total", "Audio clips generated or enhanced.", ("task",))
        self.seconds = Counter(
            "genforge_audio_seconds_total", "Seconds of audio generated or enhanced.", ("task",)
        )
        metrics.extra.extend([self.clips, self.seconds])

    def served(self, task: str, clips: int, seconds: float) -> None:
        self.clips.inc(clips, task=task)
        self.seconds.inc(seconds, task=task)


# encoding -----------------------------------------------------------------------------------------


def join_clips(clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """(n, T) clips -> one (T',) track: the clips in order, `GAP_SECONDS` of silence between."""
    if len(clips) == 1:
        return clips[0]
    gap = np.zeros((len(clips), int(round(GAP_SECONDS * sample_rate))), np.float32)
    return np.concatenate([clips, gap], axis=1).reshape(-1)[: -gap.shape[1] or None]


def encode_clips(
    clips: np.ndarray, fmt: str, sample_rate: int, headers: dict[str, str], extra: dict[str, Any]
) -> Response:
    """Clips float32 (n, T) as the requested format; `extra` goes into the JSON body."""
    headers = {**headers, "X-Genforge-Sample-Rate": str(sample_rate)}
    if fmt == "npy":
        return Response(encode_npy(clips), media_type="application/octet-stream", headers=headers)
    if fmt == "wav":
        if len(clips) > 1:
            headers["X-Genforge-Clips"] = str(len(clips))
            headers["X-Genforge-Clip-Samples"] = str(clips.shape[1])
            headers["X-Genforge-Gap-Samples"] = str(int(round(GAP_SECONDS * sample_rate)))
        return Response(encode_wav(join_clips(clips, sample_rate), sample_rate), media_type="audio/wav",
                        headers=headers)  # fmt: skip
    wavs = [base64.b64encode(encode_wav(clip, sample_rate)).decode("ascii") for clip in clips]
    body = {"audio": wavs, "sample_rate": sample_rate, "shape": list(clips.shape), **extra}
    return JSONResponse(body, headers=headers)


async def encode_response(
    clips: np.ndarray, fmt: str, sample_rate: int, headers: dict[str, str], extra: dict[str, Any]
) -> Response:
    """`encode_clips`, on the event loop for small outputs, else in a worker thread."""
    if clips.nbytes <= INLINE_ENCODE_BYTES:
        return encode_clips(clips, fmt, sample_rate, headers, extra)
    return await run_in_threadpool(encode_clips, clips, fmt, sample_rate, headers, extra)


# uploads ------------------------------------------------------------------------------------------


async def read_upload(request: Request) -> tuple[bytes, str]:
    """The uploaded file's bytes and a name for messages: multipart field `audio`, or the body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        files = form.getlist(UPLOAD_FIELD)
        if len(files) != 1 or isinstance(files[0], str):
            raise ApiError(
                422, f"{UPLOAD_FIELD}: expected one file in the form field '{UPLOAD_FIELD}'", UPLOAD_FIELD
            )
        return await files[0].read(), files[0].filename or UPLOAD_FIELD
    if ctype.startswith("audio/") or ctype == "application/octet-stream":
        return await request.body(), "body"
    raise ApiError(
        415,
        f"unsupported content type {ctype or 'none'!r}; send an audio file (WAV, FLAC, OGG or MP3) as the "
        f"body (audio/wav or application/octet-stream) or as multipart/form-data field '{UPLOAD_FIELD}'",
    )


def decode_upload(data: bytes, name: str, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, int]:
    """An upload as float32 (T,) mono at `sample_rate`, and the upload's own rate. Its length is
    checked from the header before decoding, so a small compressed file cannot expand into a
    huge array."""
    import soundfile as sf

    if not data:
        raise ApiError(400, f"{UPLOAD_FIELD}: {name} is empty", UPLOAD_FIELD)
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).rsplit(": ", 1)[-1]  # libsndfile's reason, without the BytesIO's repr
        raise ApiError(
            422, f"{UPLOAD_FIELD}: {name} is not an audio file libsndfile can read ({reason})", UPLOAD_FIELD
        ) from None
    _check_seconds(info.frames, info.samplerate, name, max_seconds)
    try:
        audio, rate = decode_audio(data, where=name)
    except DataError as exc:
        raise ApiError(422, f"{UPLOAD_FIELD}: {exc}", UPLOAD_FIELD) from None
    if len(audio) == 0:
        raise ApiError(400, f"{UPLOAD_FIELD}: {name} holds no samples", UPLOAD_FIELD)
    _check_seconds(len(audio), rate, name, max_seconds)
    if not np.isfinite(audio).all():
        raise ApiError(422, f"{UPLOAD_FIELD}: {name} has non-finite samples (NaN or inf)", UPLOAD_FIELD)
    return resample(audio.mean(axis=1), rate, sample_rate), rate


def _check_seconds(frames: int, rate: int, name: str, max_seconds: float) -> None:
    if rate > 0 and frames / rate > max_seconds:
        raise ApiError(
            413,
            f"{UPLOAD_FIELD}: {name} is {frames / rate:.1f} s long; this server enhances at most "
            f"{max_seconds:g} s per request",
            UPLOAD_FIELD,
        )


# the routes ---------------------------------------------------------------------------------------


@ROUTES.register("audio")
class AudioRoutes(ImageRoutes):
    """Audio: POST /v1/generate and /v1/enhance through the micro-batcher; the audio page at /."""

    page = "audio.html"
    engine_class = AudioEngine

    def __init__(self, state: Any):
        super().__init__(state)
        self.metrics = AudioMetrics(state.metrics)
        self.allowed: tuple[int, ...] | None = None  # speaker ids a request may name; None = all

    def start(self, pipeline: Any) -> None:
        self.allowed = allowed_speakers(pipeline, self.state.config.allowed_speakers)
        super().start(pipeline)

    def speakers(self, pipe: Any) -> list[dict[str, Any]]:
        """The speakers a client may request, with their names where the dataset recorded them."""
        if not pipe.speaker_conditional:
            return []
        names = pipe.speaker_names
        ids = self.allowed if self.allowed is not None else range(pipe.num_speakers)
        return [{"id": i, "name": names[i] if i < len(names) else None} for i in ids]

    def info(self) -> dict[str, Any]:
        engine = self.engine()
        pipe, cfg = engine.pipeline, self.state.config
        dataset = pipe.info.get("dataset") or {}
        restore = engine.task == "restore"
        return {
            "task": engine.task,
            "sample_rate": pipe.sample_rate,
            "clip_length": None if restore else engine.item_shape[0],
            "clip_seconds": None if restore else engine.item_shape[0] / pipe.sample_rate,
            "conditional": pipe.conditional,
            "num_classes": pipe.num_classes,
            "class_names": dataset.get("class_names") if isinstance(dataset, dict) else None,
            "speaker_conditional": pipe.speaker_conditional,
            "num_speakers": pipe.num_speakers,
            "speakers": self.speakers(pipe),
            "speaker_allowlist": None if self.allowed is None else list(cfg.allowed_speakers),
            "options": list(engine.options),
            "formats": list(EnhanceFormat.__args__ if restore else AudioFormat.__args__),
            "resampler": RESAMPLER,
            "limits": {
                "max_n": cfg.max_n,
                "max_steps": cfg.max_steps,
                "max_body_bytes": cfg.max_body_bytes,
                "max_audio_seconds": cfg.max_audio_seconds,
            },
            "batching": {
                "enabled": cfg.batching and engine.mergeable,
                "max_batch": cfg.max_batch,
                "max_wait_ms": cfg.max_wait_ms,
                "chunk": engine.chunk,
            },
        }

    def job_speakers(self, pipe: Any, n: int, speaker: int | str | None) -> tuple[int, ...] | None:
        """Speaker ids of a request's n clips (None for a model without speakers)."""
        if speaker is not None and self.allowed is not None and not self._allows(pipe, speaker):
            # 403 before looking the speaker up: a refusal does not tell which voices the model has
            allowed = ", ".join(self.state.config.allowed_speakers)
            raise ApiError(
                403, f"speaker {speaker!r} is not on this server's allow-list ({allowed})", "speaker"
            )
        try:
            ids = pipe.resolve_speakers(n, speaker, None)
        except GenforgeError as exc:
            raise ApiError(422, f"speaker: {exc}", "speaker") from None
        if ids is None:
            return None
        if speaker is None and self.allowed is not None:
            return tuple(self.allowed[i % len(self.allowed)] for i in range(n))
        return tuple(int(i) for i in ids)

    def _allows(self, pipe: Any, speaker: int | str) -> bool:
        assert self.allowed is not None
        names = pipe.speaker_names
        return any(str(speaker) in (str(i), names[i] if i < len(names) else None) for i in self.allowed)

    def install(self, app: FastAPI) -> None:
        config = self.state.config

        @app.post("/v1/generate", tags=["generate"])
        async def generate(req: AudioGenerateRequest) -> Response:
            engine = self.engine()
            pipe = engine.pipeline
            if engine.task != "generate":
                raise ApiError(409, f"model {pipe.name!r} enhances audio; use POST /v1/enhance")
            job = generate_job(engine, req, config)
            job = dataclasses.replace(job, speakers=self.job_speakers(pipe, req.n, req.speaker))
            result: GenerateResult = await self.submit(job)
            clips = result.images
            self.metrics.served("generate", len(clips), clips.size / pipe.sample_rate)
            labels = None if result.labels is None else [int(x) for x in result.labels]
            speakers = None if job.speakers is None else list(job.speakers)
            headers = {"X-Genforge-Seed": str(job.seed)}
            if labels is not None:
                headers["X-Genforge-Labels"] = ",".join(map(str, labels))
            if speakers is not None:
                headers["X-Genforge-Speakers"] = ",".join(map(str, speakers))
            extra = {"seed": job.seed, "labels": labels, "speakers": speakers}
            return await encode_response(clips, req.format, pipe.sample_rate, headers, extra)

        @app.post("/v1/enhance", tags=["enhance"], openapi_extra={"requestBody": _ENHANCE_BODY})
        async def enhance(request: Request, format: EnhanceFormat = "wav") -> Response:
            engine = self.engine()
            pipe = engine.pipeline
            if engine.task != "restore":
                raise ApiError(409, f"model {pipe.name!r} generates audio; use POST /v1/generate")
            data, name = await read_upload(request)
            rate = pipe.sample_rate
            clip, input_rate = await run_in_threadpool(
                decode_upload, data, name, rate, config.max_audio_seconds
            )
            out = await self.submit(RestoreJob(clip[None]))
            self.metrics.served("enhance", 1, out.size / rate)
            headers = {"X-Genforge-Input-Sample-Rate": str(input_rate)}
            return await encode_response(out, format, rate, headers, {})


def allowed_speakers(pipe: Any, entries: list[str]) -> tuple[int, ...] | None:
    """The allow-list's speaker ids (entries are ids or names), None when there is no list; a
    clear error for an entry the model does not know or a model without speakers."""
    if not entries:
        return None
    if not pipe.speaker_conditional:
        raise GenforgeError(
            f"serve config: allowed_speakers is set, but model {pipe.name!r} is not speaker-conditional"
        )
    names, ids = pipe.speaker_names, []
    for entry in entries:
        if entry.isdigit() and int(entry) < pipe.num_speakers:
            ids.append(int(entry))
        elif entry in names:
            ids.append(names.index(entry))
        else:
            known = ", ".join(names) or f"ids 0..{pipe.num_speakers - 1}"
            raise GenforgeError(
                f"serve config: allowed_speakers: unknown speaker {entry!r}; the model's: {known}"
            )
    return tuple(dict.fromkeys(ids))


_ENHANCE_BODY = {
    "description": "One audio file (WAV, FLAC, OGG or MP3; any sample rate, resampled to the model's; "
    f"channels averaged): a multipart form with the file in field '{UPLOAD_FIELD}', or the file as the "
    "body (audio/wav or application/octet-stream). The answer is a WAV at the model's sample rate "
    "(`format=npy`: float32 (1, T)).",
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}}}
        },
        "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
