"""The FastAPI app: what every modality shares (model info, health, Prometheus metrics, auth and
limits, the gallery page) plus the run's modality's routes (`deploy.routes.ROUTES`): for images,
registered here, generation and restoration through the micro-batcher.

Authentication (when API keys are configured) and per-client rate limits are middleware
(`middleware.AccessMiddleware`) on every route under `/v1/`, present or future; `/`, `/static/*`,
`/healthz`, `/readyz`, `/metrics`, `/openapi.json` and `/docs` stay open so probes, scrapers and
the page itself load without the key (the page asks for it when `/v1` answers 401).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import gc
import io
import json
import logging
import os
import secrets
import threading
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from genforge.core.errors import GenforgeError
from genforge.deploy.batching import BatcherClosed, BatcherOverloaded, MicroBatcher
from genforge.deploy.config import ServeConfig
from genforge.deploy.engine import Engine, GenerateJob, GenerateResult, RestoreJob
from genforge.deploy.metrics import CONTENT_TYPE, ServiceMetrics
from genforge.deploy.middleware import (
    AccessMiddleware,
    BodyLimitMiddleware,
    BodyTooLarge,
    MetricsMiddleware,
    RateLimiter,
)
from genforge.deploy.routes import ROUTES, ServiceRoutes, routes_for, run_modality
from genforge.deploy.schemas import Format, GenerateRequest, RestoreJSON
from genforge.models.pipeline import Pipeline, load_pipeline
from genforge.train.privacy import public_metrics
from genforge.train.samples import encode_png, make_grid

log = logging.getLogger("genforge.deploy")
STATIC = resources.files("genforge.deploy") / "static"
METRICS_JSON = "metrics.json"
# Responses up to this many image bytes are encoded on the event loop: for them a hop to a worker
# thread costs more than the encoding itself.
INLINE_ENCODE_BYTES = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class ServiceState:
    """Everything the endpoints share: the pipeline once loaded, the modality's routes, readiness."""

    def __init__(self, config: ServeConfig, pipeline: Pipeline | None):
        self.config = config
        self.pipeline = pipeline
        self.metrics = ServiceMetrics()
        # chosen before the model loads (from model.json), so the endpoints exist from the start
        self.modality = pipeline.modality if pipeline is not None else run_modality(config.run_dir)
        self.routes: ServiceRoutes = routes_for(self.modality)(self)
        self.engine: Engine | None = None  # the image routes' engine and batcher
        self.batcher: MicroBatcher | None = None
        self.ready = threading.Event()
        self.load_error: str | None = None

    def start(self) -> None:
        """Load (unless given), start the modality's routes (engine, warm-up); runs in a thread at startup."""
        try:
            import torch

            torch.set_num_threads(torch_threads(self.config.torch_threads, torch.get_num_threads()))
            if self.pipeline is None:
                self.pipeline = load_pipeline(self.config.run_dir, device=self.config.device)
            if self.pipeline.modality != self.modality:
                raise GenforgeError(
                    f"{self.config.run_dir}/model.json: modality {self.modality!r}, but model "
                    f"{self.pipeline.name!r} is a {self.pipeline.modality} model"
                )
            self.routes.start(self.pipeline)
            # the model, torch and the web stack are loaded for good: keep the collector from
            # rescanning them (with them in the heap, full collections cost milliseconds per request)
            gc.collect()
            gc.freeze()
            self.ready.set()
            log.info("model %s ready (%s)", self.pipeline.name, self.modality)
        except Exception as exc:
            self.load_error = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, GenforgeError) else str(exc)
            )
            log.error("model failed to load: %s", self.load_error)

    def stop(self) -> None:
        if not self.routes.stop(self.config.shutdown_timeout_s):
            log.warning("work in flight did not finish within %.0f s", self.config.shutdown_timeout_s)

    def require_ready(self) -> Pipeline:
        if not self.ready.is_set() or self.pipeline is None:
            raise ApiError(503, self.load_error or "the model is still loading; retry shortly")
        return self.pipeline

    def model_info(self) -> dict[str, Any]:
        pipe = self.require_ready()
        info = pipe.info
        dataset = info.get("dataset") or {}
        created = int(os.stat(Path(pipe.path) / "model.json").st_mtime)
        return {
            "model": pipe.name,
            "modality": pipe.modality,
            "family": info.get("family"),
            "config": info.get("config"),
            "step": info.get("step"),
            "ema": info.get("ema"),
            "dataset": dataset,
            "fingerprint": dataset.get("fingerprint") if isinstance(dataset, dict) else None,
            # a DP run: its guarantee, and only the metrics it covers (train/privacy.py)
            "privacy": info.get("privacy"),
            "metrics": public_metrics(read_metrics(pipe.path), info),
            **self.routes.info(),
            # OpenAI's list shape beside ours, so OpenAI clients can list the model
            "object": "list",
            "data": [{"id": pipe.name, "object": "model", "created": created, "owned_by": "genforge"}],
        }


