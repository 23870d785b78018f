"""Service throughput and latency with micro-batching on and off, side by side.

Serves an untrained DCGAN-sized generator (the registered `dcgan` at 32x32x3, its default widths)
with `genforge serve` in a subprocess and drives it from a *separate* load-generator process, so
the server is what gets measured rather than an HTTP client sharing its cores. The load generator
is a closed loop over raw keep-alive sockets (selectors, no HTTP library): C connections each send
`POST /v1/generate {"n": 1, "seed": s, "format": "npy"}` (a new seed every request), wait for
the whole response and send the next, for a fixed duration. Its own CPU time is reported, so the
share of the machine it took is visible. Writes a Markdown table to bench/results/deploy.md.

With `--compare-stacks` the two servers differ in uvicorn's HTTP parser and event loop instead
(both micro-batching): httptools + uvloop against h11 + asyncio (`pip install -c constraints.txt
'uvicorn[standard]'` first); the table goes to bench/results/deploy_stacks.md.

    .venv/bin/python bench/serve_throughput.py [--seconds 6] [--clients 1 8 32 64] [--compare-stacks]
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from common import cpu_model

ROOT = Path(__file__).resolve().parents[1]
NPY_BYTES = 128 + 32 * 32 * 3  # np.save header + one uint8 32x32x3 image


def make_run(directory: Path) -> dict:
    import torch

    import genforge.models.gan  # noqa: F401  (registers dcgan)
    from genforge.models.pipeline import save_model
    from genforge.models.registry import MODELS

    torch.manual_seed(0)
    cls = MODELS.get("dcgan")
    model = cls(cls.default_config(32, 3))
    save_model(model, "dcgan", directory, {"dataset": {}, "step": 0})
    return {
        "g_widths": model.config.g_widths,
        "latent_dim": model.config.latent_dim,
        "generator_params": sum(p.numel() for p in model.generator.parameters()),
    }


# (name, micro-batching, `genforge serve` flags) of the two servers compared
BATCHING_MODES = [("on", True, []), ("off", False, [])]
STACK_MODES = [  # the candidate first: "speed-up" is its images/s over the plain stack's
    ("httptools+uvloop", True, ["--http", "httptools", "--loop", "uvloop"]),
    ("h11+asyncio", True, ["--http", "h11", "--loop", "asyncio"]),
]


def start(run: Path, batching: bool, extra: list[str]) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "genforge", "serve", str(run), "--port", "0", *extra]
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


# the load generator (runs in its own process) ---------------------------------------------------


def _request(host: str, seed: int) -> bytes:
    body = json.dumps({"n": 1, "seed": seed, "format": "npy"}).encode()
    head = (
        f"POST /v1/generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Conn:
    """One keep-alive connection with one request in flight."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.host = host

    def send(self, seed: int) -> None:
        self.buf = bytearray()
        self.total = -1  # header + body length, once the header is in
        self.status = 0
        self.sent_at = time.perf_counter()
        self.sock.sendall(_request(self.host, seed))

    def receive(self) -> bool:
        """Read what is there; True once the whole response is in."""
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the server closed a keep-alive connection")
        self.buf += data
        if self.total < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            length = next(
                int(x.split(":", 1)[1]) for x in lines[1:] if x.lower().startswith("content-length:")
            )
            self.total = end + 4 + length
            self.body_len = length
        return len(self.buf) >= self.total


def drive(host: str, port: int, clients: int, seconds: float, seed0: int) -> dict:
    """C closed-loop clients for `seconds`; responses finishing after the window are not counted."""
    conns = [_Conn(host, port) for _ in range(clients)]
    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    errors = 0
    seed = seed0
    cpu0 = time.process_time()
    stop = time.perf_counter() + seconds
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
        c.send(seed)
        seed += 1
    while sel.get_map():
        for key, _ in sel.select(5.0):
            c = key.data
            if not c.receive():
                continue
            now = time.perf_counter()
            if c.status != 200 or c.body_len != NPY_BYTES:
                errors += 1
            elif now <= stop:
                latencies.append(now - c.sent_at)
            if now < stop:
                c.send(seed)
                seed += 1
            else:
                sel.unregister(c.sock)
                c.sock.close()
    return {"latencies": latencies, "errors": errors, "cpu_s": time.process_time() - cpu0}


