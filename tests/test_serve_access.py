"""Safe service defaults: no open service on a public address by accident, keys from a file or the
environment (never the process arguments), several clients, per-client rate limits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from genforge.core.errors import ConfigError
from genforge.deploy.config import ServeConfig, is_loopback, key_name, parse_rate, read_key_file
from genforge.deploy.middleware import RateLimiter
from genforge.deploy.server import ServiceServer
from test_serve import _metric
from test_serve_models import make_run, serving
from test_serve_shutdown import LAUNCH, TESTS

BODY = {"n": 1, "seed": 0, "format": "npy"}


def launch(run: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH.format(tests=str(TESTS)),
            str(run),
            "--port",
            "0",
            "--threads",
            "1",
            *args,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GENFORGE_API_KEY": "", "GENFORGE_API_KEY_FILE": "", **(env or {})},
    )


def ready_url(proc: subprocess.Popen) -> str:
    """The loopback URL of a launched server, once it is ready."""
    line = proc.stderr.readline()
    match = re.search(r"on http://[^:]+:(\d+) ", line)
    assert match, f"no URL in {line!r}"
    url = f"http://127.0.0.1:{match.group(1)}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.stderr.close()


# configuration ----------------------------------------------------------------------------------


def test_no_open_service_on_a_public_address_by_accident():
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(ConfigError, match="--allow-unauthenticated"):
            ServeConfig(host=host)
        ServeConfig(host=host, allow_unauthenticated=True)
        ServeConfig(host=host, api_keys={"alice": "k"})
        ServeConfig(host=host, api_key="k")
    for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"):
        assert is_loopback(host)
        ServeConfig(host=host)


def test_key_file_several_clients_and_errors(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# one client per line\nalice: ka-123\n\nbob:kb:with:colons\nbare-key-9\n")
    assert read_key_file(path) == {
        "alice": "ka-123",
        "bob": "kb:with:colons",
        key_name("bare-key-9"): "bare-key-9",
    }
    assert key_name("bare-key-9").startswith("key-") and "bare" not in key_name("bare-key-9")
    for text, why in (
        ("alice:k1\nalice:k2\n", r"keys:2: client name 'alice' is given twice"),
        ("alice:k1\nbob:k1\n", r"keys:2: the key of 'bob' is already"),
        ("alice:\n", r"keys:1: empty API key"),
        ("al ice:k\n", r"keys:1: client name"),
        ("alice:k 1\n", r"keys:1: .*spaces"),
        ("# nothing\n\n", r"keys: no API keys"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=why):
            read_key_file(path)
    with pytest.raises(ConfigError, match="missing: cannot read the API key file"):
        read_key_file(tmp_path / "missing")


def test_rate_parsing_and_token_bucket():
    assert parse_rate("2") == 2 and parse_rate("30/min") == 0.5 and parse_rate("36 / h") == 0.01
    with pytest.raises(ConfigError, match="N/min"):
        parse_rate("3/week")
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)  # empty: one token in 1/rate s
    assert limiter.acquire("b") == 0.0  # every client has its own bucket
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 100.0
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0  # refilled to the burst, no further


# the service ------------------------------------------------------------------------------------


def test_rate_limit_per_key_429_retry_after_and_metrics(tmp_path):
    keys = {"alice": "ka", "bob": "kb"}
    with serving(make_run(tmp_path), api_keys=keys, rate_limit=0.5, rate_burst=2) as server:
        url = server.url + "/v1/generate"

        def post(key: str) -> httpx.Response:
            return httpx.post(url, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=30)

        assert [post("ka").status_code for _ in range(2)] == [200, 200]
        limited = post("ka")
        assert limited.status_code == 429, limited.text
        assert limited.headers["retry-after"] == "2"  # one token every 2 s
        assert "alice" in limited.json()["error"] and "retry in 2 s" in limited.json()["error"]
        assert post("kb").status_code == 200  # bob's bucket is his own
        assert httpx.post(url, json=BODY, headers={"X-API-Key": "nope"}).status_code == 401
        assert httpx.get(server.url + "/healthz").status_code == 200  # open routes are not limited
        text = httpx.get(server.url + "/metrics").text
        assert _metric(text, "genforge_rate_limited_total", client="alice") == 1
        assert _metric(text, "genforge_rate_limited_total", client="bob") == 0
        assert _metric(text, "genforge_client_requests_total", client="alice") == 2
        assert _metric(text, "genforge_client_requests_total", client="bob") == 1
        # answered by the middleware, still counted under the route
        for status in ("429", "401"):
            labels = dict(route="/v1/generate", method="POST", status=status)
            assert _metric(text, "genforge_requests_total", **labels) == 1, status


def test_keys_and_limits_cover_routes_added_later(tmp_path):
    """A route under /v1/ that the service does not know about (e.g. a new modality's) is guarded."""
    cfg = ServeConfig(run_dir=str(make_run(tmp_path)), port=0, api_keys={"alice": "ka"}, rate_limit=0.01)
    server = ServiceServer(cfg)
    server.app.get("/v1/extra")(lambda: {"ok": True})
    with server:
        url = server.url + "/v1/extra"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"X-API-Key": "ka"}).json() == {"ok": True}
        assert httpx.get(url, headers={"X-API-Key": "ka"}).status_code == 429


