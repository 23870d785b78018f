"""Benchmark of `genforge data ingest` on CIFAR-10 (60,000 JPEGs in a tar.gz), side by side with
a bare tar-stream+decode loop and with cleanvision's duplicate search on the test split.

    .venv/bin/python bench/data_ingest.py [--out bench/results/data.md] [--skip-cleanvision]

Writes the Markdown results file; every number in it is measured by this run.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import resource
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import cpu_model

REPO = Path(__file__).resolve().parents[1]
TAR = REPO.parent / "shared" / "data" / "cifar10" / "cifar10-jpg.tar.gz"


def machine() -> str:
    return f"{os.cpu_count()} CPU cores (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}, Python {platform.python_version()}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bare_rate() -> tuple[int, float]:
    """Stream the tar.gz and decode every JPEG to an RGB array, in this one process."""
    t = time.perf_counter()
    n = 0
    with tarfile.open(TAR, "r|gz") as tf:
        for member in tf:
            if member.isfile() and member.name.endswith(".jpg"):
                data = tf.extractfile(member).read()
                np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                n += 1
    return n, time.perf_counter() - t


def cpu_seconds() -> tuple[float, float]:
    """(this process, its finished child processes) user+system CPU seconds."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


CPU: dict[str, tuple[float, float]] = {}


def timed_ingest(source, out: Path, **cfg):
    from genforge.data.process import IngestConfig, ingest

    c0, t = cpu_seconds(), time.perf_counter()
    result = ingest(source, out, IngestConfig(**cfg), overwrite=True)
    dt, c1 = time.perf_counter() - t, cpu_seconds()
    CPU[str(out)] = (c1[0] - c0[0], c1[1] - c0[1])
    return result, dt


def extract_test(folder: Path) -> int:
    n = 0
    with tarfile.open(TAR, "r|gz") as tf:
        for member in tf:
            if member.isfile() and member.name.startswith("test/"):
                target = folder / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tf.extractfile(member).read())
                n += 1
    return n


def our_groups(dataset_dir: Path) -> tuple[list[set[str]], list[set[str]], list[set[str]]]:
    """(exact groups, near groups, all duplicate components) as sets of real paths."""
    from genforge.data.canonical import open_dataset
    from genforge.data.process.analysis import analyse_dataset, duplicates_of

    ds = open_dataset(dataset_dir)
    cfg = ds.manifest["process"]
    facts = analyse_dataset(ds)
    dups = duplicates_of(
        facts.content_hash, facts.images, cfg["near_dup_distance"], cfg["near_dup_similarity"]
    )

    def paths(idx) -> set[str]:
        return {os.path.realpath(facts.origin[i]) for i in idx}

    return [paths(g) for g in dups.exact], [paths(g) for g in dups.near], [paths(g) for g in dups.groups()]


def run_cleanvision(folder: Path) -> tuple[float, list[set[str]], list[set[str]]]:
    os.environ["TQDM_DISABLE"] = "1"  # its progress bars would flood the log
    from cleanvision import Imagelab

    t = time.perf_counter()
    lab = Imagelab(data_path=str(folder))
    lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}}, n_jobs=2, verbose=False)
    dt = time.perf_counter() - t

    def sets(kind: str) -> list[set[str]]:
        return [{os.path.realpath(p) for p in s} for s in lab.info[kind]["sets"]]

    return dt, sets("exact_duplicates"), sets("near_duplicates")


def covered(sets: list[set[str]], groups: list[set[str]]) -> int:
    """How many of `sets` lie entirely inside one of `groups`."""
    where = {p: k for k, g in enumerate(groups) for p in g}
    return sum(1 for s in sets if len({where.get(p, -1 - i) for i, p in enumerate(s)}) == 1)


