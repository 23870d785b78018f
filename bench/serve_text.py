"""Text sampling throughput of the service (continuous batching, KV cache) beside nanoGPT's sample.py.

The model is nanoGPT's CPU recipe size: 4 layers, 4 heads, 128 wide, context 64, the 65 characters
of tinyshakespeare (genforge's `gpt` with its default RoPE positions, random weights: throughput
does not depend on them, and every completion runs to max_tokens). `genforge serve` runs it in a
subprocess (its defaults: torch threads = cores - 1, the rest for the event loop), driven by a
*separate* load-generator process: C closed-loop clients, each POSTing /v1/completions
(`max_tokens` M, a new seed each time) and, once the whole answer is in, the next, for a fixed
window; tokens/s = completion tokens made in the window / window (a completion straddling an end of
the window counts for its share inside it, at an even pace). Streamed (server-sent events, a
chunk per token) and plain JSON answers are measured separately; the load generator's own CPU
time is reported.

nanoGPT: its folder (../shared/anchors/nanogpt) is copied to a temporary directory, tinyshakespeare
prepared with its prepare.py, a checkpoint of the same size made by 10 iterations of its train.py
(what sample.py needs to load; the weights do not change its speed), then its sample.py run as
shipped (`--num_samples S --max_new_tokens M --start ROMEO: --device cpu`, temperature 0.8,
top_k 200: its defaults), with GPT.generate timed from outside (model load and torch import
excluded). sample.py has one stream: it generates its samples one after another, recomputing the
whole (cropped) context for every token. The service gets the same sampling settings.

    .venv/bin/python bench/serve_text.py [--seconds 10] [--max-tokens 500] [--clients 1 16]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
NANOGPT = SHARED / "anchors" / "nanogpt"
CORPUS = SHARED / "data" / "tinyshakespeare" / "input.txt"
SIZE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
SAMPLING = {"temperature": 0.8, "top_k": 200}  # sample.py's defaults
PROMPT = "ROMEO:"

# run inside nanoGPT's folder: GPT.generate timed around sample.py, as shipped
TIMED_SAMPLE = """
import json, runpy, sys, time
import model
generate, timings = model.GPT.generate, []
def timed(self, idx, max_new_tokens, **kw):
    t0 = time.perf_counter()
    out = generate(self, idx, max_new_tokens, **kw)
    timings.append([max_new_tokens, time.perf_counter() - t0])
    return out
