"""ASGI middleware: per-route request metrics and a request body size limit."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.exceptions import HTTPException

from genforge.deploy.metrics import ServiceMetrics


class BodyTooLarge(HTTPException):
    # an HTTPException, so FastAPI's body parsing passes it on instead of turning it into a 400
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")
        self.limit = limit

    def __str__(self) -> str:
        return str(self.detail)


async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class BodyLimitMiddleware:
    """413 for a declared Content-Length over the limit; a chunked body that grows past it raises
    `BodyTooLarge` inside the endpoint's read, which the app turns into the same 413."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json(send, 413, {"error": str(BodyTooLarge(self.max_bytes)), "field": "body"})
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class MetricsMiddleware:
    """Counts requests by route template (not raw path, so label values stay few) and status."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_progress.add(1)
        try:
            await self.app(scope, receive, recording)
        finally:
            self.metrics.in_progress.add(-1)
            route = scope.get("route")
            name = getattr(route, "path", None) or "other"
            self.metrics.requests.inc(route=name, method=scope["method"], status=str(status))
            self.metrics.latency.observe(time.perf_counter() - start, route=name)
