"""Speech enhancement against issue 11's goal table: a trained `denoiser` run beside noisereduce
(spectral gating with its defaults) on digit strings of held-out speakers.

    .venv/bin/python bench/enhancement.py --run RUN_DIR --data DATASET [--strings 24] [--threads 2]
    .venv/bin/python bench/enhancement.py --train-seconds 600 [--keep DIR]   # trains the scenario's recipe
    .venv/bin/python bench/enhancement.py --train-seconds 600 --held-out-voices 2   # babble of another unheard voice

With `--train-seconds S` it first does what `genforge run --scenario speech-enhancement` does up
to training: ingests FSDD (`../shared/data/fsdd/recordings`, `--group-by speaker`: one speaker
held out) and trains the scenario's recipe (presets/speech-enhancement.yaml) for S seconds on
`--threads` cores. Then, on the held-out split (`evaluate.audio.enhancement`, the metrics
`genforge eval` writes): white, pink and babble noise at 0, 5 and 10 dB, PESQ (narrow-band),
STOI and SI-SDR of the noisy input, the model's output and noisereduce's, and both real-time
factors (one string at a time, in this process, on `--threads` threads).

Goal (issue 11), at 5 dB on held-out speakers after at most 10 minutes of 2-core training:
PESQ gain >= noisereduce's + 0.3, STOI gain >= noisereduce's, SI-SDR gain >= 8 dB, each noise type
on its own; real-time factor >= 50. Prints the Markdown tables and writes them to --out.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_model, emit

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
KINDS = ["white", "pink", "babble"]
SNRS = [0.0, 5.0, 10.0]
GOAL_PESQ_MARGIN, GOAL_SI_SDR, GOAL_RTF = 0.3, 8.0, 50.0


def machine(threads: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_model()}, {os.cpu_count()} cores, {threads} threads used, load average {load:.1f} at the start"


def train_probe(
    seconds: float, work: Path, seed: int, model: dict | None = None, augment: dict | None = None,
    voices: int = 1, train: dict | None = None,
) -> tuple[Path, Path, dict]:  # fmt: skip
    """Ingest FSDD speaker-disjoint, `voices` of its five speakers held out, and train the
    scenario's recipe for `seconds` (with `model`'s, `augment`'s and `train`'s settings over the
    preset's); (run, data, summary)."""
    import yaml

    from genforge.core.atomic import write_text
    from genforge.data.ingesters import ingest
    from genforge.scenarios.schema import load_scenario
    from genforge.train.launch import build_trainer

    sc = load_scenario("speech-enhancement")
    data = work / "dataset"
    if not (data / "manifest.json").is_file():
        # FSDD's five voices hold a fifth of the clips each: a val share between (v - 1) / 5 and
        # v / 5 holds out v of them (whole voices move until val holds the share)
        share = {} if voices == 1 else {"val_fraction": (voices - 0.5) / 5}
        ingest(str(FSDD), data, {"seed": seed, **sc.data.options, **share}, modality="audio")
    cfg_file = work / "train-config.yaml"
    write_text(
        cfg_file,
        yaml.safe_dump({"model": {**sc.model.config, **(model or {})},
                        "augment": {**sc.augment, **(augment or {})},
                        "train": {**sc.train.config, **(train or {}), "progress": "none"}}),  # fmt: skip
    )
    trainer = build_trainer(
        work / "run",
        model_name=sc.model.name,
        data=data,
        config_file=cfg_file,
        flags={"max_time": f"{seconds:g}s", "seed": seed},
    )
    summary = trainer.fit()
    return work / "run", data, summary


def reference_clips(data: Path, strings: int, seed: int) -> tuple[Any, Any, Any, list, Any]:
    """(dataset, its reference split, the evaluation config, the split's trimmed clips, their speakers):
    what every enhancement bench scores, so that the same seed gives the same strings and noise."""
    from genforge.data.canonical import open_dataset
    from genforge.evaluate.audio.enhancement import EnhanceEvalConfig, held_out_clips

    dataset = open_dataset(data)
    split = dataset.reference_split
    cfg = EnhanceEvalConfig(strings=strings, kinds=KINDS, snr_db=SNRS, seed=seed)
    clips, speakers = held_out_clips(split, cfg.trim_db, dataset.sample_rate)
    return dataset, split, cfg, clips, speakers


def evaluate_run(run: Path, data: Path, strings: int, seed: int) -> tuple[dict, dict, list[str]]:
    from genforge.evaluate.audio.enhancement import enhancement_metrics, speaker_overlap
    from genforge.models.pipeline import load_pipeline

    pipe = load_pipeline(run)
    dataset, split, cfg, clips, speakers = reference_clips(data, strings, seed)
    values, details = enhancement_metrics(pipe.restore, clips, pipe.sample_rate, cfg, speakers)
    shared = speaker_overlap(dataset, split.name)
    held = (
        sorted({dataset.speaker_names[i] for i in set(split.speakers.tolist()) if i >= 0})
        if split.speakers is not None
        else []
    )
    notes = [
        f"held-out split {split.name!r}: speakers {', '.join(held) or 'unrecorded'}"
        + (f" (SHARED with train: {', '.join(shared)})" if shared else " (none of them in train)")
        + f"; babble: {details['babble_talkers']}"
    ]
    return values, details, notes


