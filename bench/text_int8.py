"""What `runtime: onnx-int8` (the decode step's weights in 8 bits) costs in quality, and buys in speed.

    .venv/bin/python bench/text_int8.py RUN DATASET [--chars 20000] [--tokens 3000] [--repeats 5]

RUN is a trained gpt run (`genforge train --model gpt ...`), DATASET its text dataset. Each runtime
(torch, onnx, onnx-int8) reads the first `--chars` characters of the val split through its own
KV-cache decode step, one token at a time on one slot (a window of the model's context, as
sampling sees it), and the table gives the mean negative log-likelihood of each next token in
nats per character, its difference from torch's, the share of positions where the most likely
token differs from torch's, and the step's CPU time (one slot, `--tokens` steps, median of
`--repeats`, one thread).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import text_decode_speed  # bench/, beside this script: its one-slot step timer

RUNTIMES = ("torch", "onnx", "onnx-int8")


def read_through(decoder, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per position i >= 1: log p(ids[i] | ids[:i]) and the argmax token, through the step."""
    cache = decoder.new_cache(1)
    logits = decoder.prefill(cache, 0, ids[:1])
    logp, top = [], []
    with torch.inference_mode():
        for i in range(1, len(ids)):
            row = torch.log_softmax(logits.reshape(-1).double(), -1)
            logp.append(float(row[ids[i]]))
            top.append(int(row.argmax()))
            if i < len(ids) - 1:
                logits = decoder.decode(cache, [0], [ids[i]])
    return np.array(logp), np.array(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("dataset")
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--tokens", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from genforge.data.canonical import open_dataset
    from genforge.models.pipeline import load_pipeline

    torch.set_num_threads(1)
    pipe = load_pipeline(args.run)
    text = open_dataset(args.dataset).split("val").text[: args.chars]
    ids = pipe.tokenizer.encode(text)
    decoders = {r: pipe.decoder(r) for r in RUNTIMES}
    results = {r: read_through(d, ids) for r, d in decoders.items()}
    text_decode_speed.clock = time.thread_time  # the step's CPU time: this machine is shared
    times: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    for _ in range(args.repeats):
        for r, d in decoders.items():
            times[r].append(text_decode_speed.decode_step_ms(d, args.tokens))
    ref_logp, ref_top = results["torch"]
    chars = len(text) - 1
    print(f"{args.run}: {len(ids) - 1:,} next-token predictions over the first {chars:,} val characters; "
          f"torch {torch.__version__}, one thread")  # fmt: skip
    print("| runtime | val nats/char | vs torch | top token differs | step ms (CPU, one slot) | x torch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = statistics.median(times["torch"])
    for r in RUNTIMES:
        logp, top = results[r]
        nats = -logp.sum() / chars
        ms = statistics.median(times[r])
        print(f"| {r} | {nats:.4f} | {nats - (-ref_logp.sum() / chars):+.4f} | {np.mean(top != ref_top):.4f} "
              f"| {ms:.3f} | {base / ms:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
