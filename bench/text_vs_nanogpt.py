"""genforge's gpt against nanoGPT on tiny Shakespeare, side by side on the same cores and data.

    .venv/bin/python bench/text_vs_nanogpt.py [--threads 2] [--scenario-seconds 300] [--keep DIR] [--compile]

1. nanoGPT (`../shared/anchors/nanogpt`, copied to a temporary directory as
   `../shared/anchors/README.md` says) prepares its char data and trains its README's CPU recipe
   (4 layers, 4 heads, 128 wide, context 64, batch 12, 2,000 iterations); its whole process is
   timed, its training tokens/s read from its per-iteration log.
2. genforge, as a user runs it: `genforge data ingest input.txt --split-by position --tokenizer
   char`, then `genforge train --model gpt` with the shakespeare recipe (`RECIPE` below, the
   defaults the scenario uses) and `--max-time` = nanoGPT's wall time.
3. Both final models are scored the same way on exactly nanoGPT's val text (the last 10% of the
   characters): every character predicted once, in non-overlapping windows of each model's
   context (the average nanoGPT's estimate_loss takes over random windows), nats per character
   (`genforge.evaluate.text.metrics.split_nll`). nanoGPT's own printed estimate is shown too.
4. Training tokens/s at nanoGPT's model size: the gpt at 4/4/128, context 64, through the real
   trainer (`genforge train`), at nanoGPT's batch of 12 and at the recipe's batch (the median of
   the logged 50-step intervals; the recipe's own run when it is that size and batch), against
   the median of nanoGPT's logged iteration times.
5. Sampling tokens/s: nanoGPT's `sample.py` (run once, as shipped, on its checkpoint; its
   generation loop `model.generate`, which recomputes the whole context per token, timed alone
   on 500 tokens) against genforge's KV-cache sampler (`TextPipeline.complete`) on the same
   architecture, one stream and 16 streams; also at the size of nanoGPT's own shakespeare_char
   model (6 layers, 384 wide, context 256; fresh weights: speed does not depend on them).
6. With `--scenario-seconds S`: the same loss comparison at that budget (nanoGPT's recipe with
   its iterations scaled to S seconds at its measured speed).

`--compile` trains genforge with `train.compile=true` (train/compile.py): its compile time counts in
the equal-wall-time budget; the tokens/s of step 4 leave the first logged interval out, as always.

Prints a markdown table (machine, commands, numbers) and writes it to --report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import cpu_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NANOGPT = SHARED / "anchors" / "nanogpt"
INPUT = SHARED / "data" / "tinyshakespeare" / "input.txt"
PYTHON = sys.executable

NANO_SIZE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12}
NANO_RECIPE = [
    "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1",
    "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0",
]  # fmt: skip
# the shakespeare scenario's recipe: the gpt's defaults (models/text/gpt.py GPTConfig: nanoGPT's
# sizes, RoPE, lr 3e-3 with 100 warmup steps and cosine decay to 0.1x over the budget, gradient
# clipping at 1) with nanoGPT's batch of 12 windows, no EMA, bf16 where the CPU computes it
RECIPE_MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
RECIPE_TRAIN = {"batch_size": 12, "precision": "auto", "ema": False}
# nanoGPT's own char-level Shakespeare model (config/train_shakespeare_char.py): a second point for
# sampling speed, where recomputing the context per token costs more
BABY_GPT = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256}
SAMPLE_TOKENS, TEMPERATURE, TOP_K = 500, 0.8, 200  # sample.py's defaults (max_new_tokens 500)


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores (nproc), torch {torch.__version__}"


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None, log: Path | None = None) -> float:
    """Run `cmd`, return its wall time; its output goes to `log` (shown when it fails)."""
    t0 = time.perf_counter()
    with open(log or os.devnull, "w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = Path(log).read_text()[-3000:] if log else ""
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return wall


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONHASHSEED": "0"}


# --- nanoGPT ----------------------------------------------------------------------------------


def setup_nanogpt(work: Path, threads: int) -> Path:
    nano = work / "nanogpt"
    shutil.copytree(NANOGPT, nano)
    shutil.copy(INPUT, nano / "data" / "shakespeare_char" / "input.txt")
    run([PYTHON, "data/shakespeare_char/prepare.py"], cwd=nano, env=thread_env(threads))
    return nano


def train_nanogpt(nano: Path, iters: int, out: str, threads: int) -> dict:
    log = nano / f"{out}.log"
    # its checkpoint is written at evaluations (every 250 iterations): always, so the one scored is
    # the final model (iterations are a multiple of the interval)
    every = min(250, iters)
    args = [*NANO_RECIPE, f"--max_iters={iters}", f"--lr_decay_iters={iters}", f"--out_dir={out}",
            f"--eval_interval={every}", "--always_save_checkpoint=True"]  # fmt: skip
    wall = run([PYTHON, "train.py", *args], cwd=nano, env=thread_env(threads), log=log)
    text = log.read_text()
    times = [float(t) for t in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", text, re.M)]
    evals = re.findall(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", text, re.M)
    steady = sorted(times[10:])  # the first iterations warm up; eval iterations are slow outliers
    per_iter = statistics.median(steady) / 1000
    tokens = NANO_SIZE["batch_size"] * NANO_SIZE["block_size"]
    return {"wall_s": wall, "iters": iters, "s_per_iter": per_iter, "tokens_per_s": tokens / per_iter,
            "own_val_loss": float(evals[-1][2]), "ckpt": nano / out / "ckpt.pt"}  # fmt: skip


def load_nanogpt(nano: Path, ckpt: Path | None = None, **config) -> torch.nn.Module:
    sys.path.insert(0, str(nano))
    try:
        from model import GPT, GPTConfig  # nanoGPT's model.py, from the temporary copy
    finally:
        sys.path.remove(str(nano))
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # tensors and plain values only
        model = GPT(GPTConfig(**state["model_args"]))
        model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state["model"].items()})
    else:
        model = GPT(GPTConfig(**config))
    return model.eval()


def nanogpt_nll(model: torch.nn.Module):
    def nll(batch: torch.Tensor) -> torch.Tensor:
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        logits, _ = model(x, y)  # with targets nanoGPT returns the logits of every position
        return F.cross_entropy(logits.flatten(0, 1).float(), y.reshape(-1), reduction="none").view(y.shape)

    return nll


# --- genforge ---------------------------------------------------------------------------------


def genforge(*args: str, threads: int, log: Path) -> float:
    return run([PYTHON, "-m", "genforge", *map(str, args)], env=thread_env(threads), log=log)


def sets(model: dict, train: dict | None = None) -> list[str]:
    items = [f"model.{k}={v}" for k, v in model.items()] + [f"train.{k}={v}" for k, v in (train or {}).items()]
    return [x for item in items for x in ("--set", item)]


def train_genforge(data: Path, out: Path, threads: int, *extra: str) -> float:
    quiet = sets({}, {"progress": "lines", "tensorboard": False, "sample_every": 0, "log_every": 50})
    return genforge("train", "--model", "gpt", "--data", data, "--out", out, "--threads", threads, *quiet, *extra,
                    threads=threads, log=out.parent / f"{out.name}.log")  # fmt: skip


def trained_tokens_per_s(run_dir: Path) -> float:
    block = json.loads((run_dir / "model.json").read_text())["config"]["block_size"]
    rates = [r["images_per_s"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "images_per_s" in r]  # fmt: skip
    return statistics.median(rates[1:] or rates) * block  # the first interval includes warm-up


def score(nll, text: str, encode, block: int) -> float:
    """nats per character of `text` under `nll`, every character predicted once."""
    from genforge.evaluate.text.metrics import split_nll

    tokens = np.asarray(encode(text), dtype=np.int64)
    total, scored = split_nll(nll, tokens, block)
    return total / scored * len(tokens) / len(text)


# --- sampling ---------------------------------------------------------------------------------


def nanogpt_sampling_rate(model: torch.nn.Module) -> float:
    """sample.py's generation call, timed alone: tokens/s of one stream, the better of one thread
    and the configured threads (genforge's sampler runs its decode steps on one thread)."""
    x = torch.zeros((1, 1), dtype=torch.long)
    threads, rates = torch.get_num_threads(), []
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        with torch.no_grad():
            model.generate(x, 20, temperature=TEMPERATURE, top_k=TOP_K)  # warm-up
            t0 = time.perf_counter()
            model.generate(x, SAMPLE_TOKENS, temperature=TEMPERATURE, top_k=TOP_K)
            rates.append(SAMPLE_TOKENS / (time.perf_counter() - t0))
    torch.set_num_threads(threads)
    return max(rates)


def genforge_sampling_rate(pipe, streams: int) -> float:
    pipe.complete([""], n=streams, max_tokens=20, temperature=TEMPERATURE, top_k=TOP_K)  # warm-up
    t0 = time.perf_counter()
    out = pipe.complete([""], n=streams, max_tokens=SAMPLE_TOKENS, temperature=TEMPERATURE, top_k=TOP_K, seed=1)
    return sum(c.n_tokens for c in out) / (time.perf_counter() - t0)


def random_gpt_pipeline(tokenizer, **config):
    """A gpt of the given sizes with fresh weights (sampling speed does not depend on them)."""
    from genforge.models.text.gpt import GPT
    from genforge.models.text.pipeline import TextPipeline

    model = GPT(GPT.default_config(tokenizer.vocab_size, **config)).eval()
    return TextPipeline(model=model, info={"model": "gpt"}, path=Path("."), tokenizer=tokenizer)


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for both (default: all)")
    ap.add_argument("--iters", type=int, default=2000, help="nanoGPT iterations (its README: 2000)")
    ap.add_argument("--speed-tokens", type=int, default=300_000, help="tokens per training-speed run")
    ap.add_argument("--scenario-seconds", type=float, default=0, help="also compare at this training budget")
    ap.add_argument("--keep", type=Path, help="work in this directory (emptied first) and keep it")
    ap.add_argument("--report", type=Path, default=REPO / "bench" / "results" / "text_vs_nanogpt.md")
    ap.add_argument("--compile", action="store_true", help="genforge trains with train.compile=true")
    args = ap.parse_args()
    if args.compile:
        RECIPE_TRAIN["compile"] = True
    if not (NANOGPT / "train.py").is_file() or not INPUT.is_file():
        sys.exit(f"needs {NANOGPT} and {INPUT} (see ../shared/anchors/README.md)")
    torch.set_num_threads(args.threads)
    work = args.keep or Path(tempfile.mkdtemp(prefix="text-vs-nanogpt-"))
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    text = INPUT.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)  # nanoGPT's prepare.py: the first 90% train, the rest val
    val_text = text[cut:]
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []
    th = args.threads

    print(f"[1/6] nanoGPT: CPU recipe, {args.iters} iterations", flush=True)
    nano = setup_nanogpt(work, th)
    ng = train_nanogpt(nano, args.iters, "out-cpu", th)
    ng_model = load_nanogpt(nano, ng["ckpt"])
    meta_chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(meta_chars)}  # prepare.py's vocabulary (the whole text)
    ng_val = score(nanogpt_nll(ng_model), val_text, lambda s: [stoi[c] for c in s], NANO_SIZE["block_size"])

    print("[2/6] genforge: ingest, train the recipe for nanoGPT's wall time", flush=True)
    data = work / "data"
    ingest_s = genforge("data", "ingest", INPUT, "--out", data, "--split-by", "position", "--tokenizer", "char",
                        threads=th, log=work / "ingest.log")  # fmt: skip
    from genforge.data.canonical import open_dataset
    from genforge.models.pipeline import load_pipeline

    ds = open_dataset(data)
    same_split = ds.split("train").text == text[:cut] and ds.split("val").text == val_text
    notes.append(f"genforge's position split equals nanoGPT's (train = first {cut:,} characters, val = the "
                 f"rest): {same_split}")  # fmt: skip
    unknown = sorted(set(val_text) - set(ds.split("train").text))
    notes.append(f"val characters outside genforge's train vocabulary: {len(unknown)} {unknown}")
    recipe = [*sets(RECIPE_MODEL, {k: v for k, v in RECIPE_TRAIN.items() if k != "batch_size"}),
              "-b", str(RECIPE_TRAIN["batch_size"])]  # fmt: skip
    budget = f"{ng['wall_s']:.1f}s"
    gf_wall = train_genforge(data, work / "run", th, "--max-time", budget, *recipe)
    pipe = load_pipeline(work / "run")
    gf_val = score(pipe.model.nll, val_text, pipe.tokenizer.encode, pipe.block_size)
    gf_info = json.loads((work / "run" / "model.json").read_text())

    print("[3/6] training tokens/s at nanoGPT's model size", flush=True)
    size = {k: v for k, v in NANO_SIZE.items() if k != "batch_size"}
    small = {**RECIPE_MODEL, **size}
    speed, speed_runs = {}, {}
    for batch in sorted({NANO_SIZE["batch_size"], RECIPE_TRAIN["batch_size"]}):
        if small == RECIPE_MODEL and batch == RECIPE_TRAIN["batch_size"]:
            out = work / "run"  # the recipe is nanoGPT's size: its own run measured it, over minutes
        else:
            out = work / f"speed-b{batch}"
            steps = max(50, args.speed_tokens // (batch * NANO_SIZE["block_size"]))
            speed_train = {"ema": False, **({"compile": True} if args.compile else {})}
            train_genforge(data, out, th, "--steps", steps, "-b", batch, *sets(small, speed_train))
        speed[batch], speed_runs[batch] = trained_tokens_per_s(out), out

    print("[4/6] sampling tokens/s", flush=True)
    run([PYTHON, "sample.py", "--out_dir=out-cpu", "--device=cpu", "--num_samples=1", f"--max_new_tokens={SAMPLE_TOKENS}",
         "--compile=False"], cwd=nano, env=thread_env(th), log=nano / "sample.log")  # fmt: skip
    ng_rate = nanogpt_sampling_rate(ng_model)
    small_pipe = load_pipeline(speed_runs[NANO_SIZE["batch_size"]])
    gf_rate = {s: genforge_sampling_rate(small_pipe, s) for s in (1, 16)}
    ng_big = load_nanogpt(nano, None, vocab_size=len(meta_chars), dropout=0.0, bias=False, **BABY_GPT)
    ng_big_rate = nanogpt_sampling_rate(ng_big)
    big_pipe = random_gpt_pipeline(pipe.tokenizer, **BABY_GPT)
    big_rate = {s: genforge_sampling_rate(big_pipe, s) for s in (1, 16)}

    scen = None
    if args.scenario_seconds:
        print(f"[5/6] both at {args.scenario_seconds:g} s", flush=True)
        iters = max(250, round(args.scenario_seconds / ng["s_per_iter"] / 250) * 250)
        ng_s = train_nanogpt(nano, iters, "out-scenario", th)
        ng_s_val = score(nanogpt_nll(load_nanogpt(nano, ng_s["ckpt"])), val_text, lambda s: [stoi[c] for c in s], 64)
        gf_s_wall = train_genforge(data, work / "run-scenario", th, "--max-time", f"{ng_s['wall_s']:.1f}s", *recipe)
        p2 = load_pipeline(work / "run-scenario")
        gf_s_val = score(p2.model.nll, val_text, p2.tokenizer.encode, p2.block_size)
        scen = (iters, ng_s, ng_s_val, gf_s_wall, gf_s_val, json.loads((work / "run-scenario" / "model.json").read_text()))

    print("[6/6] report", flush=True)
    rows += [
        ("val loss on nanoGPT's val text, nats/char (same scorer)", f"{ng_val:.4f}", f"{gf_val:.4f}"),
        ("nanoGPT's own estimate (eval_iters=20)", f"{ng['own_val_loss']:.4f}", ""),
        ("difference (goal: genforge >= 0.10 lower)", "", f"{ng_val - gf_val:+.4f}"),
        ("training process wall time, s", f"{ng['wall_s']:.1f}", f"{gf_wall:.1f} (--max-time {budget})"),
        ("training steps", f"{ng['iters']}", f"{gf_info['step']}"),
        ("training tokens seen", f"{ng['iters'] * 768:,}", f"{gf_info['images'] * RECIPE_MODEL['block_size']:,}"),
        ("training tokens/s at nanoGPT's size (4/4/128, ctx 64), batch 12", f"{ng['tokens_per_s']:,.0f}",
         f"{speed[12]:,.0f} ({speed[12] / ng['tokens_per_s']:.2f}x; goal 1.5x)"),
        *([(f"same, genforge at the recipe's batch {RECIPE_TRAIN['batch_size']}", "",
             f"{speed[RECIPE_TRAIN['batch_size']]:,.0f} ({speed[RECIPE_TRAIN['batch_size']] / ng['tokens_per_s']:.2f}x)")]
          if RECIPE_TRAIN["batch_size"] != NANO_SIZE["batch_size"] else []),
        ("sampling tokens/s at nanoGPT's size, 1 stream (goal 5x)", f"{ng_rate:,.0f}",
         f"{gf_rate[1]:,.0f} ({gf_rate[1] / ng_rate:.1f}x)"),
        ("sampling tokens/s at nanoGPT's size, 16 streams", "", f"{gf_rate[16]:,.0f} ({gf_rate[16] / ng_rate:.1f}x)"),
        ("sampling tokens/s at nanoGPT's shakespeare_char size (6/6/384, ctx 256), 1 stream", f"{ng_big_rate:,.0f}",
         f"{big_rate[1]:,.0f} ({big_rate[1] / ng_big_rate:.1f}x)"),
        ("same, 16 streams", "", f"{big_rate[16]:,.0f} ({big_rate[16] / ng_big_rate:.1f}x)"),
    ]  # fmt: skip
    if scen:
        iters, ng_s, ng_s_val, gf_s_wall, gf_s_val, info = scen
        rows += [
            (f"at {args.scenario_seconds:g} s: val loss, nats/char", f"{ng_s_val:.4f} ({iters} iters, {ng_s['wall_s']:.0f} s)",
             f"{gf_s_val:.4f} ({info['step']} steps, {gf_s_wall:.0f} s); {ng_s_val - gf_s_val:+.4f}"),
        ]  # fmt: skip
    recipe_text = " ".join(recipe)
    lines = [
        "# genforge gpt vs nanoGPT on tiny Shakespeare (char level)",
        "",
        f"Machine: {machine()}; {th} threads each. Command: `.venv/bin/python bench/text_vs_nanogpt.py "
        f"--threads {th}{f' --scenario-seconds {args.scenario_seconds:g}' if args.scenario_seconds else ''}`",
        "",
        f"nanoGPT: `python train.py {' '.join(NANO_RECIPE)} --max_iters={args.iters} --lr_decay_iters={args.iters}`",
        f"genforge: `genforge data ingest input.txt --split-by position --tokenizer char` ({ingest_s:.1f} s), then "
        f"`genforge train --model gpt --max-time {budget} {recipe_text}`",
        "",
        "| measure | nanoGPT | genforge |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    report = "\n".join(lines)
    print(report)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if not math.isfinite(gf_val):
        sys.exit("genforge's val loss is not finite")


if __name__ == "__main__":
    main()