def _drive_entry(queue, *args) -> None:
    queue.put(drive(*args))


def measure(url: str, clients: int, seconds: float, seed0: int) -> dict:
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_drive_entry, args=(queue, host, int(port), clients, seconds, seed0))
    proc.start()
    out = queue.get(timeout=seconds + 120)
    proc.join(30)
    lat = np.array(out["latencies"]) * 1000
    return {
        "images_per_s": len(lat) / seconds,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "requests": len(lat),
        "errors": out["errors"],
        "client_cpu_pct": 100 * out["cpu_s"] / seconds,
    }


# the report ---------------------------------------------------------------------------------------


def pass_ms(threads: int) -> dict[int, float]:
    """The pure forward pass (latents -> uint8 images) at batch 1, 32, 64, in this process: the ceiling."""
    import torch

    import genforge.models.gan  # noqa: F401
    from genforge.models.registry import MODELS

    torch.set_num_threads(threads)
    cls = MODELS.get("dcgan")
    model = cls(cls.default_config(32, 3)).eval()
    out = {}
    with torch.no_grad():
        for b in (1, 32, 64):
            z = torch.randn(b, model.config.latent_dim)
            for _ in range(3):
                model.generator(z)
            reps = 40 if b == 1 else 10
            t0 = time.perf_counter()
            for _ in range(reps):
                model.generator(z)
            out[b] = (time.perf_counter() - t0) / reps * 1000
    return out


def healthz_ms(url: str, n: int = 50) -> float:
    """Mean round trip of GET /healthz (no model work): the floor under every request."""
    with httpx.Client(base_url=url) as client:
        client.get("/healthz")
        t0 = time.perf_counter()
        for _ in range(n):
            client.get("/healthz")
        return (time.perf_counter() - t0) / n * 1000


def _batch_delta(before: str, after: str) -> float:
    def read(text: str, name: str) -> float:
        return float(re.search(rf"^genforge_batch_size_images_{name} (\S+)$", text, re.M).group(1))

    passes = read(after, "count") - read(before, "count")
    return (read(after, "sum") - read(before, "sum")) / passes if passes else float("nan")


