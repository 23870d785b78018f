"""A denoiser run scored on the voices it trained on, beside its held-out voices: SI-SDR, PESQ and
STOI gains at 5 dB per voice and noise type, on digit strings built as `genforge eval` and
bench/enhancement.py build them. The training voices' rows are what the run fits on clips it has
heard; the gap to the held-out rows is what generalising to a new voice costs.

    PYTHONPATH=src .venv/bin/python bench/seen_voices.py RUN DATASET [--seed 8] [--strings 24]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genforge.core.threads import configure
from genforge.data.canonical import open_dataset
from genforge.evaluate.audio.enhancement import (
    EnhanceEvalConfig,
    condition_key,
    enhancement_metrics,
    held_out_clips,
)
from genforge.models.pipeline import load_pipeline

KINDS = ["white", "pink", "babble"]
SNR = 5.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a trained denoiser run")
    ap.add_argument("data", type=Path, help="its audio dataset, with speakers recorded")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strings", type=int, default=24, help="digit strings per voice and noise type")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    configure(args.threads)
    pipe = load_pipeline(args.run)
    dataset = open_dataset(args.data)
    cfg = EnhanceEvalConfig(
        strings=args.strings, kinds=KINDS, snr_db=[SNR], seed=args.seed, noisereduce=False
    )
    print("| split | voice | clips | SI-SDR gain white / pink / babble (dB) | PESQ gain | STOI gain |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ["train", dataset.reference_split.name]:
        split = dataset.split(name)
        if split.speakers is None:
            raise SystemExit(f"{args.data}: split {name!r} records no speakers; this script compares voices")
        clips, speakers = held_out_clips(split, cfg.trim_db, dataset.sample_rate)
        for speaker in sorted(set(split.speakers.tolist()) - {-1}):
            # one voice's clips alone: its strings and its babble (its own other takes)
            voice = [c for c, v in zip(clips, speakers, strict=True) if v == speaker]
            _, details = enhancement_metrics(pipe.restore, voice, pipe.sample_rate, cfg)
            cells = [details["conditions"][condition_key(kind, SNR)] for kind in KINDS]
            gains = [" / ".join(fmt.format(c[f"{s}_gain"]) for c in cells)
                     for s, fmt in (("si_sdr", "{:+.1f}"), ("pesq", "{:+.2f}"), ("stoi", "{:+.3f}"))]  # fmt: skip
            print(
                f"| {name} | {dataset.speaker_names[speaker]} | {int((split.speakers == speaker).sum())} | "
                f"{' | '.join(gains)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
