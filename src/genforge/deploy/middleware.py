"""ASGI middleware: per-route request metrics, API keys and per-client rate limits on every
route under /v1/, and a request body size limit."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from genforge.deploy.metrics import ServiceMetrics


class BodyTooLarge(HTTPException):
    # an HTTPException, so FastAPI's body parsing passes it on instead of turning it into a 400
    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")
        self.limit = limit

    def __str__(self) -> str:
        return str(self.detail)


async def send_json(
    send: Any, status: int, body: dict[str, Any], extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers.extend(extra_headers)
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


class RateLimiter:
    """Token buckets, one per client: a bucket holds up to `burst` requests and refills at `rate`
    per second. Used from the event loop only (no lock)."""

    MAX_CLIENTS = 10_000  # beyond this many buckets, full ones (= never seen) are dropped

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, time of last update)

    def acquire(self, client: str) -> float:
        """0.0 when `client` may go ahead (one token taken), else the seconds until a token is there."""
        now = self.clock()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.MAX_CLIENTS:
            self._buckets = {
                c: (t, s) for c, (t, s) in self._buckets.items() if t + (now - s) * self.rate < self.burst
            }
        return wait


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


class AccessMiddleware:
    """API keys and rate limits for every route under `prefix` (`/v1/`), whichever route it is.

    With keys (`keys`: client name -> key), a request must carry one (`Authorization: Bearer KEY`
    or `X-API-Key: KEY`) or gets 401; the key is looked up by its SHA-256, so the comparison takes
    no time that depends on the stored keys. With a `limiter`, each client (its key's name, or its
    address when there are no keys) has its own token bucket; an empty one gets 429 with
    `Retry-After`. The client's name is left in `request.state.genforge_client`.
    """

    def __init__(
        self,
        app: Any,
        keys: Mapping[str, str],
        metrics: ServiceMetrics,
        limiter: RateLimiter | None = None,
        prefix: str = "/v1/",
    ):
        self.app = app
        self.names = {_digest(key): name for name, key in keys.items()}
        self.metrics = metrics
        self.limiter = limiter
        self.prefix = prefix

    def _guarded(self, path: str) -> bool:
        return path.startswith(self.prefix) or path == self.prefix.rstrip("/")

    def _client(self, scope: dict) -> tuple[str | None, str]:
        """(client name or None when the key is missing or wrong, rate-limit bucket)."""
        if not self.names:
            address = scope.get("client")
            return "anonymous", f"address:{address[0] if address else 'unknown'}"
        given = None
        for name, value in scope.get("headers") or ():
            if name == b"x-api-key":
                given = value.strip()
                break
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        client = self.names.get(_digest(given)) if given else None
        return client, f"key:{client}"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self._guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        client, bucket = self._client(scope)
        if client is None:
            message = "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')"
            await send_json(
                send,
                401,
                {"error": message, "field": None},
                [(b"www-authenticate", b'Bearer realm="genforge"')],
            )
            return
        if self.limiter is not None:
            wait = self.limiter.acquire(bucket)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                self.metrics.rate_limited.inc(client=client)
                rate = self.limiter.rate
                message = (
                    f"rate limit exceeded for client {client!r} ({rate:g} requests/s, bursts of "
                    f"{self.limiter.burst}); retry in {retry} s"
                )
                await send_json(
                    send, 429, {"error": message, "field": None}, [(b"retry-after", str(retry).encode())]
                )
                return
        self.metrics.client_requests.inc(client=client)
        scope.setdefault("state", {})["genforge_client"] = client
        await self.app(scope, receive, send)


def route_path(routes: Sequence[BaseRoute], scope: dict) -> str | None:
    """The template of the route that `scope` would reach, for requests answered before routing."""
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return getattr(route, "path", None)
    return None


class MetricsMiddleware:
    """Counts requests by route template (not raw path, so label values stay few) and status."""

    def __init__(self, app: Any, metrics: ServiceMetrics, routes: Sequence[BaseRoute] = ()):
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's routes: names requests that middleware answered (401, 429, 413)

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
            name = getattr(route, "path", None) or route_path(self.routes, scope) or "other"
            self.metrics.requests.inc(route=name, method=scope["method"], status=str(status))
            self.metrics.latency.observe(time.perf_counter() - start, route=name)
