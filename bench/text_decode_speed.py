"""Sampling speed of genforge's gpt beside nanoGPT's `generate`, side by side in one process.

    .venv/bin/python bench/text_decode_speed.py [--tokens 500] [--repeats 5] [--threads 1 2]
                                                [--streams 1 16] [--runtimes torch onnx]
                                                [--cpu-time] [--profile]

Both models have nanoGPT's CPU-recipe size (4 layers, 4 heads, 128 wide, context 64, the 65
characters of tinyshakespeare) and fresh weights (speed does not depend on them). nanoGPT's
`model.py` (../shared/anchors/nanogpt, copied to a temporary directory as
../shared/anchors/README.md says) is imported and its `generate` (sample.py's loop: the whole
cropped context recomputed for every token) runs at sample.py's defaults, temperature 0.8 and
top_k 200, from one token; genforge's `TextPipeline.complete` runs the same settings from an empty
prompt (one line break, also one token). For each thread count the two alternate `--repeats`
times and the medians are compared, so load from other processes hits both alike; on a busy
machine `--cpu-time` times with this thread's CPU time instead of the wall clock (both run on
one thread: genforge's decode loop always does, nanoGPT's at `--threads 1`), which leaves out the
time another process holds the core.

genforge runs with each decode runtime of `--runtimes` (`TextPipeline.complete(runtime=...)`:
torch, the model's own step; onnx, the step exported to ONNX Runtime, models/text/onnx_decode.py;
onnx-int8, that step with its weights in 8 bits),
alternating with nanoGPT and each other within every repeat. Its step is also timed in parts:
`decode` alone on one slot (fixed token ids, no sampling; inside `small_ops` as the pipeline's loop
runs it) for each runtime, and `next_tokens` alone on one row of logits. `--profile` prints
torch.profiler's table of the operations of 100 one-slot torch decode steps.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
NANOGPT = REPO.parent / "shared" / "anchors" / "nanogpt"
SIZE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
VOCAB = 65  # nanoGPT's vocabulary: the characters of tinyshakespeare
SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TEMPERATURE, TOP_K = 0.8, 200  # sample.py's defaults
clock = time.perf_counter  # or time.thread_time (--cpu-time)


def nanogpt_model(work: Path) -> torch.nn.Module:
    shutil.copy(NANOGPT / "model.py", work / "model.py")
    sys.path.insert(0, str(work))
    try:
        from model import GPT, GPTConfig  # nanoGPT's model.py, from the temporary copy
    finally:
        sys.path.remove(str(work))
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, dropout=0.0, bias=False, **SIZE)).eval()


def genforge_pipeline():
    from genforge.data.text.tokenizer import CharTokenizer
    from genforge.models.text.gpt import GPT
    from genforge.models.text.pipeline import TextPipeline

    tokenizer = CharTokenizer(SHAKESPEARE_CHARS)  # a real run adds <unk>: 66 ids
    torch.manual_seed(0)
    model = GPT(GPT.default_config(tokenizer.vocab_size, **SIZE)).eval()
    return TextPipeline(model=model, info={"model": "gpt"}, path=Path("."), tokenizer=tokenizer)


def nanogpt_rate(model: torch.nn.Module, tokens: int) -> float:
    x = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        t0 = clock()
        model.generate(x, tokens, temperature=TEMPERATURE, top_k=TOP_K)
        return tokens / (clock() - t0)


def genforge_rate(pipe, tokens: int, streams: int, runtime: str = "torch") -> float:
    t0 = clock()
    out = pipe.complete([""], n=streams, max_tokens=tokens, temperature=TEMPERATURE, top_k=TOP_K, seed=1,
                        runtime=runtime)  # fmt: skip
    return sum(c.n_tokens for c in out) / (clock() - t0)


def decode_step_ms(decoder, tokens: int) -> float:
    """Milliseconds per one-slot `decode` (fixed ids: the step alone), `decoder` the model (torch)
    or its ONNX Runtime step (`TextPipeline.decoder("onnx")`)."""
    from genforge.models.text.gpt import small_ops

    cache = decoder.new_cache(1)
    decoder.prefill(cache, 0, [0])
    with small_ops():
        t0 = clock()
        for step in range(tokens):
            decoder.decode(cache, [0], [step % VOCAB])
        return (clock() - t0) / tokens * 1000


def sampler_ms(tokens: int) -> float:
    """Milliseconds per one-row `next_tokens` at sample.py's settings."""
    from genforge.models.text.sampling import SamplingParams, next_tokens, sequence_generator

    logits = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(0))
    params, gen = [SamplingParams(TEMPERATURE, TOP_K)], [sequence_generator(0, 0)]
    t0 = clock()
    for _ in range(tokens):
        next_tokens(logits, params, gen).tolist()
    return (clock() - t0) / tokens * 1000