@ROUTES.register("image")
class ImageRoutes(ServiceRoutes):
    """Images: POST /v1/generate and /v1/restore through the micro-batcher (deploy/batching.py)."""

    # what runs the jobs (deploy.audio's routes reuse this class with their own engine)
    engine_class: ClassVar[type[Engine]] = Engine

    def start(self, pipeline: Pipeline) -> None:
        state, cfg = self.state, self.state.config
        engine = self.engine_class(pipeline)
        merge = cfg.batching and engine.mergeable
        state.batcher = MicroBatcher(
            engine.run,
            key=engine.key,
            size=engine.size,
            max_batch=cfg.max_batch,
            max_wait_s=cfg.max_wait_ms / 1000,
            max_requests=None if merge else 1,
            max_pending=cfg.max_pending,
            on_batch=state.metrics.observe_batch,
        )
        if cfg.warmup:
            engine.warmup()
        state.engine = engine
        state.batcher.start()
        log.info("micro-batching %s", "on" if merge else "off")

    def stop(self, timeout: float) -> bool:
        return self.state.batcher is None or self.state.batcher.close(timeout)

    def engine(self) -> Engine:
        self.state.require_ready()
        assert self.state.engine is not None
        return self.state.engine

    async def submit(self, job: GenerateJob | RestoreJob) -> Any:
        assert self.state.batcher is not None
        try:
            future = self.state.batcher.submit_async(job)
        except (BatcherClosed, BatcherOverloaded) as exc:
            raise ApiError(503, str(exc)) from None
        timeout = self.state.config.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise ApiError(504, f"request took longer than {timeout:g} s") from None

    def info(self) -> dict[str, Any]:
        engine = self.engine()
        pipe, cfg = engine.pipeline, self.state.config
        dataset = pipe.info.get("dataset") or {}
        return {
            "task": engine.task,
            "conditional": pipe.conditional,
            "num_classes": pipe.num_classes,
            "class_names": dataset.get("class_names") if isinstance(dataset, dict) else None,
            "image_shape": list(engine.image_shape),
            "options": list(engine.options),
            "limits": {"max_n": cfg.max_n, "max_steps": cfg.max_steps, "max_body_bytes": cfg.max_body_bytes},
            "batching": {
                "enabled": cfg.batching and engine.mergeable,
                "max_batch": cfg.max_batch,
                "max_wait_ms": cfg.max_wait_ms,
            },
        }

    def install(self, app: FastAPI) -> None:
        state, config = self.state, self.state.config

        @app.post("/v1/generate", tags=["generate"])
        async def generate(req: GenerateRequest) -> Response:
            engine = self.engine()
            if engine.task != "generate":
                raise ApiError(409, f"model {engine.pipeline.name!r} restores images; use POST /v1/restore")
            job = generate_job(engine, req, config)
            result: GenerateResult = await self.submit(job)
            state.metrics.images.inc(job.n, task="generate")
            labels = None if result.labels is None else [int(x) for x in result.labels]
            headers = {"X-Genforge-Seed": str(job.seed)}
            if labels is not None:
                headers["X-Genforge-Labels"] = ",".join(map(str, labels))
            extra = {"seed": job.seed, "labels": labels}
            return await encode_response(result.images, req.format, headers, extra)

        @app.post(
            "/v1/restore",
            tags=["restore"],
            openapi_extra={"requestBody": _RESTORE_BODY},
        )
        async def restore(request: Request, format: Format = "png") -> Response:
            engine = self.engine()
            if engine.task != "restore":
                raise ApiError(409, f"model {engine.pipeline.name!r} generates images; use POST /v1/generate")
            images, format = await _restore_input(request, engine.image_shape, format)
            if len(images) > config.max_n:
                raise ApiError(
                    422, f"images: at most {config.max_n} per request, got {len(images)}", "images"
                )
            out = await self.submit(RestoreJob(images))
            state.metrics.images.inc(len(images), task="restore")
            return await encode_response(out, format, {}, {})


