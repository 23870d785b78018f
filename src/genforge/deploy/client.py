"""A small Python client for the service (httpx)."""

from __future__ import annotations

import io
import os
from typing import Any

import httpx
import numpy as np

from genforge.core.errors import GenforgeError


class ServiceError(GenforgeError):
    """The service answered with an error status; `status` and `field` say which and where."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.field = field


class Client:
    """`Client("http://127.0.0.1:8000", api_key=...)`; the key defaults to $GENFORGE_API_KEY."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0):
        api_key = api_key if api_key is not None else os.environ.get("GENFORGE_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.last_seed: int | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resp = self._http.request(method, path, **kwargs)
        if resp.status_code >= 400:
            try:
                body = resp.json()
                message, field = body.get("error", resp.text), body.get("field")
            except ValueError:
                message, field = resp.text, None
            raise ServiceError(resp.status_code, message, field)
        return resp

    def generate(
        self,
        n: int = 1,
        seed: int | None = None,
        class_label: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> np.ndarray:
        """n images as uint8 (n, H, W, C); the seed used is in `last_seed`."""
        body: dict[str, Any] = {"n": n, "format": "npy"}
        for name, value in (("seed", seed), ("class", class_label), ("steps", steps), ("guidance", guidance)):
            if value is not None:
                body[name] = value
        resp = self._call("POST", "/v1/generate", json=body)
        self.last_seed = int(resp.headers["X-Genforge-Seed"])
        return np.load(io.BytesIO(resp.content), allow_pickle=False)

    def restore(self, images: np.ndarray) -> np.ndarray:
        """Restored uint8 (n, H, W, C) for corrupted uint8 (n, H, W, C) at the model's size."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(images, dtype=np.uint8), allow_pickle=False)
        resp = self._call(
            "POST",
            "/v1/restore",
            params={"format": "npy"},
            content=buf.getvalue(),
            headers={"Content-Type": "application/octet-stream"},
        )
        return np.load(io.BytesIO(resp.content), allow_pickle=False)

    def models(self) -> dict[str, Any]:
        return self._call("GET", "/v1/models").json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz").json()

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200
