"""Evaluate-stage speed: feature extraction + every metric for 10k vs 10k MNIST, the FID square
root against scipy.linalg.sqrtm on 2,048-d features, and PRDC on the published N(0, I) example.

    .venv/bin/python bench/eval_speed.py [--prdc-draws 10]

Data: the MNIST test split from ../shared/data/mnist-test (10,000 images). The canonical dataset
built here has train = val = those 10,000 images (the evaluator trains on them; the reference is
all 10,000); the evaluated samples are 10,000 copies with Gaussian pixel noise (sigma 20 grey
levels). The memorisation audit therefore calibrates on a held-out set identical to train (its
threshold is 0): it is timed, its copy rates are not meaningful here.
Writes its section of bench/results/evaluate.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import cpu_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "evaluate.md"
MNIST = REPO.parent / "shared" / "data" / "mnist-test"


def machine() -> str:
    load = os.getloadavg()[0]
    import torch

    return (f"nproc {os.cpu_count()}, {cpu_model()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}; load average {load:.1f} at the end of the run "
            f"(the machine was shared with other engineers' processes)")  # fmt: skip


def write_section(name: str, body: str) -> None:
    """Replace this script's section of bench/results/evaluate.md (other sections stay)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.is_file() else "# Evaluate stage benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    from genforge.core.atomic import write_text

    write_text(RESULTS, text)


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def mnist() -> tuple[np.ndarray, np.ndarray]:
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        sys.exit(f"MNIST test split not found in {MNIST} (see shared/data/README.md)")
    return read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[..., None], read_idx(
        MNIST / "t10k-labels-idx1-ubyte.gz"
    ).astype(np.int64)


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def bench_eval(work: Path) -> list[str]:
    from genforge.core.atomic import atomic_dir
    from genforge.data.canonical import SplitData, open_dataset, write_dataset
    from genforge.evaluate.evaluate import EvalConfig, evaluate
    from genforge.evaluate.extractors.classifier import classifier_extractor

    x, y = mnist()
    with atomic_dir(work / "ds") as tmp:
        write_dataset(tmp, {"train": SplitData(x, y), "val": SplitData(x, y)},
                      class_names=[str(i) for i in range(10)], meta={"source": "mnist-test"})  # fmt: skip
    ds = open_dataset(work / "ds")
    ext, t_train = timed(classifier_extractor, ds)
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 20, x.shape), 0, 255).astype(np.uint8)
    np.savez(work / "noisy.npz", images=noisy, labels=y)
    cfg = EvalConfig(n=10000, features="classifier")
    cold, t_cold = timed(evaluate, work / "noisy.npz", work / "ds", cfg, work / "cold.json")
    warm, t_warm = timed(evaluate, work / "noisy.npz", work / "ds", cfg, work / "warm.json")
    lean, t_lean = timed(evaluate, work / "noisy.npz", work / "ds", EvalConfig(n=10000, features="classifier",
                                                                              memorisation=False), work / "lean.json")  # fmt: skip
    per_metric = {k: v["seconds"] for k, v in warm["metrics"].items()}
    seen, rows = set(), []
    for name, rec in warm["metrics"].items():
        if rec["metric"] not in seen:
            seen.add(rec["metric"])
            rows.append(f"| {rec['metric']} | {per_metric[name]:.2f} |")
    return [
        "### 10k vs 10k MNIST: feature extraction + every metric",
        "",
        "Samples: the 10,000 MNIST test images with Gaussian pixel noise (sigma 20); reference: the 10,000 clean",
        "images (val split); evaluator: `classifier` (train split = the same 10,000 images).",
        "",
        "| step | seconds |",
        "| --- | --- |",
        f"| train the classifier evaluator (4 epochs, 10,000 images, once per dataset, then cached) | {t_train:.1f} |",
        f"| `evaluate()` cold: reference + train features extracted and cached, samples, all metrics, memorisation | {t_cold:.1f} |",
        f"| `evaluate()` warm (reference stats cached): sample features + all metrics + memorisation audit | {t_warm:.1f} |",
        f"| `evaluate()` warm without the memorisation audit | {t_lean:.1f} |",
        "",
        f"Breakdown of the warm run: sample features {warm['timing']['features_s']:.1f} s, metrics "
        f"{warm['timing']['metrics_s']:.1f} s, memorisation audit {warm['memorisation']['seconds']:.1f} s. "
        f"The evaluator's accuracy on the val split, {ext.info.get('heldout_accuracy')}, is a training accuracy "
        "here (val = train); the ranking section reports a held-out one.",
        "",
        "| metric (warm run) | seconds |",
        "| --- | --- |",
        *rows,
        "",
        f"Values (noisy copies vs clean): FID {warm['values']['fid']:.3f}, KID {warm['values']['kid']:.4f}, "
        f"precision {warm['values']['precision']:.3f}, recall {warm['values']['recall']:.3f}, "
        f"density {warm['values']['density']:.3f}, coverage {warm['values']['coverage']:.3f}; "
        f"same numbers cold and warm: {cold['values'] == warm['values']}.",
    ]