def torch_threads(configured: int, default: int) -> int:
    """Intra-op threads for the model: as configured, else torch's default less one core for the
    event loop (on a small machine the two otherwise fight for the same cores, and an OpenMP team
    with a descheduled member stalls each pass)."""
    if configured:
        return configured
    return max(1, min(default, len(os.sched_getaffinity(0)) - 1))


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json written by `genforge eval`, or None when the run was not evaluated."""
    path = Path(run_dir) / METRICS_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); serving without metrics", path, exc)
        return None


# encoding ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def encode_npy(images: np.ndarray) -> bytes:
    """What `np.save` writes, with the header built once per shape (np.save's own header code
    was a tenth of the event loop's time per request)."""
    images = np.ascontiguousarray(images)
    return _npy_header(images.shape, np.lib.format.dtype_to_descr(images.dtype)) + images.tobytes()


def _b64png(image: np.ndarray) -> str:
    return base64.b64encode(encode_png(image)).decode("ascii")


async def encode_response(
    images: np.ndarray, fmt: Format, headers: dict[str, str], extra: dict[str, Any]
) -> Response:
    """`encode_images`, on the event loop for small outputs, else in a worker thread."""
    if images.nbytes <= INLINE_ENCODE_BYTES:
        return encode_images(images, fmt, headers, extra)
    return await run_in_threadpool(encode_images, images, fmt, headers, extra)


def encode_images(
    images: np.ndarray, fmt: Format, headers: dict[str, str], extra: dict[str, Any]
) -> Response:
    """Images as the requested format; `extra` goes into the JSON body (seed, labels)."""
    if fmt == "png":
        return Response(encode_png(make_grid(images)), media_type="image/png", headers=headers)
    if fmt == "npy":
        return Response(encode_npy(images), media_type="application/octet-stream", headers=headers)
    body = {"images": [_b64png(im) for im in images], "shape": list(images.shape), **extra}
    return JSONResponse(body, headers=headers)


def decode_png(data: bytes, shape: tuple[int, int, int], field: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    h, w, c = shape
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise ApiError(422, f"{field}: not a readable image (PNG expected)", field) from None
    # checked before decoding, so a small file cannot expand into a huge array
    if img.size != (w, h):
        raise ApiError(422, f"{field}: expected a {w}x{h} image, got {img.size[0]}x{img.size[1]}", field)
    arr = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
    return arr.reshape(h, w, c)


def decode_npy(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ApiError(422, f"body: not a .npy array ({exc})", "body") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != shape:
        raise ApiError(
            422,
            f"body: expected uint8 (N,{shape[0]},{shape[1]},{shape[2]}), got {arr.dtype} {arr.shape}",
            "body",
        )
    return arr


# the app ----------------------------------------------------------------------------------------


def create_app(config: ServeConfig, pipeline: Pipeline | None = None) -> FastAPI:
    """The service for `config.run_dir` (or an already loaded `pipeline`). The model loads and warms
    up in the background after startup: /healthz answers at once, /readyz once it is done."""
    state = ServiceState(config, pipeline)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=state.start, name="genforge-loader", daemon=True)
        loader.start()
        try:
            yield
        finally:
            # uvicorn has already waited for requests in flight; the batcher now finishes its queue
            await asyncio.to_thread(loader.join)
            await asyncio.to_thread(state.stop)

    app = FastAPI(
        title="genforge",
        description="Generate or restore images with a trained genforge model.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.genforge = state
    _install_errors(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        if state.ready.is_set():
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": state.load_error}, status_code=503)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", tags=["models"])
    def models() -> dict[str, Any]:
        return state.model_info()

    state.routes.install(app)
    page = STATIC / state.routes.page

    @app.get("/", include_in_schema=False)
    def gallery() -> FileResponse:
        return FileResponse(str(page), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    # the last added runs first: metrics see every answer, keys and rate limits come before the body
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    limiter = RateLimiter(config.rate_limit, config.burst) if config.rate_limit > 0 else None
    app.add_middleware(AccessMiddleware, keys=config.credentials(), metrics=state.metrics, limiter=limiter)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, routes=app.router.routes)
    return app


def _version() -> str:
    from genforge import __version__

    return __version__


def generate_job(engine: Engine, req: GenerateRequest, config: ServeConfig) -> GenerateJob:
    if req.n > config.max_n:
        raise ApiError(422, f"n: at most {config.max_n} per request, got {req.n}", "n")
    options: dict[str, Any] = {}
    for name in ("steps", "guidance"):
        value = getattr(req, name)
        if value is None:
            continue
        if name not in engine.options:
            raise ApiError(422, f"{name}: model {engine.pipeline.name!r} takes no {name} option", name)
        options[name] = value
    if options.get("steps", 0) > config.max_steps:
        raise ApiError(422, f"steps: at most {config.max_steps}, got {options['steps']}", "steps")
    try:
        labels = engine.job_labels(req.n, req.class_label)
    except GenforgeError as exc:
        raise ApiError(422, str(exc), "class") from None
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    return GenerateJob(n=req.n, seed=seed, labels=labels, options=tuple(sorted(options.items())))


_RESTORE_BODY = {
    "description": "Corrupted images at the model's size: a multipart form with one or more `image` "
    'files (PNG), JSON {"images": [base64 PNG, ...], "format": ...}, or a .npy uint8 (N,H,W,C) '
    "body (application/octet-stream). The output format is the `format` query parameter or JSON field.",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
        },
        "application/json": {"schema": RestoreJSON.model_json_schema()},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


async def _restore_input(
    request: Request, shape: tuple[int, int, int], fmt: Format
) -> tuple[np.ndarray, Format]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        files = form.getlist("image")
        if not files or any(isinstance(f, str) for f in files):
            raise ApiError(422, "image: expected one or more files in the form field 'image'", "image")
        blobs = [await f.read() for f in files]
        return np.stack([decode_png(b, shape, "image") for b in blobs]), fmt
    if ctype == "application/json":
        try:
            body = RestoreJSON.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        images = []
        for i, text in enumerate(body.images):
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(422, f"images.{i}: not valid base64", f"images.{i}") from None
            images.append(decode_png(data, shape, f"images.{i}"))
        return np.stack(images), body.format
    if ctype == "application/octet-stream":
        return decode_npy(await request.body(), shape), fmt
    raise ApiError(
        415,
        f"unsupported content type {ctype or 'none'!r}; send multipart/form-data, application/json or a .npy body",
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query")]
    return ".".join(parts) or "body"


def _install_errors(app: FastAPI) -> None:
    """Every error is JSON {"error": message, "field": name-or-null}."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "")} for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}"
        return JSONResponse({"error": message, "field": first["field"], "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail), "field": None}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"error": str(exc), "field": "body"}, status_code=413)

    @app.exception_handler(GenforgeError)
    async def genforge_error(request: Request, exc: GenforgeError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "field": None}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__})", "field": None}, status_code=500
        )
