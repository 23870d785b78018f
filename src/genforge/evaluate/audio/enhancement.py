"""Speech enhancement metrics: how much a restoration run (task "restore", e.g. `denoiser`)
improves noisy speech, beside `noisereduce` (spectral gating with its defaults, the tool users
reach for) as the baseline to beat.

Test material: held-out clips (the reference split; speaker-disjoint when the ingest grouped the
splits by speaker, which `details.speaker_disjoint` records and a warning flags otherwise),
trimmed of silence and joined into digit STRINGS of at least `min_seconds` (2.5 s) with short
silences between digits, like a spoken phone number: single FSDD clips (0.45 s on average) leave
STOI too few frames after its silence removal. Where the split records speakers, each string is one
voice's, the voices taking turns. Each string is corrupted with each noise kind at each SNR
(audio/noise.py), seeded, then scored three ways against the clean string. Babble is made of other
held-out clips than the string's own: of the other held-out voices where the split holds two or
more (the babble the issue means: other people talking, voices the model never heard either),
else of the same voice's other takes, a harder case (`details.babble_talkers` says which):

- PESQ, ITU-T P.862 narrow-band (the `pesq` package; 8 kHz, the audio resampled when the run's
  rate differs), STOI (`pystoi`), SI-SDR (audio/sdr.py),
- for the noisy input, the model's output and noisereduce's output.

Headline values (metrics.json `values`) are means over the noise kinds at `headline_snr` (5 dB):
`pesq_gain`, `stoi_gain`, `si_sdr_gain` (model minus noisy input), `noisereduce_*_gain`,
`pesq_gain_over_noisereduce` and `stoi_gain_over_noisereduce` (the goal's margins), the scores
themselves (`noisy_pesq`, `restored_pesq`, `noisereduce_pesq`, ...), and real-time factors (`rtf`,
`noisereduce_rtf`: seconds of audio processed per second of compute, one string at a time). Every
condition also has its own keys: `KIND_SNRdb_METRIC`, e.g. `babble_0db_pesq_gain`.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.audio.noise import make_noise, mix_at_snr
from genforge.audio.resample import resample
from genforge.audio.sdr import si_sdr
from genforge.core.atomic import write_json
from genforge.core.config import from_dict, to_dict
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.data.canonical import open_dataset
from genforge.evaluate.audio.evaluation import AUDIO_TASKS
from genforge.evaluate.evaluate import FORMAT, EvalConfig, default_out

PESQ_RATE = 8000  # narrow-band PESQ is defined at 8 kHz
SCORES = ("pesq", "stoi", "si_sdr")
METHODS = ("noisy", "restored", "noisereduce")


@dataclass
class EnhanceEvalConfig:
    strings: int = 24  # digit strings per (noise kind, SNR)
    min_seconds: float = 2.5
    gap_seconds: tuple[float, float] = (0.1, 0.25)  # silence between digits
    kinds: list[str] = field(default_factory=lambda: ["white", "pink", "babble"])
    snr_db: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0])
    headline_snr: float = 5.0
    noisereduce: bool = True
    trim_db: float = 40.0  # a clip's edges quieter than its loudest 10 ms by this much are silence
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strings < 1 or self.min_seconds <= 0 or not 0 <= self.gap_seconds[0] <= self.gap_seconds[1]:
            raise ConfigError("enhancement: strings >= 1, min_seconds > 0, 0 <= gap low <= gap high")
        if not self.kinds or not self.snr_db:
            raise ConfigError("enhancement: list at least one noise kind and one SNR")
        if self.headline_snr not in self.snr_db:
            raise ConfigError(
                f"enhancement.headline_snr {self.headline_snr:g} is not one of snr_db {self.snr_db}"
            )

    @classmethod
    def from_options(cls, options: dict[str, Any], seed: int) -> EnhanceEvalConfig:
        return from_dict(cls, {"seed": seed, **options}, where="evaluate.options")


def trim_silence(clip: np.ndarray, sample_rate: int, top_db: float = 40.0) -> np.ndarray:
    """`clip` without its leading and trailing stretches quieter than its loudest 10 ms frame by
    more than `top_db`."""
    hop = max(1, sample_rate // 100)
    frames = len(clip) // hop
    if frames < 2:
        return clip
    rms = np.sqrt((clip[: frames * hop].reshape(frames, hop).astype(np.float64) ** 2).mean(1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-top_db / 20))
    if not len(loud) or rms.max() == 0:
        return clip[:0]
    return clip[loud[0] * hop : (loud[-1] + 1) * hop]


@dataclass
class DigitString:
    clean: np.ndarray  # float32 (T,)
    members: list[int]  # indices of the clips it is made of
    voice: int = -1  # the speaker id of its clips (-1: one pool, a single voice or speakers unrecorded)


def voices_of(speakers: np.ndarray | None) -> list[int]:
    """The known speaker ids among `speakers`, when there are two or more (else [], one pool)."""
    known = [] if speakers is None else sorted(set(np.asarray(speakers).tolist()) - {-1})
    return known if len(known) >= 2 else []


def babble_talkers(speakers: np.ndarray | None) -> str:
    """Whose speech the babble of `enhancement_metrics` is made of, for the record."""
    if voices_of(speakers):
        return "other held-out voices"
    if speakers is not None and (np.asarray(speakers) >= 0).any():
        return "the same voice's other takes (the reference split holds one voice)"
    return "other held-out clips (speakers unrecorded)"


def digit_strings(
    clips: list[np.ndarray],
    n: int,
    sample_rate: int,
    min_seconds: float,
    gap_seconds: tuple[float, float],
    rng: np.random.Generator,
    speakers: np.ndarray | None = None,
) -> list[DigitString]:
    """n strings of distinct random clips joined by random silences, each >= min_seconds long.
    With `speakers` (each clip's id) naming two or more voices, string k is voice k mod V's alone."""
    voices = voices_of(speakers) or [-1]
    pools = [np.flatnonzero(np.asarray(speakers) == v) if v >= 0 else np.arange(len(clips)) for v in voices]
    for v, pool in zip(voices, pools, strict=True):
        total = sum(len(clips[i]) for i in pool)
        if total < min_seconds * sample_rate:
            whose = f" of speaker {v}" if v >= 0 else ""
            raise DataError(
                f"the held-out clips{whose} hold {total / sample_rate:.1f} s of speech; a digit string "
                f"needs {min_seconds:g} s"
            )
    out = []
    for k in range(n):
        voice, pool = voices[k % len(voices)], pools[k % len(voices)]
        order = pool[rng.permutation(len(pool))]
        parts, members, length = [], [], 0
        for i in order:
            if length >= min_seconds * sample_rate:
                break
            if parts:
                gap = np.zeros(int(rng.uniform(*gap_seconds) * sample_rate), np.float32)
                parts.append(gap)
                length += len(gap)
            parts.append(clips[i])
            members.append(int(i))
            length += len(clips[i])
        out.append(DigitString(np.concatenate(parts).astype(np.float32), members, voice))
    return out


def babble_pool(
    clips: list[np.ndarray],
    exclude: list[int],
    length: int,
    rows: int,
    rng: np.random.Generator,
    speakers: np.ndarray | None = None,
    voice: int = -1,
) -> torch.Tensor:
    """`rows` talkers (rows, length), each other clips than `exclude` back to back: the speech
    babble noise is cut from. With `speakers` and a `voice` (the string's), only the other voices'
    clips talk."""
    others = set(exclude)
    if speakers is not None and voice >= 0:
        others |= set(np.flatnonzero(np.asarray(speakers) == voice).tolist())
    allowed = np.array([i for i in range(len(clips)) if i not in others])
    if not len(allowed):
        raise DataError(
            "babble needs held-out clips beside the string's own; the reference split is too small"
        )
    pool = np.zeros((rows, length), np.float32)
    for r in range(rows):
        pos = 0
        while pos < length:
            clip = clips[int(rng.choice(allowed))][: length - pos]
            pool[r, pos : pos + len(clip)] = clip
            pos += len(clip)
    return torch.from_numpy(pool)


def pesq_nb(clean: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    """Narrow-band PESQ (MOS-LQO); NaN when PESQ finds no speech in the reference."""
    from pesq import NoUtterancesError, pesq

    if sample_rate != PESQ_RATE:
        clean, degraded = resample(clean, sample_rate, PESQ_RATE), resample(degraded, sample_rate, PESQ_RATE)
    try:
        return float(pesq(PESQ_RATE, clean.astype(np.float32), degraded.astype(np.float32), "nb"))
    except NoUtterancesError:
        return float("nan")


def stoi(clean: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(clean.astype(np.float64), degraded.astype(np.float64), sample_rate, extended=False))


def si_sdr_db(clean: np.ndarray, degraded: np.ndarray) -> float:
    return float(
        si_sdr(torch.from_numpy(clean.astype(np.float64)), torch.from_numpy(degraded.astype(np.float64)))
    )


def score(clean: np.ndarray, degraded: np.ndarray, sample_rate: int) -> dict[str, float]:
    return {
        "pesq": pesq_nb(clean, degraded, sample_rate),
        "stoi": stoi(clean, degraded, sample_rate),
        "si_sdr": si_sdr_db(clean, degraded),
    }


def noisereduce_baseline(noisy: np.ndarray, sample_rate: int) -> np.ndarray:
    """noisereduce's spectral gating with its defaults (non-stationary off), as users call it."""
    import noisereduce

    return np.asarray(noisereduce.reduce_noise(y=noisy, sr=sample_rate), dtype=np.float32)


def held_out_clips(split: Any, trim_db: float, sample_rate: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The split's clips trimmed of silence, padding included wherever the ingest put it (so
    `lengths` is not needed), and each one's speaker id (-1 where the split records none); clips
    with nothing left are dropped."""
    clips = [
        trim_silence(np.asarray(split.audio[i], np.float32), sample_rate, trim_db) for i in range(len(split))
    ]
    recorded = getattr(split, "speakers", None)
    ids = np.full(len(clips), -1, np.int64) if recorded is None else np.asarray(recorded, np.int64)
    keep = [i for i, c in enumerate(clips) if len(c)]
    return [clips[i] for i in keep], ids[keep]


def speaker_overlap(dataset: Any, split_name: str) -> list[str]:
    """Names of the reference split's speakers also in train ([] when disjoint or unrecorded)."""
    names = list(getattr(dataset, "speaker_names", []) or [])
    if "train" not in dataset.split_names or split_name == "train":
        return names
    ref, train = dataset.split(split_name).speakers, dataset.split("train").speakers
    if ref is None or train is None:
        return []
    shared = sorted(set(ref[ref >= 0].tolist()) & set(train[train >= 0].tolist()))
    return [names[i] if i < len(names) else str(i) for i in shared]


def condition_key(kind: str, snr: float) -> str:
    return f"{kind}_{snr:g}db".replace("-", "m").replace(".", "p")


def enhancement_metrics(
    restore: Callable[[np.ndarray], np.ndarray],
    clips: list[np.ndarray],
    sample_rate: int,
    cfg: EnhanceEvalConfig,
    speakers: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Score `restore` (float32 (1, T) -> (1, T) at `sample_rate`) on digit strings of `clips`
    (`speakers`: each clip's speaker id, -1 unknown); returns (values, details) as described in the
    module doc."""
    rng = np.random.default_rng(cfg.seed)
    strings = digit_strings(
        clips, cfg.strings, sample_rate, cfg.min_seconds, tuple(cfg.gap_seconds), rng, speakers
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    raw: dict[str, dict[str, list[float]]] = {}
    seconds = {"restored": 0.0, "noisereduce": 0.0}
    audio_s = 0.0
    for kind in cfg.kinds:
        for snr in cfg.snr_db:
            cell = raw.setdefault(condition_key(kind, snr), {f"{m}_{s}": [] for m in METHODS for s in SCORES})
            for string in strings:
                clean = torch.from_numpy(string.clean)[None]
                pool = (
                    babble_pool(clips, string.members, clean.shape[1], 6, rng, speakers, string.voice)
                    if kind == "babble"
                    else None
                )
                noise = make_noise(kind, 1, clean.shape[1], sample_rate, gen, pool)
                noisy = mix_at_snr(clean, noise, snr).numpy()
                outputs = {"noisy": noisy[0]}
                t0 = time.perf_counter()
                outputs["restored"] = np.asarray(restore(noisy), np.float32)[0]
                seconds["restored"] += time.perf_counter() - t0
                if cfg.noisereduce:
                    t0 = time.perf_counter()
                    outputs["noisereduce"] = noisereduce_baseline(noisy[0], sample_rate)
                    seconds["noisereduce"] += time.perf_counter() - t0
                audio_s += clean.shape[1] / sample_rate
                for method, wave in outputs.items():
                    for name, value in score(string.clean, wave, sample_rate).items():
                        cell[f"{method}_{name}"].append(value)
    values: dict[str, float] = {}
    per_condition: dict[str, dict[str, float]] = {}
    for key, cell in raw.items():
        means = {name: float(np.nanmean(v)) for name, v in cell.items() if v}
        for s in SCORES:
            means[f"{s}_gain"] = means[f"restored_{s}"] - means[f"noisy_{s}"]
            if cfg.noisereduce:
                means[f"noisereduce_{s}_gain"] = means[f"noisereduce_{s}"] - means[f"noisy_{s}"]
        per_condition[key] = means
        values.update({f"{key}_{name}": v for name, v in means.items()})
    headline = [per_condition[condition_key(k, cfg.headline_snr)] for k in cfg.kinds]
    for name in headline[0]:
        values[name] = float(np.mean([h[name] for h in headline]))
    if cfg.noisereduce:
        for s in ("pesq", "stoi"):  # issue 11's goal compares the model's gain with noisereduce's
            values[f"{s}_gain_over_noisereduce"] = values[f"{s}_gain"] - values[f"noisereduce_{s}_gain"]
    values["rtf"] = audio_s / max(seconds["restored"], 1e-9)
    if cfg.noisereduce:
        values["noisereduce_rtf"] = audio_s / max(seconds["noisereduce"], 1e-9)
    pesq_missing = sum(
        int(np.isnan(v).sum()) for c in raw.values() for n, v in c.items() if n.endswith("_pesq")
    )
    voices = voices_of(speakers)
    details = {
        "strings": len(strings),
        "voices": len(voices) or 1,
        "babble_talkers": babble_talkers(speakers),
        "string_seconds": [round(len(s.clean) / sample_rate, 3) for s in strings],
        "conditions": per_condition,
        "headline_snr": cfg.headline_snr,
        "kinds": list(cfg.kinds),
        "snr_db": list(cfg.snr_db),
        "pesq_no_utterance": pesq_missing,
        "process_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "audio_seconds": round(audio_s, 3),
    }
    return values, details


OUTPUTS = {  # the headline values a scenario gates on, and what they mean
    "pesq_gain": "PESQ (narrow-band MOS-LQO, 1-4.5) of the model's output minus the noisy input's",
    "stoi_gain": "STOI (0-1 intelligibility) of the model's output minus the noisy input's",
    "si_sdr_gain": "SI-SDR (dB) of the model's output minus the noisy input's",
    "noisereduce_pesq_gain": "PESQ gain of noisereduce's spectral gating (defaults): the baseline to beat",
    "noisereduce_stoi_gain": "STOI gain of noisereduce's spectral gating (defaults)",
    "noisereduce_si_sdr_gain": "SI-SDR gain (dB) of noisereduce's spectral gating (defaults)",
    "pesq_gain_over_noisereduce": "pesq_gain - noisereduce_pesq_gain: how much more the model lifts PESQ",
    "stoi_gain_over_noisereduce": "stoi_gain - noisereduce_stoi_gain",
    "rtf": "real-time factor of the model: seconds of audio restored per second of compute",
    "noisereduce_rtf": "real-time factor of noisereduce",
}


def _records(values: dict[str, float], count: int, context: dict[str, Any]) -> dict[str, Any]:
    records = {}
    for name, value in values.items():
        if "db_" in name:  # per-condition values live in `values` and `details.conditions`
            continue
        meaning = (
            OUTPUTS.get(name) or f"{name.replace('_', ' ')} at the headline SNR, mean over the noise kinds"
        )
        # every score here (PESQ, STOI, SI-SDR, their gains, speed) is better higher
        records[name] = {
            "value": value,
            "metric": "enhancement",
            "better": "higher",
            "meaning": meaning,
            "n_samples": count,
            **context,
        }
    return records


@AUDIO_TASKS.register("restore")
def evaluate_enhancement(target: str | Path, ref: str | Path, config: EvalConfig,
                         out: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """A speech-enhancement run against the held-out split of audio dataset `ref` -> metrics.json
    (see the module doc). `config.n` sets the number of digit strings; `config.options` the
    fields of `EnhanceEvalConfig`."""
    from genforge.models.pipeline import load_pipeline

    t0 = time.perf_counter()
    options = dict(config.options)
    if config.n is not None:
        options.setdefault("strings", int(config.n))
    cfg = EnhanceEvalConfig.from_options(options, config.seed)
    target = Path(target)
    if not (target / "model.json").is_file():
        raise GenforgeError(f"{target}: speech enhancement is evaluated on a run directory (with model.json)")
    pipe = load_pipeline(target)
    dataset = open_dataset(ref)
    split = dataset.split(config.split) if config.split else dataset.reference_split
    rate = pipe.sample_rate
    clips, speakers = held_out_clips(split, cfg.trim_db, dataset.sample_rate)
    warnings = [
        f"{name}: an option of generative evaluation, ignored for speech enhancement"
        for name in ("features", "metrics")
        if getattr(config, name)
    ]
    if dataset.sample_rate != rate:
        clips = [resample(c, dataset.sample_rate, rate) for c in clips]
        warnings.append(f"held-out clips resampled from {dataset.sample_rate} Hz to the model's {rate} Hz")
    shared = speaker_overlap(dataset, split.name)
    if shared:
        warnings.append(
            f"the reference split {split.name!r} shares speakers with train ({', '.join(shared)}): "
            "these scores are not on unheard voices; ingest with --group-by speaker for that"
        )
    values, details = enhancement_metrics(pipe.restore, clips, rate, cfg, speakers)
    details["speaker_disjoint"] = not shared
    if details["pesq_no_utterance"]:
        warnings.append(
            f"PESQ found no utterance in {details['pesq_no_utterance']} scored outputs (left out)"
        )
    context = {"reference_split": split.name, "reference_fingerprint": dataset.fingerprint,
               "model_step": pipe.info.get("step"), "ema": pipe.info.get("ema"), "seed": cfg.seed}  # fmt: skip
    out_path = Path(out) if out else default_out(target)
    result: dict[str, Any] = {
        "format": FORMAT,
        "modality": "audio",
        "task": "restore",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "target": {
            "kind": "run",
            "path": str(target.resolve()),
            "model": pipe.name,
            "step": pipe.info.get("step"),
            "ema": pipe.info.get("ema"),
        },
        "reference": {
            "dataset": str(Path(ref).resolve()),
            "split": split.name,
            "count": len(split),
            "clips_scored": len(clips),
            "fingerprint": dataset.fingerprint,
            "sample_rate": dataset.sample_rate,
        },
        "extractor": {
            "id": "pesq-nb/pystoi/si-sdr (no feature extractor)",
            "hash": "-",
            "preprocessing": {"pesq": f"narrow-band at {PESQ_RATE} Hz", "stoi": "pystoi, classic"},
        },
        "config": {
            **to_dict(config),
            "enhancement": to_dict(cfg),
            "training_noise": to_dict(pipe.model.config.noise)
            if hasattr(pipe.model.config, "noise")
            else None,
        },
        "values": values,
        "metrics": _records(values, details["strings"], context),
        "details": details,
        "skipped": {}
        if cfg.noisereduce
        else {"noisereduce": "turned off (evaluate.options.noisereduce: false)"},
        "warnings": warnings,
        "timing": {"total_s": round(time.perf_counter() - t0, 3)},
    }
    write_json(out_path, result)
    return result
