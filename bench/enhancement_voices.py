"""Score trained denoiser runs on every voice of their dataset, the voices they trained on included
(issue 11): is the SI-SDR shortfall on an unheard voice a failure to generalise, or to fit?

    PYTHONPATH=src .venv/bin/python bench/enhancement_voices.py --data DATASET RUN [RUN ...]
        [--strings 12] [--snr 5] [--out /tmp/voices.md]

DATASET is the runs' audio dataset (`bench/enhancement.py --keep DIR` leaves it in DIR/dataset).
For each run and voice: digit strings of that voice's clips from every split, mixed with white,
pink and babble noise by `genforge eval`'s own code (`enhancement_metrics`, seed 0, noisereduce
off), one voice at a time, so a string's babble is made of the same voice's other takes, as in
`bench/enhancement.py`'s one-voice split (the scenario's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from common import emit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="trained denoiser runs")
    ap.add_argument("--data", type=Path, required=True, help="their audio dataset")
    ap.add_argument("--strings", type=int, default=12, help="digit strings per voice and noise type")
    ap.add_argument("--snr", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from genforge.core.threads import set_wait_policy

    set_wait_policy()
    import torch

    from genforge.data.canonical import open_dataset
    from genforge.evaluate.audio.enhancement import (
        EnhanceEvalConfig,
        condition_key,
        enhancement_metrics,
        held_out_clips,
    )
    from genforge.models.pipeline import load_pipeline

    torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data)
    kinds = ["white", "pink", "babble"]
    cfg = EnhanceEvalConfig(strings=args.strings, kinds=kinds, snr_db=[args.snr], noisereduce=False, seed=0)
    # trimmed as the evaluation trims them (its config's trim_db)
    parts = [held_out_clips(dataset.split(name), cfg.trim_db, dataset.sample_rate) for name in dataset.split_names]
    clips = [clip for part in parts for clip in part[0]]
    speakers = np.concatenate([part[1] for part in parts])
    if (speakers < 0).any():
        sys.exit(f"{args.data}: the dataset records no speaker for some clips; per-voice scores need them all")
    train = set(dataset.split("train").speakers.tolist())
    lines = [
        f"SI-SDR gain (dB) at {args.snr:g} dB, {args.strings} digit strings per voice and noise, babble of the "
        "voice's own other takes",
        "",
        "| run | voice | in training | " + " | ".join(kinds) + " |",
        "| --- | --- | --- |" + " ---: |" * len(kinds),
    ]
    for run in args.runs:
        pipe = load_pipeline(run)
        for voice in sorted(set(speakers.tolist())):
            mine = np.flatnonzero(speakers == voice)
            values, _ = enhancement_metrics(pipe.restore, [clips[i] for i in mine], pipe.sample_rate, cfg, speakers[mine])
            lines.append(
                f"| {run} | {dataset.speaker_names[voice]} | {'yes' if voice in train else 'no'} | "
                + " | ".join(f"{values[condition_key(k, args.snr) + '_si_sdr_gain']:+.1f}" for k in kinds)
                + " |"
            )
            print(lines[-1], flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
