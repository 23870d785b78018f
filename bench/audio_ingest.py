"""Benchmark of `genforge data ingest` on audio: all of FSDD (2,500 WAVs, 8 kHz), side by side with
the bare `soundfile` decode loop over the same files as the yardstick.

    .venv/bin/python bench/audio_ingest.py [--repeat 3] [--out bench/results/audio_ingest.md]

The ingest is the full one (`--label-pattern "{label}_{speaker}_{take}" --group-by speaker`:
decode, checks, mono, resample, trim, loudness, fixed length, exact and near duplicates,
speaker-disjoint split, the dataset files and the report), run in this process after a warm-up
run (imports, torch's first kernels); each measure is the best of `--repeat` runs, the two
interleaved so that both see the same machine load. A stage breakdown (cProfile, one more run)
follows. Writes the Markdown results file; every number in it is measured by this run.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
GOAL = 2000.0  # clips/s, issue 10
PATTERN = "{label}_{speaker}_{take}"
STAGES = {  # cProfile entries (file suffix, function) -> the stage they time
    "read + decode + checks": ("data/audio/ingest.py", "_collect"),
    "mono + resample": ("data/audio/ingest.py", "_resampled"),
    "trim + loudness + length": ("data/audio/process.py", "process_clips"),
    "fingerprints (log-mel)": ("data/audio/duplicates.py", "fingerprints"),
    "duplicate search": ("data/audio/duplicates.py", "find_audio_duplicates"),
    "write dataset": ("data/audio/canonical.py", "write_audio_dataset"),
    "report": ("data/audio/report.py", "write_audio_report"),
}


def machine() -> str:
    return (
        f"{os.cpu_count()} CPU cores (affinity {len(os.sched_getaffinity(0))}), {cpu_model()}, "
        f"Python {platform.python_version()}"
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bare(files: list[Path]) -> float:
    """Seconds to decode every file to float32 with soundfile, nothing else."""
    import soundfile as sf

    t = time.perf_counter()
    for f in files:
        sf.read(f, dtype="float32")
    return time.perf_counter() - t


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def headroom() -> float:
    """How much sooner 4 pure-Python CPU tasks finish on 2 processes than on 1, right now: 2.0 on
    2 idle cores, about 1.0 when other work already fills them (then nothing parallel can gain)."""
    import multiprocessing as mp

    n = 1_500_000
    t = time.perf_counter()
    for _ in range(4):
        _burn(n)
    serial = time.perf_counter() - t
    with mp.get_context("fork").Pool(2) as pool:
        t = time.perf_counter()
        pool.map(_burn, [n] * 4)
        parallel = time.perf_counter() - t
    return serial / parallel


def run_ingest(out: Path, workers: int = 0):
    from genforge.data.audio.config import AudioIngestConfig
    from genforge.data.audio.ingest import ingest

    cfg = AudioIngestConfig(label_pattern=PATTERN, group_by="speaker", workers=workers)
    t = time.perf_counter()
    result = ingest(str(FSDD), out, cfg, overwrite=True)
    return result, time.perf_counter() - t


def stage_seconds(out: Path) -> dict[str, float]:
    prof = cProfile.Profile()
    prof.enable()
    run_ingest(out)
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    found = {}
    for stage, (suffix, name) in STAGES.items():
        found[stage] = sum(v[3] for (f, _, n), v in stats.items() if n == name and f.endswith(suffix))
    found["total (profiled)"] = sum(
        v[3] for (f, _, n), v in stats.items() if n == "ingest" and f.endswith("data/audio/ingest.py")
    )
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="as genforge --threads (0: automatic)")
    ap.add_argument(
        "--compare-workers", action="store_true", help="also time the ingest decoding on 2 worker processes"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "audio_ingest.md")
    args = ap.parse_args()
    if not FSDD.is_dir():
        print(f"skipped: FSDD not found at {FSDD}", file=sys.stderr)
        return 0
    from genforge.core.threads import configure

    plan = configure(args.threads)
    files = sorted(FSDD.glob("*.wav"))
    load_before = load()
    spare = headroom()
    t = time.perf_counter()
    import torch  # noqa: F401  (imported by the ingest's fingerprints: timed apart)

    import genforge.data.audio.ingest  # noqa: F401

    import_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="audio-ingest-bench-") as tmp:
        out = Path(tmp) / "fsdd"
        result, warm = run_ingest(out)  # warm-up: first torch kernels, page cache
        bares, ingests, pooled = [], [], []
        for _ in range(args.repeat):
            bares.append(bare(files))
            ingests.append(run_ingest(out)[1])
            if args.compare_workers:
                pooled.append(run_ingest(out, workers=2)[1])
        stages = stage_seconds(out)
    n = len(files)
    bare_rate, ingest_rate = n / min(bares), n / min(ingests)
    c = result.manifest["counts"]
    flags = " --compare-workers" if args.compare_workers else ""
    flags += f" --threads {args.threads}" if args.threads else ""
    pooled_row = (
        [
            f"| same, decoding on 2 worker processes (`workers: 2`) | {min(pooled):.3f} | {n / min(pooled):,.0f} |"
        ]
        if pooled
        else []
    )
    lines = [
        "# Audio ingest: FSDD into a canonical dataset",
        "",
        f"Command: `.venv/bin/python bench/audio_ingest.py --repeat {args.repeat}{flags}` "
        f"({datetime.date.today().isoformat()}; {machine()}; threads: {plan.threads} ({plan.source}); "
        f"load average before the run: {load_before}, after: {load()}; just before the runs a second process "
        f"did pure-Python work {spare:.2f}x as fast as one: 2.0 on idle cores, 1.0 when other work fills them).",
        "",
        f"Data: `{FSDD.relative_to(REPO.parent)}`, {n:,} WAV files (8 kHz mono PCM16). The ingest is "
        f'`genforge data ingest ... --label-pattern "{PATTERN}" --group-by speaker` in-process: '
        f"read {c['read']:,}, kept {c['clips']:,} clips, {c['quarantined']} quarantined, "
        f"{c['duplicates_dropped']} duplicates dropped, split {c.get('split_train', 0):,} train / "
        f"{c.get('split_val', 0):,} val ({', '.join(result.manifest['split']['groups']['val'])} held out).",
        "",
        f"| measure | seconds (best of {args.repeat}) | clips/s |",
        "| --- | --- | --- |",
        f"| bare `soundfile.read` loop (yardstick) | {min(bares):.3f} | {bare_rate:,.0f} |",
        f"| `genforge data ingest` (everything, report included) | {min(ingests):.3f} | **{ingest_rate:,.0f}** |",
        *pooled_row,
        f"| ratio ingest / bare | | {ingest_rate / bare_rate:.2f} |",
        f"| goal | | {GOAL:,.0f} ({'met' if ingest_rate >= GOAL else 'NOT met'}) |",
        "",
        f"All runs, seconds: bare {', '.join(f'{x:.3f}' for x in bares)}; ingest "
        f"{', '.join(f'{x:.3f}' for x in ingests)}"
        + (f"; with 2 decode processes {', '.join(f'{x:.3f}' for x in pooled)}" if pooled else "")
        + f"; the warm-up ingest {warm:.3f} s. Importing torch and the ingest modules took {import_s:.2f} s "
        "before the runs (a fresh `genforge` process pays it once).",
        "",
        *(
            [
                f"Other work shared these {os.cpu_count()} cores during the run (load average {load_before} before "
                "it, above the core count): the timings are noisy and slower than on an idle machine, the bare "
                "loop's as well as the ingest's; the spread of the runs above shows by how much.",
                "",
            ]
            if os.getloadavg()[0] > (os.cpu_count() or 1) or spare < 1.5
            else []
        ),
        "Stages of one more ingest run under cProfile (cumulative seconds; profiling adds overhead):",
        "",
        "| stage | seconds |",
        "| --- | --- |",
        *(f"| {k} | {v:.3f} |" for k, v in stages.items()),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
