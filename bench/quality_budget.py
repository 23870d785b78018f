"""Quality at a fixed training budget, per model family, on the MNIST test split (and CIFAR-10).

    .venv/bin/python bench/quality_budget.py                       # MNIST, every family, 5 minutes each
    .venv/bin/python bench/quality_budget.py --cifar --skip-mnist  # CIFAR-10, 60 s each

Everything goes through the `genforge` command line in subprocesses (ingest, train, eval), as a
user would run it; only sampling is done in-process (`models.pipeline.load_pipeline`) so that its
speed is timed without interpreter start-up. Per family: train for `--budget` wall time, generate
`--n` images from the EMA weights (labels cycling through the classes for conditional models, in
chunks of 100 with seed + chunk index), score them with `genforge eval` against the val split, and
with the evaluator's mean max-softmax ("confidence", metrics.json's `classifier_confidence`). The real-data control is the train split itself scored the same way
(same extractor, same reference, same n). The goal of the issue: the best family reaches FID <=
1.5x the control's, confidence >= 0.9 and coverage >= 0.8.

Writes its sections of `--out` (default bench/results/quality.md; the MNIST and CIFAR sections are
replaced independently), the numbers as JSON beside it (quality.json) and the sample grids into
the folder named after it (quality/<model>-mnist.png, quality/<model>-cifar.png).

Run time with the defaults on 2 idle cores: about 60-70 minutes (9 x 5 minutes of training; the
rest is mostly ddpm sampling: 5,000 DDIM images, then 1,000 images each by DDIM and by the full
1,000-step DDPM chain). `--cifar` adds about 7 x 1.5 minutes. Needs the machine to itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import cpu_model, log_tail, markdown_table, run_logged

REPO = Path(__file__).resolve().parents[1]
GENFORGE = Path(sys.executable).parent / "genforge"
MNIST = REPO.parent / "shared" / "data" / "mnist-test"
CIFAR = REPO.parent / "shared" / "data" / "cifar10" / "cifar10-jpg.tar.gz"
DEFAULT_OUT = REPO / "bench" / "results" / "quality.md"
GOAL = {"fid_ratio": 1.5, "confidence": 0.9, "coverage": 0.8}
# generation chunk (seed + chunk index each): the ddpm U-Net samples slower per image on CPU in batches
# of 250-500 than of 20-100 (cache), and memory stays bounded
CHUNK = 100
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class Recipe:
    batch_size: int
    conditional: bool = False
    model: str = ""  # the genforge model name when the recipe's own name differs


# GANs and VAEs at the batch the article's recipes use; the U-Net is ~5x costlier per image
RECIPES = {
    "cgan": Recipe(128, conditional=True),
    "dcgan": Recipe(128),
    "wgan-gp": Recipe(64),  # five critic passes per step draw five batches
    "sngan": Recipe(128),
    "sngan-cond": Recipe(128, conditional=True, model="sngan"),  # projection D, conditional BN in G
    "cvae": Recipe(128, conditional=True),
    "vae": Recipe(128),
    "beta-vae": Recipe(128),
    "ddpm": Recipe(64, conditional=True),
}
DEFAULT_MODELS = "cgan,dcgan,wgan-gp,sngan,sngan-cond,cvae,vae,beta-vae,ddpm"


class StepFailed(Exception):
    """A genforge command failed; the message holds the command and the end of its log."""


# ---------------------------------------------------------------- running genforge


def genforge(args: list[str], log: Path, env: dict[str, str]) -> float:
    """Run `genforge ARGS`, output into `log`; seconds taken. StepFailed on a non-zero exit."""
    cmd = [str(GENFORGE), *args]
    rc, seconds = run_logged(cmd, log, env=env)
    if rc != 0:
        tail = "\n".join(log_tail(log, 15))
        raise StepFailed(f"`{shlex.join(cmd)}` exited {rc} (log {log}):\n{tail}")
    return seconds


def ingest(source: Path, out: Path, extra: list[str], log: Path, env: dict[str, str]) -> Path:
    """A canonical dataset from `source`; reused when `out` is already complete (it appears only then)."""
    if not (out / "manifest.json").is_file():
        genforge(["data", "ingest", str(source), "--out", str(out), *extra], log, env)
    return out


def mnist_source(work: Path) -> Path:
    """The MNIST test split under names without `t10k`.

    The IDX source takes the split from the file name, so `t10k-*` would all land in the test
    split and `--val-fraction` would have no train split to carve from; links named `mnist-*`
    make the 10,000 images train, which the ingest then splits 50/50 into train and val.
    """
    missing = [f for f in MNIST_FILES if not (MNIST / f).is_file()]
    if missing:
        sys.exit(
            f"MNIST test split not found: {MNIST} lacks {', '.join(missing)} (see shared/data/README.md)"
        )
    src = work / "mnist-src"
    src.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        link = src / name.replace("t10k", "mnist")
        if not link.exists():
            link.symlink_to(MNIST / name)
    return src


def train(model: str, data: Path, run: Path, budget: str, args: argparse.Namespace,
          log: Path, env: dict[str, str]) -> float:  # fmt: skip
    recipe = RECIPES[model]
    if args.reuse and (run / "model.json").is_file():
        return 0.0
    if run.exists():
        shutil.rmtree(run)
    cmd = ["train", "--model", recipe.model or model, "--data", str(data), "--out", str(run), "--max-time", budget,
           "--batch-size", str(recipe.batch_size), "--seed", str(args.seed), "--set", "train.progress=lines"]  # fmt: skip
    if recipe.conditional:
        cmd.append("--conditional")
    if args.precision:
        cmd += ["--precision", args.precision]
    return genforge(cmd, log, env)


def train_stats(run: Path) -> dict[str, Any]:
    """Steps, images seen, seconds and images/s of the run's last logged step."""
    last = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "step" in rec and "images" in rec:
            last = rec
    if last is None:
        raise StepFailed(f"{run / 'metrics.jsonl'}: no logged step")
    return {"steps": last["step"], "images_seen": last["images"], "train_s": last["time"],
            "train_images_per_s": last["images"] / last["time"] if last["time"] else None}  # fmt: skip