def profile(model) -> None:
    from torch.profiler import ProfilerActivity, profile

    cache = model.new_cache(1)
    model.prefill(cache, 0, [0])
    for step in range(20):
        model.decode(cache, [0], [step])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(100):
            model.decode(cache, [0], [step % VOCAB])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=500, help="tokens per sample (sample.py's max_new_tokens)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--streams", type=int, nargs="+", default=[1], help="genforge streams per completion call"
    )
    ap.add_argument(
        "--runtimes", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx", "onnx-int8"],
        help="genforge decode runtimes",
    )
    ap.add_argument("--profile", action="store_true", help="print the operations of 100 decode steps")
    ap.add_argument("--cpu-time", action="store_true", help="time with the thread's CPU time (busy machines)")
    args = ap.parse_args()
    if args.cpu_time:
        global clock
        clock = time.thread_time
    if not (NANOGPT / "model.py").is_file():
        sys.exit(f"needs {NANOGPT / 'model.py'} (see ../shared/anchors/README.md)")
    with tempfile.TemporaryDirectory(prefix="decode-speed-") as tmp:
        nano = nanogpt_model(Path(tmp))
    pipe = genforge_pipeline()
    print(f"torch {torch.__version__}; {args.tokens} tokens per sample, median of {args.repeats}")
    if args.profile:
        torch.set_num_threads(1)
        profile(pipe.model)
    decoders = {runtime: pipe.decoder(runtime) for runtime in args.runtimes}  # onnx: exported here
    for runtime, decoder in decoders.items():
        if runtime != "torch" and decoder is pipe.model:
            sys.exit(f"the {runtime} runtime fell back to torch (see the warning above)")
    print("| threads | nanoGPT tok/s | genforge streams | runtime | genforge tok/s | x nanoGPT | x torch "
          "| decode ms | sampler ms |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for threads in args.threads:
        torch.set_num_threads(threads)
        nanogpt_rate(nano, 20)  # warm-up
        runs = [(streams, runtime) for streams in args.streams for runtime in args.runtimes]
        for streams, runtime in runs:
            genforge_rate(pipe, 20, streams, runtime)
        ng, gf = [], {run: [] for run in runs}
        steps: dict[str, list[float]] = {runtime: [] for runtime in args.runtimes}
        for _ in range(args.repeats):
            ng.append(nanogpt_rate(nano, args.tokens))
            for run in runs:
                gf[run].append(genforge_rate(pipe, args.tokens, *run))
            for runtime, decoder in decoders.items():
                steps[runtime].append(decode_step_ms(decoder, args.tokens))
        sampling = statistics.median(sampler_ms(args.tokens) for _ in range(args.repeats))
        ng_rate = statistics.median(ng)
        for streams, runtime in runs:
            gf_rate = statistics.median(gf[streams, runtime])
            base = statistics.median(gf[streams, "torch"]) if "torch" in args.runtimes else float("nan")
            print(f"| {threads} | {ng_rate:,.0f} | {streams} | {runtime} | {gf_rate:,.0f} | {gf_rate / ng_rate:.2f}x "
                  f"| {gf_rate / base:.2f}x | {statistics.median(steps[runtime]):.3f} | {sampling:.3f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
