"""`genforge serve` as a real process: SIGTERM while requests are in flight lets them finish."""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from genforge.models.pipeline import load_pipeline
from test_serve_models import make_run

TESTS = Path(__file__).resolve().parent
LAUNCH = (
    "import sys; sys.path.insert(0, {tests!r}); import test_serve_models; "
    "from genforge.cli import main; sys.argv = ['genforge', 'serve', *sys.argv[1:]]; main()"
)


def start_server(run: Path, *args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "GENFORGE_API_KEY": ""}
    proc = subprocess.Popen(
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
        env=env,
    )
    line = proc.stderr.readline()
    match = re.search(r"on (http://\S+) ", line)
    assert match, f"no URL in {line!r}"
    url = match.group(1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("server never became ready")


def wait_in_flight(url: str, n: int) -> None:
    deadline = time.monotonic() + 90  # generous: a loaded CI machine starts threads slowly
    while time.monotonic() < deadline:
        text = httpx.get(url + "/metrics").text
        value = re.search(r"^genforge_requests_in_progress (\S+)$", text, re.M)
        if value and float(value.group(1)) >= n + 1:  # + the /metrics request itself
            return
        time.sleep(0.01)
    raise AssertionError(f"{n} requests never were in flight at once")


def test_sigterm_finishes_requests_in_flight(tmp_path):
    run = make_run(tmp_path, delay_ms=600)
    pipe = load_pipeline(run)
    proc, url = start_server(run, "--max-wait-ms", "1")
    try:
        seeds = list(range(8))
        # all 8 must arrive while the first request's pass runs (it is batched alone: --max-wait-ms
        # 1), or the first is done before the last is in and 8 are never in flight at once: one
        # client made beforehand (a fresh `httpx.post` builds its own, TLS context included, under
        # the GIL) and a 600 ms pass (300 ms failed once in a CI run on a machine losing CPU to steal)
        limits = httpx.Limits(max_connections=len(seeds))
        with httpx.Client(limits=limits, timeout=30) as client, concurrent.futures.ThreadPoolExecutor(len(seeds)) as pool:
            futures = [
                pool.submit(client.post, url + "/v1/generate", json={"n": 1, "seed": s, "format": "npy"})
                for s in seeds
            ]
            wait_in_flight(url, len(seeds))  # the first pass (600 ms) is running, the rest are queued
            proc.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200] * len(seeds)
        for seed, resp in zip(seeds, responses, strict=True):
            got = np.load(io.BytesIO(resp.content), allow_pickle=False)
            assert np.array_equal(got, pipe.generate(1, seed=seed)[0])
        # uvicorn re-raises the signal once its graceful shutdown is done, so the exit is "killed by SIGTERM"
        assert proc.wait(30) in (0, -signal.SIGTERM)
        try:
            httpx.get(url + "/healthz", timeout=2)
            raise AssertionError("still accepting connections after shutdown")
        except httpx.TransportError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def test_bad_run_dir_fails_before_listening(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "genforge", "serve", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no model.json" in proc.stderr