def test_refuses_public_address_without_key_unless_allowed(tmp_path):
    run = make_run(tmp_path)
    refused = launch(run, "--host", "0.0.0.0")
    try:
        assert refused.wait(60) == 2
        err = refused.stderr.read()
        assert "refusing to serve on 0.0.0.0 without an API key" in err and "--allow-unauthenticated" in err
    finally:
        stop(refused)
    proc = launch(run, "--host", "0.0.0.0", "--allow-unauthenticated")
    try:
        url = ready_url(proc)
        assert httpx.post(url + "/v1/generate", json=BODY, timeout=30).status_code == 200
    finally:
        stop(proc)


def test_keys_from_file_and_environment_not_in_arguments(tmp_path):
    run = make_run(tmp_path)
    keys = {"alice": "alice-Secret-1", "bob": "bob-Secret-2"}
    key_file = tmp_path / "keys.txt"
    key_file.write_text("".join(f"{n}:{k}\n" for n, k in keys.items()) + "bare-Secret-3\n")
    key_file.chmod(0o600)
    proc = launch(
        run, "--host", "0.0.0.0", "--api-key-file", str(key_file), env={"GENFORGE_API_KEY": "env-Secret-4"}
    )
    try:
        url = ready_url(proc)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        secrets = [*keys.values(), "bare-Secret-3", "env-Secret-4"]
        assert not [k for k in secrets if k.encode() in cmdline]
        for key in secrets:
            resp = httpx.post(
                url + "/v1/generate", json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
            assert resp.status_code == 200, key
        for headers in ({}, {"Authorization": "Bearer alice-Secret-2"}, {"X-API-Key": "Secret"}):
            assert httpx.post(url + "/v1/generate", json=BODY, headers=headers).status_code == 401, headers
        text = httpx.get(url + "/metrics").text
        for name in ("alice", "bob", key_name("bare-Secret-3"), key_name("env-Secret-4")):
            assert _metric(text, "genforge_client_requests_total", client=name) == 1, name
        assert "Secret" not in text
    finally:
        stop(proc)


def test_http_stack_auto_and_explicit(tmp_path, monkeypatch):
    from genforge.deploy import server as server_module

    with serving(make_run(tmp_path), http="h11", loop="asyncio") as plain:
        assert (plain.http, plain.loop) == ("h11", "asyncio")
        assert httpx.post(plain.url + "/v1/generate", json=BODY, timeout=30).status_code == 200
    monkeypatch.setattr(server_module, "find_spec", lambda name: None)  # uvicorn[standard] not installed
    assert server_module.resolve_stack("auto", "auto") == ("h11", "asyncio")
    with pytest.raises(
        ConfigError, match=r"--http httptools: httptools is not installed.*uvicorn\[standard\]"
    ):
        server_module.resolve_stack("httptools", "auto")
    with pytest.raises(ConfigError, match="--loop uvloop"):
        server_module.resolve_stack("auto", "uvloop")
    monkeypatch.setattr(server_module, "find_spec", lambda name: object())
    assert server_module.resolve_stack("auto", "auto") == ("httptools", "uvloop")
    with pytest.raises(ConfigError, match="http must be one of"):
        ServeConfig(http="gunicorn")
