"""The service's settings: a typed dataclass, checked when it is built (from flags or a file).

API keys: `api_keys` maps a client name to its key (`api_key`, one unnamed key, is kept for
callers that have a single one). A key file holds one `name:key` or bare `key` per line (`#`
comments and blank lines skipped); a bare key is named `key-` + the first 8 hex digits of its
SHA-256, so metrics and logs can tell clients apart without showing the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from genforge.core.errors import ConfigError

HTTP_IMPLS = ("auto", "h11", "httptools")
LOOP_IMPLS = ("auto", "asyncio", "uvloop")
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$", re.IGNORECASE)
_PER = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}


def key_name(key: str) -> str:
    """The name of an unnamed key: stable, and says nothing usable about the key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to any interface


def check_key(key: str, where: str) -> None:
    if not key or not key.strip():
        raise ConfigError(f"{where}: empty API key")
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ConfigError(f"{where}: an API key must not contain spaces or control characters")


def read_key_file(path: str | Path) -> dict[str, str]:
    """Client name -> key from a key file (one `name:key` or `key` per line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read the API key file ({reason})") from None
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        name, sep, key = line.partition(":")
        if sep:
            name, key = name.strip(), key.strip()
        else:
            name, key = key_name(line), line
        add_key(keys, name, key, where)
    if not keys:
        raise ConfigError(f"{path}: no API keys in the file (expected one 'name:key' or 'key' per line)")
    return keys


def add_key(keys: dict[str, str], name: str, key: str, where: str) -> None:
    """Add one client to `keys` (name -> key), refusing bad names, bad keys and repeats."""
    if not _NAME.match(name):
        raise ConfigError(f"{where}: client name {name!r} must be 1-64 letters, digits or _.@+-")
    check_key(key, where)
    if name in keys:
        raise ConfigError(f"{where}: client name {name!r} is given twice")
    if key in keys.values():
        raise ConfigError(f"{where}: the key of {name!r} is already another client's key")
    keys[name] = key


def key_file_warning(path: str | Path) -> str | None:
    """A warning when other users may read the key file, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} is readable by other users (mode {stat.filemode(mode)}); consider chmod 600"
    return None


def parse_rate(text: str) -> float:
    """Requests per second from '5', '0.5/s', '30/min' or '100/h'."""
    m = _RATE.match(text)
    if not m:
        raise ConfigError(
            f"rate limit: expected a number of requests per second, or N/s, N/min, N/h; got {text!r}"
        )
    return float(m[1]) / _PER[(m[2] or "s").lower()]


@dataclass
class ServeConfig:
    run_dir: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # No key at all = no authentication (health, metrics, the gallery page and the OpenAPI schema
    # stay open either way); refused on a non-loopback host unless allow_unauthenticated.
    api_key: str | None = None  # one key, named by key_name()
    api_keys: dict[str, str] = field(default_factory=dict)  # client name -> key
    allow_unauthenticated: bool = False
    # per client (key, or address when there are no keys), on /v1/*: a token bucket of `rate_burst`
    # requests refilled at `rate_limit` per second; 0 = no limit. rate_burst 0 = ceil(rate_limit).
    rate_limit: float = 0.0
    rate_burst: int = 0
    http: str = "auto"  # uvicorn's HTTP parser: auto = httptools when installed, else h11
    loop: str = "auto"  # event loop: auto = uvloop when installed, else asyncio
    batching: bool = True
    max_batch: int = 64  # images per forward pass (a larger single request still runs alone); text: KV slots
    # how long a batch may wait for company, only right after a merged pass (an idle model runs at once)
    max_wait_ms: float = 5.0
    max_n: int = 256  # images per request; text: completions per request (prompts x n)
    max_steps: int = 1000  # sampler steps per request (diffusion)
    max_tokens: int = 1024  # text: tokens one completion may generate
    max_prompt_tokens: int = 4096  # text: tokens of one prompt
    # text: the decode step's runtime, auto | torch | onnx | onnx-int8 (models/text/onnx_decode.py); None = the
    # pipeline's ($GENFORGE_TEXT_RUNTIME, else auto)
    text_runtime: str | None = None
    # text, streamed answers: a choice's new text goes out at most this often (its first token at
    # once, its end at once); 0 = a chunk per token. A chunk per token costs the event loop and the
    # client a JSON event each, which bounded one stream's SSE rate at half the plain one's
    # (bench/results/text.md); 10 ms is below what a reader sees (a 60 Hz frame is 17 ms)
    stream_interval_ms: float = 10.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_audio_seconds: float = 30.0  # audio: longest upload /v1/enhance takes (413 beyond)
    # audio: the speakers (ids or names) a client may request; empty = every speaker. A cloned voice
    # is personal data: an operator can publish a model while refusing (403) some of its voices.
    allowed_speakers: list[str] = field(default_factory=list)
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
            "max_tokens": self.max_tokens,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_body_bytes": self.max_body_bytes,
            "max_audio_seconds": self.max_audio_seconds,
            "max_pending": self.max_pending,
            "request_timeout_s": self.request_timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"serve config: {name} must be > 0, got {value}")
        for name in ("max_wait_ms", "stream_interval_ms"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ConfigError(f"serve config: {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve config: port must be in 0..65535, got {self.port}")
        if self.torch_threads < 0:
            raise ConfigError(f"serve config: torch_threads must be >= 0, got {self.torch_threads}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("serve config: api_key must not be empty (omit it to disable authentication)")
        self.credentials()  # checks names and keys
        if not (math.isfinite(self.rate_limit) and self.rate_limit >= 0):
            raise ConfigError(f"serve config: rate_limit must be >= 0 requests/s, got {self.rate_limit}")
        if self.rate_burst < 0:
            raise ConfigError(f"serve config: rate_burst must be >= 0, got {self.rate_burst}")
        if self.text_runtime is not None:
            from genforge.models.text.onnx_decode import RUNTIMES  # imports torch: only when one is set

            if self.text_runtime not in RUNTIMES:
                raise ConfigError(f"serve config: text_runtime must be one of {', '.join(RUNTIMES)}, "
                                  f"got {self.text_runtime!r}")
        if self.http not in HTTP_IMPLS:
            raise ConfigError(f"serve config: http must be one of {', '.join(HTTP_IMPLS)}, got {self.http!r}")
        if self.loop not in LOOP_IMPLS:
            raise ConfigError(f"serve config: loop must be one of {', '.join(LOOP_IMPLS)}, got {self.loop!r}")
        if not self.credentials() and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to serve on {self.host} without an API key: anyone who can reach that address "
                "could use the model. Give keys (--api-key-file FILE, or the GENFORGE_API_KEY environment "
                "variable), listen on 127.0.0.1, or pass --allow-unauthenticated to serve it open on purpose"
            )

    def credentials(self) -> dict[str, str]:
        """Every configured client: name -> key (empty: no authentication)."""
        keys: dict[str, str] = {}
        for name, key in self.api_keys.items():
            add_key(keys, name, key, "serve config: api_keys")
        if self.api_key is not None:
            add_key(keys, key_name(self.api_key), self.api_key, "serve config: api_key")
        return keys

    @property
    def burst(self) -> int:
        """Requests a client may send at once before the rate applies."""
        return self.rate_burst or max(1, math.ceil(self.rate_limit))
