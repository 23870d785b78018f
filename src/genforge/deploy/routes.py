"""The per-modality part of the service: which endpoints a run gets, what serves them, what
`/v1/models` says about it and which gallery page `/` shows.

`ROUTES` maps a modality (core/modality.py) to a `ServiceRoutes` subclass; the app looks it up
from the run's modality, so a new modality registers its routes here instead of the app growing
branches on names. The image entry (`/v1/generate`, `/v1/restore` through the micro-batcher)
lives in `deploy.service`; the text entry (`/v1/completions` through the decode scheduler) in
`deploy.completions`. Everything else (auth, rate limits, body limit, request metrics, health,
`/metrics`, the static files) is shared and stays in the app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from genforge.core.modality import DEFAULT, lookup, modality_registry

if TYPE_CHECKING:
    from fastapi import FastAPI

# modality -> ServiceRoutes subclass
ROUTES = modality_registry("service routes")


class ServiceRoutes:
    """Base of the per-modality routes; `state` is the app's `ServiceState` (config, metrics,
    readiness). Built when the app is built (before the model loads), so `install` adds the
    endpoints and the OpenAPI schema is complete at once; `start` runs in the loader thread once
    the pipeline is loaded."""

    # the gallery page served at / (a file in deploy/static)
    page: ClassVar[str] = "index.html"

    def __init__(self, state: Any):
        self.state = state

    def install(self, app: FastAPI) -> None:
        """Add this modality's endpoints to `app` (they answer 503 until `start` has run)."""
        raise NotImplementedError

    def start(self, pipeline: Any) -> None:
        """Build what serves `pipeline` (engine, batcher, scheduler) and warm it up."""
        raise NotImplementedError

    def stop(self, timeout: float) -> bool:
        """Finish the work in flight (at most `timeout` s); False when it did not finish in time."""
        return True

    def info(self) -> dict[str, Any]:
        """This modality's fields of `GET /v1/models` (the shared ones are the app's)."""
        return {}


def run_modality(run_dir: str | Path) -> str:
    """The modality recorded in a run's model.json, read before the model loads (the routes are
    chosen at app construction). An unreadable file gives the default: loading it then fails
    with the real error, which /readyz reports."""
    try:
        info = json.loads((Path(run_dir) / "model.json").read_text())
    except (OSError, ValueError):
        return DEFAULT
    modality = info.get("modality") if isinstance(info, dict) else None
    return modality if isinstance(modality, str) else DEFAULT


def routes_for(modality: str) -> type[ServiceRoutes]:
    return lookup(ROUTES, modality, "genforge.deploy.modalities")