def copy_grid(run: Path, dest: Path) -> str:
    """Copy the run's last sample grid (fixed noise, EMA weights) to `dest`; its file name."""
    grids = sorted((run / "samples").glob("step-*.png"))
    if not grids:
        raise StepFailed(f"{run / 'samples'}: no sample grid")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grids[-1], dest)
    return dest.name


# ---------------------------------------------------------------- sampling and scoring


def generate(run: Path, n: int, seed: int, **options: Any) -> tuple[np.ndarray, np.ndarray | None, float]:
    """n uint8 images, their labels (conditional) and the seconds the sampling took (model loading excluded)."""
    from genforge.models.pipeline import load_pipeline

    pipe = load_pipeline(run)
    labels = pipe.class_labels(n) if pipe.conditional else None
    chunks = []
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        part = None if labels is None else labels[start:stop]
        chunks.append(pipe.generate(stop - start, seed=seed + i, labels=part, **options)[0])
    return np.concatenate(chunks), labels, time.perf_counter() - t0


def save_npz(path: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    from genforge.core.atomic import atomic_path

    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def evaluate(npz: Path, data: Path, n: int, args: argparse.Namespace, log: Path, env: dict[str, str],
             memorisation: bool = True) -> dict[str, Any]:  # fmt: skip
    out = npz.with_suffix(".metrics.json")
    cmd = ["eval", str(npz), "--ref", str(data), "--n", str(n), "--seed", str(args.seed), "--out", str(out)]
    if not memorisation:
        cmd.append("--no-memorisation")
    genforge(cmd, log, env)
    return json.loads(out.read_text())


@functools.cache
def extractor(data: str) -> Any:
    """The dataset's default evaluator, the one `genforge eval` uses (trained once, cached)."""
    from genforge.data.canonical import open_dataset
    from genforge.evaluate.extractors import build_extractor, default_extractor

    dataset = open_dataset(data)
    return build_extractor(default_extractor(dataset), dataset)


def score(images: np.ndarray, labels: np.ndarray | None, name: str, data: Path, args: argparse.Namespace,
          env: dict[str, str], memorisation: bool = True) -> dict[str, Any]:  # fmt: skip
    """genforge eval of the images as one flat record (confidence: metrics.json's classifier_confidence)."""
    npz = save_npz(args.work / "samples" / f"{name}.npz", images, labels)
    metrics = evaluate(
        npz, data, len(images), args, args.work / "logs" / f"eval-{name}.log", env, memorisation
    )
    conf = metrics["metrics"].get("classifier_confidence", {})  # absent without a class head
    rec = {"n": len(images), **metrics["values"], "confidence": conf.get("value"),
           "reference_confidence": conf.get("details", {}).get("reference_value"),
           "warnings": metrics["warnings"]}  # fmt: skip
    if "memorisation" in metrics:
        rec["copy_rate_features"] = metrics["memorisation"]["features"]["copy_rate"]
    return rec


# ---------------------------------------------------------------- the two benchmarks


def run_mnist(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    from genforge.data.canonical import open_dataset

    data = ingest(mnist_source(args.work), args.work / "mnist",
                  ["--val-fraction", "0.5", "--seed", "0", "--near-dup-distance", str(args.near_dup_distance)],
                  args.work / "logs" / "ingest-mnist.log", env)  # fmt: skip
    dataset = open_dataset(data)
    train_split = dataset.split("train")
    n = args.n or len(train_split.images)
    train_images = np.asarray(train_split.images)
    real = train_images[:n]
    print(f"MNIST: train {len(train_split.images)}, val {len(dataset.split('val').images)}; scoring n = {n}")
    train_labels = np.asarray(train_split.labels)
    control = score(real, train_labels[:n], "control-mnist", data, args, env, memorisation=False)
    # floors no trained model is likely to beat: n training images drawn at random with replacement
    # (what a model that memorised its training set and sampled it would produce), in the data's
    # class mix and in a uniform one (a conditional sampler that ignores class frequencies)
    rng = np.random.default_rng(args.seed)
    picks = {
        "memoriser": rng.choice(len(train_labels), n, replace=True),
        # shuffled: the classifier score averages over splits of the sample order, as Inception Score does
        "memoriser, uniform classes": rng.permutation(np.concatenate([
            rng.choice(np.flatnonzero(train_labels == k), size, replace=True)
            for k, size in enumerate(np.bincount(np.arange(n) % (train_labels.max() + 1)))
        ])),
    }  # fmt: skip
    floors = {
        name: score(train_images[idx], train_labels[idx], f"floor-{i}-mnist", data, args, env, memorisation=False)
        for i, (name, idx) in enumerate(picks.items())
    }  # fmt: skip
    ext = extractor(str(data))
    result: dict[str, Any] = {
        "budget": args.budget, "n": n, "dataset": {"path": str(data), "fingerprint": dataset.fingerprint,
        "splits": {s: len(dataset.split(s).images) for s in dataset.split_names}},
        "evaluator": {**ext.describe(), **{k: v for k, v in getattr(ext, "info", {}).items()
                                           if isinstance(v, int | float | str)}},
        "control": control, "floors": floors, "models": {},
        # the control images are the evaluator's own training data: held-out confidence is the fairer bar
        "reference_confidence": control["reference_confidence"],
    }  # fmt: skip
    for model in args.models:
        result["models"][model] = attempt(lambda m=model: mnist_model(m, data, n, args, env), model)
        write_partial(args, "mnist", result)
    ddpm = result["models"].get("ddpm", {})
    if "error" not in ddpm and "ddpm" in args.models:
        result["ddim_vs_ddpm"] = attempt(
            lambda: samplers(args.work / "runs" / "ddpm-mnist", data, args, env), "ddpm"
        )
    for rec in [*result["models"].values(), *floors.values()]:
        if "fid" in rec:
            rec["fid_ratio"] = rec["fid"] / control["fid"]
            rec["passes"] = passes(rec)
    scored = {m: r for m, r in result["models"].items() if "fid" in r}
    if scored:
        # the best configuration: one that passes, else the lowest FID
        result["best"] = min(scored, key=lambda m: (not scored[m]["passes"], scored[m]["fid"]))
    return result


def mnist_model(
    model: str, data: Path, n: int, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    run = args.work / "runs" / f"{model}-mnist"
    print(f"[mnist] {model}: training for {args.budget}")
    wall = train(model, data, run, args.budget, args, args.work / "logs" / f"train-{model}-mnist.log", env)
    rec = {"conditional": RECIPES[model].conditional, "batch_size": RECIPES[model].batch_size,
           "train_wall_s": wall, **train_stats(run)}  # fmt: skip
    rec["grid"] = copy_grid(run, args.grids / f"{model}-mnist.png")
    images, labels, seconds = generate(run, n, args.seed)
    rec["sample_s"], rec["sample_images_per_s"] = seconds, n / seconds
    print(f"[mnist] {model}: {rec['steps']} steps; scoring {n} samples")
    rec.update(score(images, labels, f"{model}-mnist", data, args, env))
    return rec


def samplers(run: Path, data: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """DDIM (the model's default steps) against the full DDPM chain: time and FID at --ddpm-n."""
    out = {}
    for sampler in ("ddim", "ddpm"):
        print(f"[mnist] ddpm: {args.ddpm_n} samples with the {sampler} sampler")
        images, labels, seconds = generate(run, args.ddpm_n, args.seed, sampler=sampler)
        rec = score(images, labels, f"ddpm-{sampler}", data, args, env, memorisation=False)
        out[sampler] = {"steps": sampler_steps(run, sampler), "seconds": seconds,
                        "s_per_image": seconds / args.ddpm_n, **rec}  # fmt: skip
    return out


def sampler_steps(run: Path, sampler: str) -> int:
    from genforge.models.diffusion.samplers import SAMPLERS

    cfg = json.loads((run / "model.json").read_text())["config"]
    return cfg["timesteps"] if SAMPLERS.get(sampler).full_chain else cfg["sample_steps"]


def run_cifar(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    from genforge.data.canonical import open_dataset

    if not CIFAR.is_file():
        sys.exit(f"CIFAR-10 archive not found: {CIFAR} (see shared/data/README.md)")
    extra = ["--val-fraction", "0"] + (["--limit", str(args.cifar_limit)] if args.cifar_limit else [])
    data = ingest(CIFAR, args.work / f"cifar-{args.cifar_limit or 'all'}", extra,
                  args.work / "logs" / "ingest-cifar.log", env)  # fmt: skip
    dataset = open_dataset(data)
    splits = {s: len(dataset.split(s).images) for s in dataset.split_names}
    if not splits.get("train"):
        sys.exit(f"CIFAR-10 dataset {data} has no train split ({splits}): the archive lists test/ first, "
                 "so --cifar-limit must exceed 10,000")  # fmt: skip
    result: dict[str, Any] = {"budget": args.cifar_budget, "limit": args.cifar_limit, "splits": splits,
                              "image_shape": list(dataset.image_shape), "models": {}}  # fmt: skip
    if args.cifar_eval:
        ref = dataset.reference_split
        control = np.asarray(dataset.split("train").images[: args.cifar_n])
        labels = np.asarray(dataset.split("train").labels[: args.cifar_n])
        result["reference_split"] = ref.name
        result["control"] = score(control, labels, "control-cifar", data, args, env, memorisation=False)
    for model in args.models:
        result["models"][model] = attempt(lambda m=model: cifar_model(m, data, args, env), model)
        write_partial(args, "cifar", result)
    return result


def cifar_model(model: str, data: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    run = args.work / "runs" / f"{model}-cifar"
    print(f"[cifar] {model}: training for {args.cifar_budget}")
    wall = train(
        model, data, run, args.cifar_budget, args, args.work / "logs" / f"train-{model}-cifar.log", env
    )
    rec = {"conditional": RECIPES[model].conditional, "batch_size": RECIPES[model].batch_size,
           "train_wall_s": wall, **train_stats(run)}  # fmt: skip
    rec["grid"] = copy_grid(run, args.grids / f"{model}-cifar.png")
    if args.cifar_eval:
        images, labels, seconds = generate(run, args.cifar_n, args.seed)
        rec["sample_s"], rec["sample_images_per_s"] = seconds, args.cifar_n / seconds
        rec.update(score(images, labels, f"{model}-cifar", data, args, env, memorisation=False))
    return rec


def attempt(fn: Any, model: str) -> dict[str, Any]:
    """fn()'s record, or {"error": ...}: one failing family must not lose the others' numbers."""
    try:
        return fn()
    except StepFailed as exc:
        print(f"FAILED {model}: {exc}", file=sys.stderr)
        return {"error": str(exc).splitlines()[0]}


def passes(rec: dict[str, Any]) -> bool:
    conf = rec.get("confidence")
    return bool(rec["fid_ratio"] <= GOAL["fid_ratio"] and conf is not None and conf >= GOAL["confidence"]
                and rec["coverage"] >= GOAL["coverage"])  # fmt: skip


# ---------------------------------------------------------------- report


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if isinstance(value, int | float) else str(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(markdown_table(header, rows))


QUALITY_COLUMNS = [  # (header, key, format)
    ("FID", "fid", ".2f"), ("FID / control", "fid_ratio", ".2f"), ("KID", "kid", ".3g"),
    ("confidence", "confidence", ".3f"), ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
    ("density", "density", ".3f"), ("coverage", "coverage", ".3f"),
    ("cond. accuracy", "conditional_accuracy", ".3f"), ("classifier score", "classifier_score", ".2f"),
]  # fmt: skip
TRAIN_COLUMNS = [
    ("steps", "steps", ","), ("images seen", "images_seen", ","), ("train images/s", "train_images_per_s", ".1f"),
    ("sampling images/s", "sample_images_per_s", ".1f"),
]  # fmt: skip


def model_rows(models: dict[str, Any], columns: list[tuple[str, str, str]], extra: Any) -> list[list[str]]:
    rows = []
    for name, rec in models.items():
        label = f"{name} (conditional)" if rec.get("conditional") else name
        if "error" in rec:
            rows.append([label, f"failed: {rec['error']}"] + [""] * (len(columns) + len(extra(rec)) - 1))
            continue
        rows.append([label] + [fmt(rec.get(key), spec) for _, key, spec in columns] + extra(rec))
    return rows


def mnist_section(res: dict[str, Any], header: str) -> str:
    ctrl, ev = res["control"], res["evaluator"]
    cols = TRAIN_COLUMNS + QUALITY_COLUMNS
    rows = model_rows(res["models"], cols, lambda r: [fmt(r.get("copy_rate_features")), fmt(r.get("passes"))])
    ctrl_row = ["**real-data control** (train split)", "", "", "", ""] + [
        fmt(1.0 if key == "fid_ratio" else ctrl.get(key), spec) for _, key, spec in QUALITY_COLUMNS
    ] + ["", ""]  # fmt: skip
    floor_rows = [
        [f"*{name}* (n train images drawn with replacement)", "", "", "", ""]
        + [fmt(rec.get(key), spec) for _, key, spec in QUALITY_COLUMNS] + ["", fmt(passes(rec))]
        for name, rec in res.get("floors", {}).items()
    ]  # fmt: skip
    parts = [
        "## MNIST: every family at a fixed training budget", "", header,
        f"- Data: `../shared/data/mnist-test` (10,000 images) ingested by `genforge data ingest` with "
        f"`--val-fraction 0.5`: splits {res['dataset']['splits']} (fingerprint `{res['dataset']['fingerprint']}`). "
        "Models train on train; val is the reference of every metric.",
        f"- Budget: `--max-time {res['budget']}` of training per family (`genforge train`, precision `auto`: bf16 "
        "on this CPU, unless the command says otherwise); the run's own wall time (start-up, final checkpoint) is longer.",
        f"- Evaluator: `{ev['id']}` (hash `{ev['hash']}`), trained on the train split"
        + (f", held-out accuracy {ev['heldout_accuracy']:.4f}" if "heldout_accuracy" in ev else "") + ". "
        f"Every row is scored on n = {res['n']} images against the {res['dataset']['splits'].get('val')} val "
        "images with the same evaluator; the control is n train images, so FID / control compares equal n.",
        "- confidence: mean over samples of the evaluator's max softmax probability (`classifier_confidence` "
        "in `genforge eval`'s metrics.json). Conditional models are "
        "sampled with labels in the training split's class proportions; cond. accuracy is the evaluator's accuracy on them. "
        "The control's images are the evaluator's own training images, so its confidence is optimistic: on the "
        f"held-out val images the evaluator's confidence is {fmt(res['reference_confidence'], '.3f')}. An "
        "evaluator can also be confidently wrong on images unlike any digit, so confidence only means "
        "something beside FID and coverage.",
        f"- sampling images/s: {res['n']} images from the EMA weights in one process (model loading excluded), "
        f"in chunks of {CHUNK}, with `--threads` as in the command (default: torch's); ddpm samples by its "
        "default DDIM steps with classifier-free guidance (two network passes per step).",
        "- copy rate: the memorisation audit's share of samples closer (evaluator features) to a training "
        "image than 99% of val images are; ~0.01 for a model that generalises.",
        "- The *memoriser* rows are real training images drawn at random with replacement, in the data's "
        "class mix and in a uniform one: what a model that reproduced its training set would score, and the "
        "cost of ignoring class frequencies. Conditional models are sampled in the training data's class "
        "proportions (`Pipeline.class_labels`).",
        "", table(["model"] + [c[0] for c in cols] + ["copy rate", "passes the goal"],
                  rows + [ctrl_row] + floor_rows), "",
    ]  # fmt: skip
    if "best" in res:
        best = res["models"][res["best"]]
        verdict = "**passes**" if best["passes"] else "**does not pass**"
        parts += [
            f"**The issue's goal** (FID <= {GOAL['fid_ratio']}x the control, confidence >= {GOAL['confidence']}, "
            f"coverage >= {GOAL['coverage']}): the best configuration, `{res['best']}`, {verdict}: FID "
            f"{best['fid']:.2f} = {best['fid_ratio']:.2f}x the control's {ctrl['fid']:.2f}, confidence "
            f"{fmt(best['confidence'], '.3f')}, coverage {best['coverage']:.3f}.", "",
        ]  # fmt: skip
    if "ddim_vs_ddpm" in res:
        parts += sampler_section(res["ddim_vs_ddpm"])
    parts += ["### Sample grids (the run's last grid, fixed noise, EMA weights)", ""]
    parts += grid_lines(res, "MNIST")
    return "\n".join(parts)


def sampler_section(cmp: dict[str, Any]) -> list[str]:
    if "error" in cmp:
        return ["### ddpm: DDIM against the full DDPM chain", "", f"failed: {cmp['error']}", ""]
    ddim, ddpm = cmp["ddim"], cmp["ddpm"]
    rows = [[name, fmt(r["steps"], ","), fmt(r["n"], ","), fmt(r["s_per_image"], ".4f"),
             fmt(r["s_per_image"] / ddim["s_per_image"], ".1f") + "x", fmt(r["fid"], ".2f"), fmt(r["kid"], ".3g"),
             fmt(r["coverage"], ".3f"), fmt(r["confidence"], ".3f")] for name, r in cmp.items()]  # fmt: skip
    return [
        "### ddpm: DDIM against the full DDPM chain (same trained model, classifier-free guidance as configured)",
        "", table(["sampler", "steps", "n", "s / image", "time vs DDIM", "FID", "KID", "coverage", "confidence"],
                  rows), "",
        f"Full DDPM takes {ddpm['s_per_image'] / ddim['s_per_image']:.1f}x DDIM's time per image; FID "
        f"{ddpm['fid']:.2f} vs {ddim['fid']:.2f} (n = {ddim['n']}: FID is biased upwards at this n, compare "
        "only these two).", "",
    ]  # fmt: skip


def cifar_section(res: dict[str, Any], header: str) -> str:
    cols = TRAIN_COLUMNS[:3] + (TRAIN_COLUMNS[3:] + QUALITY_COLUMNS[:1] + QUALITY_COLUMNS[2:4]
                                + QUALITY_COLUMNS[7:8] if "control" in res else [])  # fmt: skip
    rows = model_rows(res["models"], cols, lambda r: [])
    limit = (f"`--limit {res['limit']}` (the archive lists test/ first, so: test {res['splits'].get('test')}, "
             f"train the first {res['splits'].get('train')} of train/ in archive order)" if res["limit"]
             else "all 60,000 images")  # fmt: skip
    parts = [
        "## CIFAR-10: every family trains from the command line (32x32 RGB)",
        "",
        header,
        f"- Data: `../shared/data/cifar10/cifar10-jpg.tar.gz` ingested with {limit}; splits {res['splits']}, "
        f"image shape {res['image_shape']}.",
        f"- Budget: `--max-time {res['budget']}` per family, the same commands as for MNIST, no code changes.",
    ]
    if "control" in res:
        c = res["control"]
        parts.append(f"- Scored on n = {c['n']} against the {res['reference_split']} split with the dataset's "
                     f"evaluator; real-data control (n train images): FID {c['fid']:.2f}, KID {c['kid']:.3g}, "
                     f"confidence {fmt(c['confidence'], '.3f')}, coverage {c['coverage']:.3f}.")  # fmt: skip
    parts += ["", table(["model"] + [c[0] for c in cols], rows), "", "### Sample grids", ""]
    parts += grid_lines(res, "CIFAR-10")
    return "\n".join(parts)


def grid_lines(res: dict[str, Any], data: str) -> list[str]:
    return [f"**{m}**\n\n![{m} on {data}]({res['grids']}/{r['grid']})\n" for m, r in res["models"].items()
            if "grid" in r]  # fmt: skip


SECTIONS = {"mnist": mnist_section, "cifar": cifar_section}


def machine() -> str:
    import torch

    return (f"`nproc` {os.cpu_count()}, {cpu_model()} (lscpu), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); load average {os.getloadavg()[0]:.1f} when written")  # fmt: skip


def header(args: argparse.Namespace, started: dt.datetime, seconds: float) -> str:
    return "\n".join([
        f"- Machine: {machine()}.",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; the whole command took {seconds / 60:.1f} min.",
        f"- Command: `{args.command}`",
    ])  # fmt: skip


def write_section(args: argparse.Namespace, name: str, body: str) -> None:
    """Replace this benchmark's `name` section of the Markdown file; other sections stay."""
    from genforge.core.atomic import write_text

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = args.out.read_text() if args.out.is_file() else "# Quality at a fixed training budget\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text(args.out, text)


def write_json(args: argparse.Namespace, name: str, result: dict[str, Any]) -> None:
    from genforge.core.atomic import write_json as atomic_json

    path = args.out.with_suffix(".json")
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = result
    atomic_json(path, data)


def write_partial(args: argparse.Namespace, name: str, result: dict[str, Any]) -> None:
    """Numbers so far into the work dir: a run that dies late keeps what it measured."""
    from genforge.core.atomic import write_json as atomic_json

    atomic_json(args.work / f"partial-{name}.json", result)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--models", default=DEFAULT_MODELS, help=f"comma-separated families of {', '.join(RECIPES)}"
    )
    p.add_argument(
        "--budget", default="5m", help="MNIST training budget per family (genforge train --max-time)"
    )
    p.add_argument(
        "--n", type=int, help="images scored per family and for the control (default: the train split size)"
    )
    p.add_argument("--ddpm-n", type=int, default=1000, help="images per sampler for DDIM vs full DDPM")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", help="genforge train --precision (default: the trainer's auto)")
    p.add_argument("--threads", type=int, help="torch/OpenMP threads for every process (default: torch's)")
    p.add_argument(
        "--near-dup-distance",
        type=int,
        default=0,
        help="MNIST ingest pHash distance; 0 keeps the stratified 50/50 carve exact (see the report)",
    )
    p.add_argument("--skip-mnist", action="store_true", help="only the CIFAR-10 part")
    p.add_argument("--cifar", action="store_true", help="also train every family on CIFAR-10")
    p.add_argument("--cifar-budget", default="60s")
    p.add_argument(
        "--cifar-limit", type=int, help="ingest only the first N archive items (> 10,000: test/ comes first)"
    )
    p.add_argument("--cifar-eval", action="store_true", help="score CIFAR-10 samples against the test split")
    p.add_argument("--cifar-n", type=int, default=1000, help="images scored per family with --cifar-eval")
    p.add_argument(
        "--work", type=Path, help="work directory (datasets, runs, samples, logs; default: a new temp dir)"
    )
    p.add_argument(
        "--reuse", action="store_true", help="reuse finished runs found in --work instead of retraining"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="Markdown results (JSON and grids beside it)"
    )
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in RECIPES]
    if unknown:
        p.error(f"--models: {', '.join(unknown)} not benchmarked here; choose from {', '.join(RECIPES)} "
                "(dae restores and simclr encodes: neither generates)")  # fmt: skip
    if args.skip_mnist and not args.cifar:
        p.error("--skip-mnist needs --cifar")
    args.command = shlex.join(
        [".venv/bin/python", "bench/quality_budget.py", *(sys.argv[1:] if argv is None else argv)]
    )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not GENFORGE.is_file():
        sys.exit(f"{GENFORGE} not found: run with the project's interpreter (.venv/bin/python)")
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="genforge-quality-"))).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    args.grids = args.out.parent / args.out.stem
    env = dict(os.environ)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(f"work dir: {args.work}")
    parts = ([] if args.skip_mnist else [("mnist", run_mnist)]) + (
        [("cifar", run_cifar)] if args.cifar else []
    )
    for name, fn in parts:
        started, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
        result = fn(args, env)
        result["grids"] = args.grids.name
        result["command"], result["date"] = args.command, f"{started:%Y-%m-%d %H:%M} UTC"
        result["seconds"] = time.perf_counter() - t0
        write_json(args, name, result)
        write_section(args, name, SECTIONS[name](result, header(args, started, result["seconds"])))
        print(f"{name}: {result['seconds'] / 60:.1f} min; wrote {args.out} ({name} section)")


if __name__ == "__main__":
    main()