model.GPT.generate = timed
sys.argv = ["sample.py", *sys.argv[1:]]
runpy.run_path("sample.py", run_name="__main__")
print("TIMINGS " + json.dumps(timings))
"""


def make_run(directory: Path) -> dict:
    """A genforge text run of nanoGPT's recipe size with the corpus' char tokenizer."""
    import torch

    from genforge.data.text.tokenizer import TOKENIZER_FILE, CharTokenizer
    from genforge.models.pipeline import save_model
    from genforge.models.text.gpt import GPT

    tok = CharTokenizer.train([CORPUS.read_text(encoding="utf-8")])
    torch.manual_seed(0)
    model = GPT(GPT.default_config(tok.vocab_size, **SIZE))
    save_model(model, "gpt", directory, {"dataset": {}, "step": 0})
    tok.save(directory / TOKENIZER_FILE)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": tok.vocab_size,
        "positions": model.config.positions,
    }


# nanoGPT ----------------------------------------------------------------------------------------


def nanogpt_tokens_per_s(work: Path, samples: int, max_tokens: int, log) -> dict:
    """Copy nanoGPT, prepare the data, make a 10-iteration checkpoint, time sample.py."""
    nano = work / "nanogpt"
    shutil.copytree(NANOGPT, nano)
    data = nano / "data" / "shakespeare_char"
    shutil.copy(CORPUS, data / "input.txt")  # prepare.py then reads it instead of downloading
    py = sys.executable
    subprocess.run([py, "data/shakespeare_char/prepare.py"], cwd=nano, check=True, capture_output=True)
    size = [f"--{k}={v}" for k, v in SIZE.items()]
    train = [py, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
             "--eval_iters=2", "--eval_interval=10", "--log_interval=10", "--batch_size=12", *size,
             "--max_iters=10", "--lr_decay_iters=10", "--dropout=0.0", "--always_save_checkpoint=True",
             "--out_dir=out"]  # fmt: skip
    subprocess.run(train, cwd=nano, check=True, capture_output=True)
    log(f"nanoGPT checkpoint: {nano / 'out' / 'ckpt.pt'}")
    sample = [py, "-c", TIMED_SAMPLE, "--out_dir=out", "--device=cpu", "--compile=False",
              f"--num_samples={samples}", f"--max_new_tokens={max_tokens}", f"--start={PROMPT}",
              f"--temperature={SAMPLING['temperature']}", f"--top_k={SAMPLING['top_k']}"]  # fmt: skip
    out = subprocess.run(sample, cwd=nano, check=True, capture_output=True, text=True).stdout
    timings = json.loads(out.rsplit("TIMINGS ", 1)[1])
    tokens = sum(n for n, _ in timings)
    seconds = sum(s for _, s in timings)
    return {"tokens_per_s": tokens / seconds, "samples": len(timings), "tokens": tokens, "seconds": seconds}


# the service and its load ---------------------------------------------------------------------


def start(run: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "genforge", "serve", str(run), "--port", "0", *extra]
    env = {**os.environ, "GENFORGE_API_KEY": ""}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    url = re.search(r"on (http://\S+) ", proc.stderr.readline()).group(1)
    deadline = time.monotonic() + 120
    while httpx.get(url + "/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit("server not ready")
        time.sleep(0.1)
    return proc, url


async def _client(
    url: str, stream: bool, max_tokens: int, window: tuple[float, float], seed: int, out: dict
) -> None:
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "stream": stream, **SAMPLING}
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        while time.perf_counter() < window[1]:
            body["seed"] = seed
            seed += 1
            t0 = time.perf_counter()
            first = None
            tokens = 0
            if stream:
                async with http.stream("POST", "/v1/completions", json=body) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: {"):
                            # char tokenizer: one character per token
                            tokens += len(json.loads(line[6:])["choices"][0]["text"])
                            first = first or time.perf_counter()
                    ok = resp.status_code == 200
            else:
                resp = await http.post("/v1/completions", json=body)
                ok = resp.status_code == 200
                tokens = resp.json()["usage"]["completion_tokens"] if ok else 0
            t1 = time.perf_counter()
            if not ok:
                out["errors"] += 1
                continue
            # the share of this completion's tokens made inside the window (tokens come at an
            # even pace), so completions straddling its ends count for the part inside it
            inside = min(t1, window[1]) - max(t0, window[0])
            out["tokens"] += tokens * max(0.0, inside) / (t1 - t0)
            out["latency"].append(t1 - t0)
            if first is not None:
                out["ttft"].append(first - t0)


def drive(url: str, clients: int, stream: bool, max_tokens: int, seconds: float, seed0: int) -> dict:
    out = {"tokens": 0.0, "errors": 0, "latency": [], "ttft": []}
    cpu0 = time.process_time()

    async def main() -> None:
        start = time.perf_counter()
        window = (start, start + seconds)
        await asyncio.gather(
            *(_client(url, stream, max_tokens, window, seed0 + i * 10**6, out) for i in range(clients))
        )

    asyncio.run(main())
    out["cpu_s"] = time.process_time() - cpu0
    return out


def _drive_entry(queue, *args) -> None:
    queue.put(drive(*args))


def measure(url: str, clients: int, stream: bool, max_tokens: int, seconds: float, seed0: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_drive_entry, args=(queue, url, clients, stream, max_tokens, seconds, seed0))
    proc.start()
    out = queue.get(timeout=seconds + 600)
    proc.join(30)

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2] * 1000 if xs else float("nan")

    return {
        "tokens_per_s": out["tokens"] / seconds,
        "completions": len(out["latency"]),
        "p50_ms": median(out["latency"]),
        "ttft_p50_ms": median(out["ttft"]),
        "errors": out["errors"],
        "client_cpu_pct": 100 * out["cpu_s"] / seconds,
    }


def ceiling(run: Path, threads: int, max_tokens: int, streams: int) -> float:
    """Tokens/s of the bare decode loop (prefill, then ONE decode per token for `streams`
    sequences), in this process: what the service can at most reach."""
    import torch

    from genforge.models.pipeline import load_pipeline

    torch.set_num_threads(threads)
    pipe = load_pipeline(run)
    ids = pipe.encode_prompt(PROMPT)
    with torch.inference_mode():
        cache = pipe.model.new_cache(streams)
        for s in range(streams):
            pipe.model.prefill(cache, s, ids)
        slots = torch.arange(streams)
        tok = torch.zeros(streams, dtype=torch.long)
        t0 = time.perf_counter()
        for _ in range(max_tokens - 1):
            tok = pipe.model.decode(cache, slots, tok).argmax(-1)
        return streams * (max_tokens - 1) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="window per measurement")
    ap.add_argument("--max-tokens", type=int, default=500, help="tokens per completion (sample.py's 500)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--nanogpt-samples", type=int, default=4, help="samples sample.py generates")
    ap.add_argument("--serve-args", default="", help="extra `genforge serve` flags, e.g. '--threads 2'")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_text.md")
    args = ap.parse_args()
    if not (NANOGPT.is_dir() and CORPUS.is_file()):
        raise SystemExit(f"needs {NANOGPT} and {CORPUS} (the shared anchors and data)")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load0 = os.getloadavg()[0]
    results: dict[tuple[bool, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        nano = nanogpt_tokens_per_s(tmp, args.nanogpt_samples, args.max_tokens, log)
        log(f"nanoGPT sample.py: {nano} ({time.perf_counter() - t0:.0f} s with setup)")
        run = tmp / "run"
        run.mkdir()
        model = make_run(run)
        proc, url = start(run, args.serve_args.split())
        try:
            measure(url, 2, False, 20, 1.0, 10**9)  # warm connections and allocators
            for stream in (False, True):
                for i, clients in enumerate(args.clients):
                    r = measure(url, clients, stream, args.max_tokens, args.seconds, i * 10**8)
                    results[stream, clients] = r
                    log(f"{'stream' if stream else 'plain'} x{clients}: {r}")
        finally:
            proc.terminate()
            proc.wait(60)
        threads = max(1, len(os.sched_getaffinity(0)) - 1)  # the service's default
        ceil = {c: ceiling(run, threads, args.max_tokens, c) for c in args.clients}
    write_report(args, model, nano, results, ceil, threads, (load0, os.getloadavg()[0]))


def write_report(args, model, nano, results, ceil, threads, load) -> None:
    from serve_throughput import cpu_model

    cmd = (
        f".venv/bin/python bench/serve_text.py --seconds {args.seconds:g} --max-tokens {args.max_tokens} "
        f"--clients {' '.join(map(str, args.clients))} --nanogpt-samples {args.nanogpt_samples}"
    )
    if args.serve_args:
        cmd += f" --serve-args '{args.serve_args}'"
    size = ", ".join(f"{k} {v}" for k, v in SIZE.items())
    base = nano["tokens_per_s"]
    lines = [
        "# Deploy: text completions (continuous batching, KV cache) vs nanoGPT's sample.py",
        "",
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {os.cpu_count()} CPUs (`nproc`: {len(os.sched_getaffinity(0))}), {cpu_model()}; "
        f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end",
        f"- model: `gpt` {size}, {model['positions']} positions, {model['vocab']} characters, "
        f"{model['params']:,} parameters (random weights); `genforge serve {args.serve_args or '(defaults)'}`",
        f"- nanoGPT `sample.py` (same size, its learned positions; {nano['samples']} samples of "
        f"{args.max_tokens} tokens one after another, temperature 0.8, top_k 200): "
        f"**{base:.0f} tokens/s** ({nano['tokens']} tokens in {nano['seconds']:.1f} s of GPT.generate)",
        f"- bare decode loop in-process ({threads} torch thread{'s' if threads > 1 else ''}), the ceiling: "
        + ", ".join(f"{c} stream{'s' if c > 1 else ''} {v:.0f} tokens/s" for c, v in ceil.items()),
        f"- load: a separate process, C closed-loop clients, each completion {args.max_tokens} tokens from "
        f"`{PROMPT}`, same sampling settings, {args.seconds:g} s per row",
        "",
        "| answers | streams | tokens/s | x sample.py | completions | p50 latency ms | p50 first token ms "
        "| client CPU | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (stream, clients), r in results.items():
        lines.append(
            f"| {'SSE stream' if stream else 'JSON'} | {clients} | {r['tokens_per_s']:.0f} | "
            f"{r['tokens_per_s'] / base:.1f}x | {r['completions']} | {r['p50_ms']:.0f} | "
            f"{r['ttft_p50_ms']:.0f} | {r['client_cpu_pct']:.0f}% | {r['errors']} |"
        )
    notes = args.out.read_text().partition("\n## Notes")[1:] if args.out.is_file() else ("", "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n" + "".join(notes))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