def touched(groups: list[set[str]], sets: list[set[str]]) -> int:
    flagged = set().union(*sets) if sets else set()
    return sum(1 for g in groups if g & flagged)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "data.md")
    ap.add_argument("--skip-cleanvision", action="store_true")
    args = ap.parse_args()
    if not TAR.is_file():
        sys.exit(f"CIFAR-10 archive not found at {TAR} (see shared/data/README.md)")
    lines = [
        "# Data ingest benchmark",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {machine()}",
        f"- command: `.venv/bin/python bench/data_ingest.py{' --skip-cleanvision' if args.skip_cleanvision else ''}`",
        f"- load average (1, 5, 15 min) at start: {load()} — the machine was shared with other engineers' jobs,"
        " so absolute rates vary; compare the ratios, measured back to back in this run.",
        "",
    ]
    print("bare tar stream + decode ...", flush=True)
    c0 = cpu_seconds()
    n_bare, t_bare = bare_rate()
    CPU["bare"] = (cpu_seconds()[0] - c0[0], 0.0)
    rows = [("bare tar.gz stream + JPEG decode, 1 process (reference)", n_bare, t_bare, "bare")]
    with tempfile.TemporaryDirectory(prefix="gf-bench-") as tmp:
        tmp = Path(tmp)
        for label, workers in (
            ("genforge data ingest --size 32, default workers", None),
            ("same, --workers 0", 0),
        ):
            print(label, "...", flush=True)
            result, dt = timed_ingest(str(TAR), tmp / f"cifar-{workers}", size=(32, 32), workers=workers)
            rows.append((label, result.manifest["counts"]["images"], dt, str(tmp / f"cifar-{workers}")))
        c0 = cpu_seconds()
        n_bare2, t_bare2 = bare_rate()
        CPU["bare2"] = (cpu_seconds()[0] - c0[0], 0.0)
        rows.append(("bare tar.gz stream + JPEG decode, again after the ingests", n_bare2, t_bare2, "bare2"))
        summary = result.report["summary"]
        lines += [
            "## CIFAR-10, 60,000 JPEGs from the tar.gz, end to end",
            "",
            "End to end = stream the archive, decode, validate, resize, hash (content + pHash), analyse, dedupe"
            " (exact + near), write the canonical dataset and report.json + report.html.",
            "",
            "| what | images | wall s | images/s | ratio to bare decode | CPU s: main process | CPU s: workers |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        ref = (n_bare / t_bare + n_bare2 / t_bare2) / 2
        for label, n, dt, key in rows:
            own, kids = CPU[key]
            lines.append(
                f"| {label} | {n:,} | {dt:.2f} | {n / dt:,.0f} | {n / dt / ref:.2f} | {own:.2f} | {kids:.2f} |"
            )
        lines += [
            "",
            f"Ratio column: rate / mean of the two bare runs ({ref:,.0f} images/s). CPU seconds are user+system time"
            " (getrusage) of this process and of the finished worker processes: unlike wall time they barely"
            " depend on how busy the shared machine was.",
            f"Findings of the default ingest: {summary['splits']}, {summary['exact_duplicate_groups']} exact groups,"
            f" {summary['near_duplicate_groups']} near groups, {summary['leakage_pairs']} train/test leakage pairs,"
            f" outliers {summary['outliers']}; dataset fingerprint {result.manifest.get('fingerprint')}.",
            "",
        ]
        if not args.skip_cleanvision:
            folder = tmp / "cifar-test-jpg"
            print("extracting the test split ...", flush=True)
            n_test = extract_test(folder)
            print("cleanvision ...", flush=True)
            t_cv, cv_exact, cv_near = run_cleanvision(folder)
            print("genforge on the same folder ...", flush=True)
            res, t_ours = timed_ingest(str(folder), tmp / "cifar-test-ds")
            exact, near, comps = our_groups(tmp / "cifar-test-ds")
            res0, t_ours0 = timed_ingest(
                str(folder), tmp / "cifar-test-d0", near_dup_distance=0, near_dup_similarity=0.0
            )
            exact0, near0, comps0 = our_groups(tmp / "cifar-test-d0")
            lines += [
                f"## Duplicates on the CIFAR-10 test split ({n_test:,} JPEGs extracted to a folder), vs cleanvision",
                "",
                "cleanvision 0.3.7 `Imagelab.find_issues({exact_duplicates, near_duplicates}, n_jobs=2)`: md5 of pixels"
                " and identical 64-bit pHash (imagehash). genforge: sha256 of the stored pixels, and pHash within"
                " Hamming distance 6 confirmed by structure similarity >= 0.985 (default), or identical pHash"
                " (`--near-dup-distance 0`, similarity check off) for a like-for-like run.",
                "",
                "| tool | seconds | images/s | exact sets | near sets | images in near sets |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
                f"| cleanvision | {t_cv:.2f} | {n_test / t_cv:,.0f} | {len(cv_exact)} | {len(cv_near)} |"
                f" {len(set().union(*cv_near)) if cv_near else 0} |",
                f"| genforge ingest, defaults | {t_ours:.2f} | {n_test / t_ours:,.0f} | {len(exact)} | {len(near)} |"
                f" {len(set().union(*near)) if near else 0} |",
                f"| genforge ingest, distance 0 | {t_ours0:.2f} | {n_test / t_ours0:,.0f} | {len(exact0)} | {len(near0)} |"
                f" {len(set().union(*near0)) if near0 else 0} |",
                "",
                f"Speed ratio (cleanvision time / genforge default time): {t_cv / t_ours:.1f}x; genforge's time includes"
                " writing the dataset and the HTML report.",
                "",
                "Overlap:",
                f"- cleanvision near sets lying inside one genforge duplicate group: defaults {covered(cv_near, comps)}"
                f" of {len(cv_near)}; distance 0: {covered(cv_near, comps0)} of {len(cv_near)}.",
                f"- genforge default groups that share an image with a cleanvision near set: {touched(comps, cv_near)}"
                f" of {len(comps)} (the rest are near, not identical, pHashes).",
                f"- genforge distance-0 near groups vs cleanvision near sets identical as sets:"
                f" {len({frozenset(s) for s in near0} & {frozenset(s) for s in cv_near})} of {len(cv_near)}.",
                f"- exact sets: cleanvision {len(cv_exact)}, genforge {len(exact)}; identical as sets:"
                f" {len({frozenset(s) for s in exact} & {frozenset(s) for s in cv_exact})}.",
                "",
            ]
    lines.append(f"Load average at the end: {load()}.")
    lines += [
        "",
        "## Notes",
        "",
        "- The goal is >= 10,000 images/s end to end on 2 idle cores. Wall-clock rates depend on what else"
        " runs on the machine (see the load averages above); the bare decode loop, measured in the same run,"
        " is the yardstick. The CPU-second columns are the load-independent view: the main process streams"
        " the archive (the tar source) and writes the dataset and report, the workers decode, resize, hash"
        " and analyse; on 2 idle cores the two sides run concurrently.",
        "- `--workers 0` (everything in one process) is the fallback; with other jobs competing for the cores"
        " it can be as fast as or faster than the default, because the workers only help when a core is free.",
        "- Near duplicates: genforge reports pHash pairs within distance 6 that are confirmed by a structure"
        " similarity check, so it finds re-encoded or brightened copies that cleanvision's identical-pHash rule"
        " misses, while `--near-dup-distance 0` reproduces cleanvision's sets exactly.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
