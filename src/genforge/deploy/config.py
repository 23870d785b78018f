"""The service's settings: a typed dataclass, checked when it is built (from flags or a file)."""

from __future__ import annotations

from dataclasses import dataclass

from genforge.core.errors import ConfigError


@dataclass
class ServeConfig:
    run_dir: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # None = no authentication; health, metrics, the gallery page and the OpenAPI schema stay open
    api_key: str | None = None
    batching: bool = True
    max_batch: int = 64  # images per forward pass (a larger single request still runs alone)
    # how long a batch may wait for company, only right after a merged pass (an idle model runs at once)
    max_wait_ms: float = 5.0
    max_n: int = 256  # images per request
    max_steps: int = 1000  # sampler steps per request (diffusion)
    max_body_bytes: int = 8 * 1024 * 1024
    max_pending: int = 4096  # queued images before new requests get 503
    request_timeout_s: float = 60.0  # 504 after this long
    shutdown_timeout_s: float = 30.0  # how long a graceful shutdown waits for requests in flight
    torch_threads: int = 0  # 0 = torch's default less one core, which the event loop needs
    warmup: bool = True  # run one tiny forward pass before reporting ready
    device: str = "cpu"

    def __post_init__(self) -> None:
        positive = {
            "max_batch": self.max_batch,
            "max_n": self.max_n,
            "max_steps": self.max_steps,
            "max_body_bytes": self.max_body_bytes,
            "max_pending": self.max_pending,
            "request_timeout_s": self.request_timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"serve config: {name} must be > 0, got {value}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve config: max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve config: port must be in 0..65535, got {self.port}")
        if self.torch_threads < 0:
            raise ConfigError(f"serve config: torch_threads must be >= 0, got {self.torch_threads}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("serve config: api_key must not be empty (omit it to disable authentication)")