def tables(values: dict, details: dict) -> list[str]:
    c = details["conditions"]
    out = [
        "## At 5 dB, per noise type (goal: PESQ gain >= noisereduce's + 0.3, STOI gain >= noisereduce's, "
        "SI-SDR gain >= 8 dB)",
        "",
        "| noise | PESQ noisy | PESQ gain: model | noisereduce | margin (goal >= 0.3) | STOI gain: model | "
        "noisereduce | SI-SDR noisy (dB) | SI-SDR gain: model | noisereduce | goals met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        r = c[f"{kind}_5db"]
        margin = r["pesq_gain"] - r["noisereduce_pesq_gain"]
        met = [
            margin >= GOAL_PESQ_MARGIN,
            r["stoi_gain"] >= r["noisereduce_stoi_gain"],
            r["si_sdr_gain"] >= GOAL_SI_SDR,
        ]
        out.append(
            f"| {kind} | {r['noisy_pesq']:.2f} | {r['pesq_gain']:+.2f} | {r['noisereduce_pesq_gain']:+.2f} | "
            f"{margin:+.2f} | {r['stoi_gain']:+.3f} | {r['noisereduce_stoi_gain']:+.3f} | "
            f"{r['noisy_si_sdr']:.1f} | {r['si_sdr_gain']:+.1f} | {r['noisereduce_si_sdr_gain']:+.1f} | "
            f"{sum(met)}/3 |"
        )
    out += [
        "",
        "## Every noise type and SNR (gains over the noisy input; model / noisereduce)",
        "",
        "| noise | SNR (dB) | PESQ noisy | PESQ gain | STOI noisy | STOI gain | SI-SDR gain (dB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        for snr in SNRS:
            r = c[f"{kind}_{snr:g}db"]
            out.append(
                f"| {kind} | {snr:g} | {r['noisy_pesq']:.2f} | {r['pesq_gain']:+.2f} / "
                f"{r['noisereduce_pesq_gain']:+.2f} | {r['noisy_stoi']:.3f} | {r['stoi_gain']:+.3f} / "
                f"{r['noisereduce_stoi_gain']:+.3f} | {r['si_sdr_gain']:+.1f} / "
                f"{r['noisereduce_si_sdr_gain']:+.1f} |"
            )
    out += [
        "",
        f"Real-time factor (seconds of audio per second of compute, one string at a time; goal >= "
        f"{GOAL_RTF:g}): model {values['rtf']:.0f}, noisereduce {values['noisereduce_rtf']:.0f}.",
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a trained denoiser run (else --train-seconds trains one)")
    ap.add_argument("--data", type=Path, help="its audio dataset (the held-out split is scored)")
    ap.add_argument("--train-seconds", type=float, default=None)
    ap.add_argument("--strings", type=int, default=24, help="digit strings per noise type and SNR")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="keep the probe's dataset and run here")
    ap.add_argument("--held-out-voices", type=int, default=1, choices=[1, 2],
                    help="FSDD voices held out of training (2: each string's babble is the other unheard "
                         "voice's speech; 1, the scenario's split: the same voice's other takes)")  # fmt: skip
    ap.add_argument("--model-set", action="append", default=[], metavar="KEY=YAML",
                    help="a denoiser setting over the preset's (e.g. clean_targets=true); repeatable")  # fmt: skip
    ap.add_argument("--augment-set", action="append", default=[], metavar="OP=YAML",
                    help="a batch augmentation of the clean clips over the preset's (e.g. "
                         "'speed={p: 0.8, factor: [0.85, 1.15]}'); repeatable")  # fmt: skip
    ap.add_argument("--train-set", action="append", default=[], metavar="KEY=YAML",
                    help="a trainer setting over the preset's (e.g. batch_size=8); repeatable")  # fmt: skip
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "enhancement.md")
    args = ap.parse_args()
    from genforge.core.threads import set_wait_policy

    set_wait_policy()  # as `genforge` does before torch and numpy load: idle threads yield their core
    import torch

    torch.set_num_threads(args.threads)
    lines = [f"# Speech enhancement ({datetime.date.today()})", "", f"Machine: {machine(args.threads)}", ""]
    summary = None
    if args.run is None:
        if args.train_seconds is None:
            sys.exit(
                "give --run RUN --data DATASET, or --train-seconds S to train the scenario's recipe first"
            )
        work = args.keep or Path(tempfile.mkdtemp(prefix="genforge-enhance-"))
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        from genforge.train.launch import parse_sets

        sets = parse_sets([f"model.{item}" for item in args.model_set] + [f"augment.{item}" for item in args.augment_set]
                          + [f"train.{item}" for item in args.train_set])  # fmt: skip
        model, augment, train = sets.get("model", {}), sets.get("augment", {}), sets.get("train", {})
        run, data, summary = train_probe(
            args.train_seconds, work, args.seed, model, augment, args.held_out_voices, train
        )
        extra = {**model, **({"augment": augment} if augment else {}), **({"train": train} if train else {})}
        lines.append(
            f"Trained the speech-enhancement scenario's recipe{f' with {extra}' if extra else ''} for "
            f"{args.train_seconds:g} s: "
            f"{summary['step']} steps ({summary['stop_reason']}; {time.perf_counter() - t0:.0f} s with the "
            f"ingest), run {run}."
        )
    else:
        run, data = args.run, args.data
        if data is None:
            sys.exit("--run needs --data (the run's audio dataset)")
    t0 = time.perf_counter()
    values, details, notes = evaluate_run(run, data, args.strings, args.seed)
    lines += [
        *notes,
        f"{details['strings']} digit strings of {min(details['string_seconds']):.1f}-"
        f"{max(details['string_seconds']):.1f} s per condition; scored in {time.perf_counter() - t0:.0f} s.",
        "",
    ]
    lines += tables(values, details)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