def _stack(compare_stacks: bool = False) -> str:
    from importlib.util import find_spec

    if compare_stacks:
        return "uvicorn httptools + uvloop against h11 + asyncio, both micro-batching"
    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"uvicorn {http} + {loop}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--serve-args", default="", help="extra `genforge serve` flags, e.g. '--threads 2'")
    ap.add_argument(
        "--compare-stacks",
        action="store_true",
        help="compare uvicorn httptools + uvloop with h11 + asyncio (needs uvicorn[standard]) instead of "
        "micro-batching on and off",
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="default bench/results/deploy.md (deploy_stacks.md)"
    )
    args = ap.parse_args()
    if args.out is None:
        args.out = ROOT / "bench" / "results" / ("deploy_stacks.md" if args.compare_stacks else "deploy.md")
    modes = STACK_MODES if args.compare_stacks else BATCHING_MODES
    if args.compare_stacks:
        from importlib.util import find_spec

        missing = [m for m in ("httptools", "uvloop") if find_spec(m) is None]
        if missing:
            raise SystemExit(
                f"--compare-stacks: {', '.join(missing)} not installed; pip install 'uvicorn[standard]'"
            )
    extra = args.serve_args.split()
    results: dict[tuple[str, int], dict] = {}
    floor: dict[str, float] = {}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = make_run(Path(tmp))
        for mode, batching, flags in modes:
            proc, url = start(Path(tmp), batching, [*flags, *extra])
            try:
                measure(url, 4, 1.0, 10**9)  # warm the connections and the allocator
                floor[mode] = healthz_ms(url)
                for i, clients in enumerate(args.clients):
                    before = httpx.get(url + "/metrics").text
                    r = measure(url, clients, args.seconds, i * 10**7)
                    r["mean_batch"] = _batch_delta(before, httpx.get(url + "/metrics").text)
                    results[mode, clients] = r
                    print(mode, clients, r, flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
    ceiling = {t: pass_ms(t) for t in (1, 2)}
    write_report(args, model, results, floor, ceiling, (load0, os.getloadavg()[0]), [m[0] for m in modes])


def write_report(
    args, model: dict, results: dict, floor: dict, ceiling: dict, load: tuple, modes: list[str]
) -> None:
    on, off = modes
    cmd = f".venv/bin/python bench/serve_throughput.py --seconds {args.seconds:g} --clients " + " ".join(
        map(str, args.clients)
    )
    if args.compare_stacks:
        cmd += " --compare-stacks"
    if args.serve_args:
        cmd += f" --serve-args '{args.serve_args}'"
    ceil = "; ".join(
        f"{t} torch thread{'s' if t > 1 else ''}: "
        + ", ".join(f"batch {b} {ms:.2f} ms ({b / ms * 1000:.0f} images/s)" for b, ms in c.items())
        for t, c in ceiling.items()
    )
    title = (
        "uvicorn httptools + uvloop against h11 + asyncio"
        if args.compare_stacks
        else "with and without micro-batching"
    )
    lines = [
        f"# Deploy: service throughput {title}",
        "",
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {os.cpu_count()} CPUs (`nproc`: {len(os.sched_getaffinity(0))}), {cpu_model()}; "
        f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (the machine is shared with "
        "other engineers' jobs, so absolute numbers are noisy; both servers ran in this one script, one "
        "after the other)",
        f"- model: untrained `dcgan` 32x32x3, generator widths {model['g_widths']}, latent "
        f"{model['latent_dim']}, {model['generator_params']:,} generator parameters; server "
        f"`genforge serve {args.serve_args or '(defaults)'}` in a subprocess ({_stack(args.compare_stacks)})",
        f"- pure forward pass, no service (ceiling): {ceil}",
        "- load: a separate process, closed loop over raw keep-alive sockets: C connections each send "
        f'`{{"n": 1, "seed": s, "format": "npy"}}` back to back for {args.seconds:g} s; "client CPU" is '
        "that process's CPU time over the window (100% = one core)",
        f"- idle `GET /healthz` round trip (no model work, httpx client): {floor[on]:.1f} ms "
        f"({on_server(on, args)}), {floor[off]:.1f} ms ({on_server(off, args)})",
        "",
        f"| clients | images/s {on} | images/s {off} | speed-up | p50 ms {on} | p50 ms {off} | p99 ms {on} "
        f"| p99 ms {off} | images per pass {on} | client CPU {on}/{off} | errors {on}/{off} |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in args.clients:
        a, b = results[on, c], results[off, c]
        lines.append(
            f"| {c} | {a['images_per_s']:.0f} | {b['images_per_s']:.0f} | "
            f"{a['images_per_s'] / b['images_per_s']:.2f}x | {a['p50_ms']:.1f} | {b['p50_ms']:.1f} | "
            f"{a['p99_ms']:.1f} | {b['p99_ms']:.1f} | {a['mean_batch']:.1f} | "
            f"{a['client_cpu_pct']:.0f}%/{b['client_cpu_pct']:.0f}% | {a['errors']}/{b['errors']} |"
        )
    # hand-written notes below the table survive a re-run
    notes = args.out.read_text().partition("\n## Notes")[1:] if args.out.is_file() else ("", "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n" + "".join(notes))
    print("\n".join(lines))


def on_server(mode: str, args) -> str:
    return f"{mode} server" if args.compare_stacks else f"batching-{mode} server"


if __name__ == "__main__":
    main()
