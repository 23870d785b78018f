"""Running the service on uvicorn: bind first (so port 0 works and the URL is known), then serve.

The HTTP parser and event loop are uvicorn's: `auto` takes httptools and uvloop when they are
installed (`pip install 'uvicorn[standard]'`), else h11 and asyncio.

Graceful shutdown is uvicorn's: on SIGTERM/SIGINT it stops accepting connections, waits up to
`shutdown_timeout_s` for requests in flight, then runs the app's shutdown, where the batcher
finishes whatever is still queued.
"""

from __future__ import annotations

import socket
import threading
import time
from importlib.util import find_spec

import uvicorn

from genforge.core.errors import ConfigError, GenforgeError
from genforge.deploy.config import ServeConfig
from genforge.deploy.service import create_app
from genforge.models.pipeline import Pipeline


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise GenforgeError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    # accepted connections inherit this: without it a keep-alive client waits ~40 ms per request
    # (Nagle holding the response's second segment until the client's delayed ACK)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def resolve_stack(http: str, loop: str) -> tuple[str, str]:
    """Concrete (HTTP parser, event loop) for the configured names; `auto` prefers the fast ones."""
    fast = {"http": ("httptools", "h11"), "loop": ("uvloop", "asyncio")}
    chosen = []
    for option, value in (("http", http), ("loop", loop)):
        fast_one, plain = fast[option]
        installed = find_spec(fast_one) is not None
        if value == "auto":
            value = fast_one if installed else plain
        elif value == fast_one and not installed:
            raise ConfigError(
                f"--{option} {value}: {value} is not installed (pip install 'uvicorn[standard]')"
            )
        chosen.append(value)
    return chosen[0], chosen[1]


class ServiceServer:
    """The app on a bound socket; `run()` blocks (signals handled), `start()` runs it in a thread."""

    def __init__(self, config: ServeConfig, pipeline: Pipeline | None = None, log_level: str = "warning"):
        self.config = config
        self.http, self.loop = resolve_stack(config.http, config.loop)  # before binding: may fail
        self.app = create_app(config, pipeline)
        self.sock = bind(config.host, config.port)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                http=self.http,
                loop=self.loop,
                ws="none",  # no websocket routes
                log_level=log_level,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=int(max(1, config.shutdown_timeout_s)),
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 30.0) -> ServiceServer:
        """Serve in a background thread (no signal handlers there); returns once accepting."""
        self._thread = threading.Thread(target=self.run, name="genforge-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise GenforgeError(f"the service did not start within {timeout:g} s")
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        state = self.app.state.genforge
        if not state.ready.wait(timeout):
            raise GenforgeError(state.load_error or f"the model was not ready within {timeout:g} s")

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