def bench_sqrt(dim: int = 2048, n: int = 6000, repeats: int = 3) -> list[str]:
    import scipy.linalg

    from genforge.evaluate.metrics.fid import frechet_distance, trace_sqrt_product

    rng = np.random.default_rng(0)
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    a = np.maximum(rng.normal(size=(n, dim)) @ mix, 0)  # ReLU-like features, as Inception's pool3 are
    b = np.maximum((rng.normal(size=(n, dim)) + 0.05) @ mix, 0)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ours_t, scipy_t = [], []
    for _ in range(repeats):
        tr, t = timed(trace_sqrt_product, s1, s2)
        ours_t.append(t)
        covmean, t = timed(scipy.linalg.sqrtm, s1 @ s2)
        scipy_t.append(t)
    diff = mu1 - mu2
    base = diff @ diff + np.trace(s1) + np.trace(s2)
    fid_ours = frechet_distance(mu1, s1, mu2, s2)
    fid_scipy = float(base - 2 * np.trace(np.real(covmean)))
    imag = float(np.abs(np.imag(covmean)).max()) if np.iscomplexobj(covmean) else 0.0
    o, s = min(ours_t), min(scipy_t)
    return [
        f"### FID matrix square root, {dim}-d features ({n} samples per set, best of {repeats})",
        "",
        "| method | seconds | FID |",
        "| --- | --- | --- |",
        f"| genforge: eigh of S1, eigvalsh of S1^1/2 S2 S1^1/2 | {o:.2f} | {fid_ours:.10g} |",
        f"| scipy.linalg.sqrtm(S1 S2), real part | {s:.2f} | {fid_scipy:.10g} |",
        "",
        f"Speed-up {s / o:.1f}x; FID difference {abs(fid_ours - fid_scipy):.3g} "
        f"(relative {abs(fid_ours - fid_scipy) / fid_scipy:.2g}); largest imaginary part scipy discarded: {imag:.3g}.",
    ]


def bench_prdc(draws: int) -> list[str]:
    from genforge.evaluate.metrics.prdc import prdc

    keys = ("precision", "recall", "density", "coverage")
    published = (0.4772, 0.4705, 1.0555, 0.9737)
    rows, times = [], []
    for seed in range(draws):
        rng = np.random.default_rng(1000 + seed)
        real = rng.standard_normal((10000, 1000), dtype=np.float32)
        fake = rng.standard_normal((10000, 1000), dtype=np.float32)
        m, t = timed(prdc, real, fake, 5)
        times.append(t)
        rows.append([m[k] for k in keys])
    arr = np.array(rows)
    lines = [
        f"### PRDC, 10k real vs 10k fake from N(0, I) in 1,000-d, k=5 ({draws} seeded draws)",
        "",
        "| | precision | recall | density | coverage |",
        "| --- | --- | --- | --- | --- |",
        "| published (clovaai/generative-evaluation-prdc README, one unseeded draw) | "
        + " | ".join(f"{v:.4f}" for v in published)
        + " |",
        "| mean over draws | " + " | ".join(f"{v:.4f}" for v in arr.mean(0)) + " |",
        "| std over draws | " + " | ".join(f"{v:.4f}" for v in arr.std(0)) + " |",
        "| min | " + " | ".join(f"{v:.4f}" for v in arr.min(0)) + " |",
        "| max | " + " | ".join(f"{v:.4f}" for v in arr.max(0)) + " |",
        "",
        f"Time per draw (3 blocked 10k x 10k distance passes in 1,000-d): median {np.median(times):.1f} s, "
        f"min {min(times):.1f} s. The published numbers are one draw: density varies by its std between "
        "draws, so a test can hold a fresh draw to them only within that spread.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prdc-draws", type=int, default=10)
    parser.add_argument("--skip", nargs="*", default=[], choices=["eval", "sqrt", "prdc"])
    args = parser.parse_args()
    cmd = " ".join(["python", "bench/eval_speed.py", *sys.argv[1:]])
    parts = {"eval": lambda tmp: bench_eval(tmp), "sqrt": lambda tmp: bench_sqrt(),
             "prdc": lambda tmp: bench_prdc(args.prdc_draws)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("GENFORGE_CACHE", str(Path(tmp) / "cache"))
        for name, fn in parts.items():
            if name in args.skip:
                continue
            lines = fn(Path(tmp))
            # each part has its own section, so one part can be re-measured alone (--skip the others)
            header = [f"Command: `{cmd}`  ", f"Date: {dt.date.today()}  ", f"Machine: {machine()}", ""]
            body = "\n".join([lines[0], "", *header, *lines[1:]])
            write_section(f"eval_speed_{name}", body)
            print(body, flush=True)


if __name__ == "__main__":
    main()
