"""Service throughput and latency with micro-batching on and off, side by side.

Serves an untrained DCGAN-sized generator (the registered `dcgan` at 32x32x3, its default widths)
with `genforge serve` in a subprocess, then drives it from this process with C concurrent httpx
async clients (C = 1, 8, 32, 64), each sending n=1 requests back to back for a fixed duration.
Writes a Markdown table to bench/results/deploy.md (or --out).

    .venv/bin/python bench/serve_throughput.py [--seconds 6] [--clients 1 8 32 64]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_run(directory: Path) -> dict:
    import torch

    import genforge.models.gan  # noqa: F401  (registers dcgan)
    from genforge.models.pipeline import save_model
    from genforge.models.registry import MODELS

    torch.manual_seed(0)
    cls = MODELS.get("dcgan")
    model = cls(cls.default_config(32, 3))
    save_model(model, "dcgan", directory, {"dataset": {}, "step": 0})
    params = sum(p.numel() for p in model.generator.parameters())
    return {
        "g_widths": model.config.g_widths,
        "latent_dim": model.config.latent_dim,
        "generator_params": params,
    }


def start(run: Path, batching: bool) -> tuple[subprocess.Popen, str]:
    args = [
        sys.executable,
        "-m",
        "genforge",
        "serve",
        str(run),
        "--port",
        "0",
        "--max-batch",
        "64",
        "--max-wait-ms",
        "5",
    ]
    if not batching:
        args.append("--no-batching")
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, text=True, env={**os.environ, "GENFORGE_API_KEY": ""}
    )
    url = re.search(r"on (http://\S+) ", proc.stderr.readline()).group(1)
    deadline = time.monotonic() + 120
    while httpx.get(url + "/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit("server not ready")
        time.sleep(0.1)
    return proc, url


async def drive(url: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def one_client(client: httpx.AsyncClient, index: int) -> None:
        nonlocal errors
        seed = index * 1_000_000
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            resp = await client.post("/v1/generate", json={"n": 1, "seed": seed, "format": "npy"})
            if resp.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1
            seed += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(client, i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "requests": len(latencies),
        "errors": errors,
    }


def healthz_ms(url: str, n: int = 20) -> float:
    """Mean round trip of GET /healthz (no model work): the floor the machine puts under every request."""
    with httpx.Client(base_url=url) as client:
        client.get("/healthz")
        t0 = time.perf_counter()
        for _ in range(n):
            client.get("/healthz")
        return (time.perf_counter() - t0) / n * 1000


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except Exception:
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "deploy.md")
    args = ap.parse_args()
    results: dict[tuple[str, int], dict] = {}
    floor: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_run(Path(tmp))
        for mode, batching in (("batching on", True), ("batching off", False)):
            proc, url = start(Path(tmp), batching)
            try:
                asyncio.run(drive(url, 4, 1.0))  # warm the connections and the allocator
                floor[mode] = healthz_ms(url)
                for clients in args.clients:
                    before = httpx.get(url + "/metrics").text
                    results[mode, clients] = asyncio.run(drive(url, clients, args.seconds))
                    results[mode, clients]["mean_batch"] = _batch_delta(
                        before, httpx.get(url + "/metrics").text
                    )
                    print(mode, clients, results[mode, clients], flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
    write_report(args, model, results, floor)


def _batch_delta(before: str, after: str) -> float:
    def read(text: str, name: str) -> float:
        return float(re.search(rf"^genforge_batch_size_images_{name} (\S+)$", text, re.M).group(1))

    passes = read(after, "count") - read(before, "count")
    return (read(after, "sum") - read(before, "sum")) / passes if passes else float("nan")


def write_report(args: argparse.Namespace, model: dict, results: dict, floor: dict[str, float]) -> None:
    on, off = "batching on", "batching off"
    lines = [
        "# Deploy: service throughput with and without micro-batching",
        "",
        f"- command: `.venv/bin/python bench/serve_throughput.py --seconds {args.seconds:g} "
        f"--clients {' '.join(map(str, args.clients))}`",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {os.cpu_count()} CPUs (`nproc`: {len(os.sched_getaffinity(0))}), {cpu_model()}; "
        f"load average at the end {os.getloadavg()[0]:.1f} (shared with other engineers' jobs, so "
        "absolute numbers are noisy; both modes ran in the same script, one after the other)",
        f"- model: untrained `dcgan` 32x32x3, generator widths {model['g_widths']}, latent {model['latent_dim']}, "
        f"{model['generator_params']:,} generator parameters; server `genforge serve --max-batch 64 --max-wait-ms 5` "
        "(torch's default threads) in a subprocess, clients: httpx async in the bench process on loopback",
        f"- each level: C clients send n=1 requests back to back for {args.seconds:g} s (format npy)",
        f"- idle `GET /healthz` round trip (no model work): {floor[on]:.1f} ms (batching-on server), "
        f"{floor[off]:.1f} ms (batching-off server)",
        "",
        "| clients | images/s on | images/s off | speed-up | p50 ms on | p50 ms off | p99 ms on | p99 ms off "
        "| mean images per pass on | errors on/off |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in args.clients:
        a, b = results[on, c], results[off, c]
        lines.append(
            f"| {c} | {a['images_per_s']:.1f} | {b['images_per_s']:.1f} | {a['images_per_s'] / b['images_per_s']:.2f}x "
            f"| {a['p50_ms']:.1f} | {b['p50_ms']:.1f} | {a['p99_ms']:.1f} | {b['p99_ms']:.1f} "
            f"| {a['mean_batch']:.1f} | {a['errors']}/{b['errors']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
