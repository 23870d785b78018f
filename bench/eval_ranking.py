"""Does `genforge eval` rank what it should? Held-out real data > a trained model > an undertrained
one > noise, on every metric, and the same numbers twice.

    .venv/bin/python bench/eval_ranking.py [--train-time 5m] [--under-steps 30] [--n 2000] [--work DIR]

Data: the MNIST test split (../shared/data/mnist-test), shuffled with seed 0 into train 6,000 /
val 2,000 / test 2,000 and ingested with `genforge data ingest`; the reference is val, the
"held-out real" candidate is the test split. Models are trained with `genforge train --model MODEL` (default dcgan)
in subprocesses (skipped, and said so, if training fails). A blurred copy of the held-out images
is an extra candidate between real data and noise. Writes its section of bench/results/evaluate.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from eval_speed import REPO, machine, mnist, write_section

GENFORGE = [sys.executable, "-m", "genforge"]
# diagnostics rather than quality scores: not part of the ranking
NOT_RANKED = {"fid_gap", "conditional_accuracy"}


def run(cmd: list[str], log: list[str]) -> tuple[bool, float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    shown = " ".join(c if not c.startswith("/") else Path(c).name for c in cmd[3:])
    log.append(f"- `genforge {shown}` -> exit {proc.returncode} in {seconds:.0f} s")
    return proc.returncode == 0, seconds, proc.stdout + proc.stderr


def build_dataset(work: Path, log: list[str]) -> Path:
    ds = work / "ds"
    if (ds / "manifest.json").is_file():
        return ds
    x, y = mnist()
    order = np.random.default_rng(0).permutation(len(x))
    parts = {"train": order[:6000], "val": order[6000:8000], "test": order[8000:]}
    arrays = {}
    for name, idx in parts.items():
        arrays[f"x_{name}"], arrays[f"y_{name}"] = x[idx][..., 0], y[idx]
    np.savez(work / "mnist-split.npz", **arrays)
    ok, _, out = run([*GENFORGE, "data", "ingest", str(work / "mnist-split.npz"), "--out", str(ds)], log)
    if not ok:
        sys.exit(f"data ingest failed:\n{out}")
    return ds


def candidates(work: Path, ds: Path, args: argparse.Namespace, log: list[str]) -> dict[str, Path]:
    from genforge.data.canonical import open_dataset

    held = np.asarray(open_dataset(ds).split("test").images)
    out: dict[str, Path] = {}
    np.savez(work / "heldout.npz", images=held)
    out["held-out real"] = work / "heldout.npz"
    model_flags = ["--model", args.model] + (["--conditional"] if args.conditional else [])
    for name, flags in ((f"trained {args.model}", ["--max-time", args.train_time]),
                        (f"undertrained {args.model}", ["--steps", str(args.under_steps)])):  # fmt: skip
        run_dir = work / name.replace(" ", "-")
        if not (run_dir / "model.json").is_file():
            ok, _, text = run([*GENFORGE, "train", *model_flags, "--data", str(ds), "--out", str(run_dir),
                               "--seed", "0", *flags], log)  # fmt: skip
            if not ok:
                log.append(
                    f"  - training failed, {name} left out: `{text.strip().splitlines()[-1] if text.strip() else ''}`"
                )
                continue
        out[name] = run_dir
    # a 5x5 box blur of the held-out images: real content, wrong texture
    pad = np.pad(held.astype(np.float32), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    blurred = sum(pad[:, i : i + 28, j : j + 28] for i in range(5) for j in range(5)) / 25
    np.savez(work / "blurred.npz", images=np.round(blurred).astype(np.uint8))
    out["blurred real"] = work / "blurred.npz"
    noise = np.random.default_rng(0).integers(0, 256, held.shape, dtype=np.uint8)
    np.savez(work / "noise.npz", images=noise)
    out["uniform noise"] = work / "noise.npz"
    return out


def evaluate_all(cands: dict[str, Path], ds: Path, work: Path, n: int, log: list[str]) -> tuple[dict, dict]:
    results, repeat_same = {}, {}
    for name, target in cands.items():
        values = []
        for attempt in (1, 2):
            out = work / "eval" / f"{name.replace(' ', '-')}-{attempt}.json"
            ok, _, text = run([*GENFORGE, "eval", str(target), "--ref", str(ds), "--n", str(n), "--seed", "0",
                               "--out", str(out)], log)  # fmt: skip
            if not ok:
                sys.exit(f"eval of {name} failed:\n{text}")
            values.append(json.loads(out.read_text()))
        results[name] = values[0]
        repeat_same[name] = values[0]["values"] == values[1]["values"]
    return results, repeat_same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-time", default="5m")
    parser.add_argument("--under-steps", type=int, default=30)
    parser.add_argument("--model", default="dcgan", help="model family to train as the trained/undertrained candidates")
    parser.add_argument("--conditional", action="store_true", help="train the model class-conditional")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/genforge-eval-ranking"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    ds = build_dataset(args.work, log)
    ok, _, text = run([*GENFORGE, "evaluator", "train", str(ds)], log)
    acc_line = next((ln for ln in text.splitlines() if "held-out accuracy" in ln), "held-out accuracy: n/a")
    cands = candidates(args.work, ds, args, log)
    results, same = evaluate_all(cands, ds, args.work, args.n, log)
    names = list(results)
    order = [
        c for c in ("held-out real", f"trained {args.model}", f"undertrained {args.model}", "uniform noise")
        if c in results
    ]
    metrics = [
        m
        for m in results[names[0]]["metrics"]
        if m not in NOT_RANKED and all(m in r["metrics"] for r in results.values())
    ]
    lines = ["| metric | better | " + " | ".join(names) + " | ranked as expected |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]  # fmt: skip
    all_ok = True
    for m in metrics:
        better = results[names[0]]["metrics"][m]["better"]
        vals = [results[c]["values"][m] for c in order]
        strict = all((a < b) if better == "lower" else (a > b) for a, b in zip(vals, vals[1:], strict=False))
        weak = all((a <= b) if better == "lower" else (a >= b) for a, b in zip(vals, vals[1:], strict=False))
        verdict = "yes" if strict else ("ties (equal values, e.g. at the metric's bound)" if weak else "NO")
        all_ok &= strict
        lines.append(
            f"| {m} | {better} | "
            + " | ".join(f"{results[c]['values'][m]:.4g}" for c in names)
            + f" | {verdict} |"
        )
    mem = [f"| {c} | {results[c]['memorisation']['features']['copy_rate']:.3f} | "
           f"{results[c]['memorisation']['pixels']['copy_rate']:.3f} |" for c in names if "memorisation" in results[c]]  # fmt: skip
    steps = {
        c: results[c]["target"].get("step") for c in names if results[c]["target"].get("step") is not None
    }
    cmd = " ".join(["python", "bench/eval_ranking.py", *sys.argv[1:]])
    body = "\n".join([
        "## Ranking (bench/eval_ranking.py)", "",
        f"Command: `{cmd}`  ", f"Date: {dt.date.today()}  ", f"Machine: {machine()}", "",
        f"Reference: val split (2,000 images) of MNIST-test shuffled into 6,000/2,000/2,000; n = {args.n} samples per "
        f"candidate; features: classifier evaluator ({acc_line.strip()}). Expected order: "
        + " > ".join(order) + "; blurred real is shown but not part of the order.", "",
        *lines, "",
        "Training steps reached: " + ", ".join(f"{c}: {s}" for c, s in steps.items()) + ".", "",
        f"Every ranked metric strictly in the expected order: {'yes' if all_ok else 'NO'}. Same numbers on a second run: "
        + ", ".join(f"{c}: {'yes' if s else 'NO'}" for c, s in same.items()) + ".", "",
        "fid_gap and conditional_accuracy are diagnostics (and the latter needs labelled samples), not ranked.", "",
        "| candidate | copy rate (features) | copy rate (pixels) |", "| --- | --- | --- |", *mem, "",
        "Steps run:", *log,
    ])  # fmt: skip
    write_section("eval_ranking", body)
    print(body)


if __name__ == "__main__":
    main()
