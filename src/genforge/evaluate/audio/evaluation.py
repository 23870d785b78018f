"""`genforge eval` on audio: generated clips (a run, an .npz, a folder of WAVs) against an audio
dataset, scored on the features of the dataset's own evaluator (`evaluator.py`).

Model row: the image metrics, computed on the evaluator's features by the same code
(`evaluate.metrics`: Fréchet distance, KID's MMD, PRDC, classifier score and confidence, per-class
Fréchet distance, conditional accuracy) under their audio names (`fid` -> `fad`, Fréchet Audio
Distance; `kid` -> `kad`; `fid_train`/`fid_gap` -> `fad_train`/`fad_gap`, the train/held-out gap;
`class_fid_mean` -> `class_fad_mean`), the speaker accuracy of speaker-conditional samples, and
the memorisation audit (`evaluate.memorisation`: nearest training clip in feature space and in
raw waveform space, flagged below the held-out clips' 1st-percentile distance; `copy_rate`).

Beside it, as the image benchmark reports them, two rows scored the same way at the same n:
- the real-data control: real clips that are not the reference, so what a perfect generator
  would score (a `test` split when the reference is `val`, else training clips drawn without
  replacement, as the image benchmark's control);
- the memoriser floor: training clips redrawn with replacement, what a model that reproduces its
  training set scores (`fad_memoriser_ratio` = fad / the floor's: issue 10's goal is <= 5).

metrics.json has the images' shape (`format`, `target`, `reference`, `extractor`, `config`, flat
`values` for scenario gates, `metrics` records, `skipped`, `warnings`, `memorisation`, `timing`)
plus `modality: audio` and `baselines` {control, memoriser}, each with its clips' source and values.
With option `target_speaker: NAME` (a voice-cloning run) it adds `target_speaker` and the `target_*`
values: the run's clips for that speaker scored against the speaker's own clips (`target.py`).

Runs whose model has another task (speech enhancement: "restore") are scored by the evaluation
registered for that task in `AUDIO_TASKS`.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_files, write_json
from genforge.core.config import to_dict
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.core.registry import Registry
from genforge.data.canonical import open_dataset
from genforge.evaluate.audio.evaluator import AudioFeatures, evaluator_from_options
from genforge.evaluate.audio.samples import AudioSamples, load_audio_samples
from genforge.evaluate.audio.target import OPTION as TARGET_OPTION
from genforge.evaluate.audio.target import evaluate_target
from genforge.evaluate.evaluate import EVALUATIONS, FORMAT, EvalConfig, compute_metrics, default_out
from genforge.evaluate.memorisation import AuditConfig, audit_space, save_pairs
from genforge.evaluate.metrics.base import EvalInputs, FeatureSet
from genforge.evaluate.stats_cache import reference_features
from genforge.train.privacy import metric_values

AUDIO_N = 500  # clips of an audio evaluation when EvalConfig.n is None

# metric outputs of `evaluate.metrics` -> their audio names; registered metric names likewise
# (`--metric fad` selects the registry's `fid` metric)
OUTPUT_NAMES = {"fid": "fad", "fid_train": "fad_train", "fid_gap": "fad_gap", "kid": "kad",
                "class_fid_mean": "class_fad_mean"}  # fmt: skip
METRIC_NAMES = {
    "fid": "fad",
    "fid_generalisation": "fad_generalisation",
    "kid": "kad",
    "class_fid": "class_fad",
}
SPEAKER_METRIC = "speaker_accuracy"
# what the audio names mean (the report prints these lines); other outputs keep the registry's
MEANINGS = {
    "fad": "Fréchet Audio Distance: Fréchet distance of the evaluator's feature Gaussians to the reference clips; "
           "0 = identical mean and covariance",
    "fad_train": "FAD of the samples against the training clips",
    "fad_gap": "FAD(samples, held-out) - FAD(samples, train): near FAD(held-out, train)'s own gap = generalises; "
               "large = the samples sit closer to the training clips (memorisation)",
    "kad": "kernel audio distance: unbiased squared MMD (KID's cubic kernel) of the evaluator's features to the "
           "reference; ~0 = same distribution",
    "class_fad_mean": "mean over classes of FAD(generated class k, reference class k)",
    "recall": "share of real clips inside the samples' k-NN manifold (diversity); 0..1",
    SPEAKER_METRIC: "evaluator speaker-head accuracy on samples vs the speakers requested; 0..1",
    "copy_rate": "share of samples closer to a training clip (evaluator features) than 99% of held-out clips are: "
                 "~0.01 = generalises, 1 = copies",
}  # fmt: skip

# task of an audio model (GenerativeModel.task) -> fn(target, ref, config, out) -> metrics dict;
# "restore" (speech enhancement) is registered by the module TASK_MODULES names, imported on demand
AUDIO_TASKS: Registry[Callable[..., dict[str, Any]]] = Registry("audio evaluation task")
TASK_MODULES = {"restore": "genforge.evaluate.audio.enhancement"}


def task_evaluation(task: str) -> Callable[..., dict[str, Any]]:
    if task not in AUDIO_TASKS and task in TASK_MODULES:
        importlib.import_module(TASK_MODULES[task])
    if task not in AUDIO_TASKS:
        raise GenforgeError(
            f"no evaluation for audio models of task {task!r}; known: {', '.join(AUDIO_TASKS.names())}"
        )
    return AUDIO_TASKS.get(task)


def model_task(target: Path) -> str:
    """The task of the model of the run at `target` ("generate" for samples files and folders)."""
    info_path = target / "model.json"
    if not (target.is_dir() and info_path.is_file()):
        return "generate"
    from genforge.models.registry import MODELS

    name = json.loads(info_path.read_text()).get("model")
    if name not in MODELS:
        import genforge.models.zoo  # noqa: F401  (registers the families)
    return MODELS.get(name).task if name in MODELS else "generate"


@EVALUATIONS.register("audio")
def evaluate_audio(target: str | Path, ref: str | Path, config: EvalConfig, out: str | Path | None = None
                   ) -> dict[str, Any]:  # fmt: skip
    """Audio: the evaluation of the target's task (`AUDIO_TASKS`; generation unless a run's model restores)."""
    return task_evaluation(model_task(Path(target)))(target, ref, config, out)


def metric_selection(names: list[str] | None) -> tuple[list[str] | None, bool]:
    """(registry metric names, whether speaker accuracy is wanted) for `--metric` names given in
    either naming; None = all."""
    if not names:
        return None, True
    from genforge.evaluate.metrics import METRICS

    back = {v: k for k, v in METRIC_NAMES.items()}
    known = [*METRICS.names_in_order(), *back, SPEAKER_METRIC]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--metric: unknown {', '.join(unknown)}; audio metrics: "
                          f"{', '.join(METRIC_NAMES.get(n, n) for n in METRICS.names_in_order())}, {SPEAKER_METRIC}")  # fmt: skip
    return [back.get(n, n) for n in names if n != SPEAKER_METRIC], SPEAKER_METRIC in names


def audio_records(records: dict[str, Any], warnings: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Registry records and warnings under their audio names and meanings."""
    out = {}
    for name, rec in records.items():
        audio = OUTPUT_NAMES.get(name, name)
        rec = {**rec, "metric": METRIC_NAMES.get(rec["metric"], rec["metric"]),
               "meaning": MEANINGS.get(audio, rec["meaning"]),
               "warnings": [w.replace("FID", "FAD") for w in rec["warnings"]]}  # fmt: skip
        out[audio] = rec
    return out, [w.replace("FID", "FAD") for w in warnings]


def speaker_record(feats: AudioFeatures, speakers: np.ndarray, context: dict[str, Any]) -> dict[str, Any]:
    assert feats.speaker_probs is not None
    pred = feats.speaker_probs.argmax(1)
    per = {str(int(s)): float((pred[speakers == s] == s).mean()) for s in np.unique(speakers)}
    return {"value": float((pred == speakers).mean()), "metric": SPEAKER_METRIC, "better": "higher",
            "meaning": MEANINGS[SPEAKER_METRIC], "details": {"per_speaker": per}, "warnings": [], "seconds": 0.0,
            **context}  # fmt: skip


def score(feats: AudioFeatures, labels: np.ndarray | None, speakers: np.ndarray | None, reference: FeatureSet,
          train: FeatureSet | None, config: EvalConfig, context: dict[str, Any]
          ) -> tuple[dict[str, Any], dict[str, str], list[str]]:  # fmt: skip
    """(records, skipped, warnings) of one row of clips: the registry metrics on the evaluator's
    features under their audio names, and speaker accuracy when speakers were requested."""
    names, want_speakers = metric_selection(config.metrics)
    inputs = EvalInputs(FeatureSet(feats.features, feats.probs, labels), reference, train, config.seed,
                        config.metric_options())  # fmt: skip
    records, skipped, warnings = compute_metrics(inputs, names, context)
    records, warnings = audio_records(records, warnings)
    skipped = {METRIC_NAMES.get(k, k): v for k, v in skipped.items()}
    if want_speakers:
        if speakers is None:
            skipped[SPEAKER_METRIC] = "needs samples with requested speakers (a speaker-conditional run)"
        elif feats.speaker_probs is None:
            skipped[SPEAKER_METRIC] = "needs an evaluator with a speaker head (a dataset that names speakers)"
        else:
            records[SPEAKER_METRIC] = speaker_record(feats, speakers, context)
    return records, skipped, warnings


def copy_rate_record(audit: Any, context: dict[str, Any]) -> dict[str, Any]:
    return {"value": audit.summary["copy_rate"], "metric": "memorisation", "better": "lower",
            "meaning": MEANINGS["copy_rate"], "details": audit.summary, "warnings": [], "seconds": 0.0, **context}  # fmt: skip


def check_ids(samples: AudioSamples, dataset: Any) -> None:
    where = samples.source.get("path")
    if (
        samples.labels is not None
        and len(samples.labels)
        and (samples.labels.min() < 0 or samples.labels.max() >= dataset.num_classes)
    ):
        raise DataError(f"{where}: labels must lie in 0..{dataset.num_classes - 1} (the dataset's classes)")
    if (
        samples.speakers is not None
        and len(samples.speakers)
        and (samples.speakers.min() < 0 or samples.speakers.max() >= max(dataset.num_speakers, 1))
    ):
        raise DataError(
            f"{where}: speakers must lie in 0..{dataset.num_speakers - 1} (the dataset's speakers)"
        )


def baseline_clips(dataset: Any, split: str, n: int, seed: int) -> dict[str, dict[str, Any]]:
    """The control's and the memoriser's clips, labels and speakers (see the module docstring)."""
    rng = np.random.default_rng(seed + 1)
    train = dataset.train_split
    if split == "val" and "test" in dataset.split_names:
        pool, what = dataset.split("test"), "held-out clips of the test split"
    else:
        pool, what = (
            train,
            "training clips drawn without replacement (no held-out split beside the reference)",
        )
    # in draw order, not sorted: a split is stored class by class, and the classifier score (per
    # split of the sample order) reads a class-sorted set as one class per split
    control = rng.choice(len(pool), min(n, len(pool)), replace=False)
    floor = rng.choice(len(train), n, replace=True)
    rows = {
        "control": (pool, control, what),
        "memoriser": (train, floor, "training clips redrawn at random with replacement"),
    }
    out = {}
    for name, (data, idx, description) in rows.items():
        sort = np.argsort(idx, kind="stable")  # sorted reads from the memory map, then back in draw order
        audio = np.empty((len(idx), dataset.clip_length), np.float32)
        audio[sort] = data.audio[idx[sort]]
        out[name] = {"audio": audio, "labels": np.asarray(data.labels)[idx] if data.has_labels else None,
                     "speakers": None if data.speakers is None else np.asarray(data.speakers)[idx],
                     "source": {"description": description, "split": data.name, "count": len(idx)}}  # fmt: skip
    return out


def score_baselines(rows: dict[str, dict[str, Any]], evaluator: Any, reference: FeatureSet, train: FeatureSet,
                    config: EvalConfig, context: dict[str, Any], audit_cfg: AuditConfig) -> dict[str, Any]:  # fmt: skip
    """Each baseline row (`baseline_clips`) scored as the model's, with its feature-space copy rate."""
    out = {}
    for name, row in rows.items():
        feats = evaluator.extract(row["audio"], config.batch_size)
        ctx = {**context, "n_samples": len(row["audio"]), "model_step": None, "ema": None}
        records, _, _ = score(feats, row["labels"], row["speakers"], reference, train, config, ctx)
        audit = audit_space("features", feats.features, train.features, reference.features, audit_cfg)
        records["copy_rate"] = copy_rate_record(audit, ctx)
        out[name] = {**row["source"], "values": {k: v["value"] for k, v in records.items()}}
    return out


@AUDIO_TASKS.register("generate")
def evaluate_generated(target: str | Path, ref: str | Path, config: EvalConfig, out: str | Path | None = None
                       ) -> dict[str, Any]:  # fmt: skip
    """Generated clips (a run directory, an .npz, a folder of audio files) -> metrics.json."""
    t0 = time.perf_counter()
    config = replace(config, n=config.n or AUDIO_N)
    target = Path(target)
    dataset = open_dataset(ref)
    split = config.split or dataset.reference_split.name
    heldout = dataset.split(split)  # fails early, naming the splits, if absent
    if config.features not in (None, "audio-classifier"):
        raise ConfigError(
            f"--features {config.features!r}: audio is scored with the audio-classifier evaluator"
        )
    unknown = sorted(set(config.options) - {TARGET_OPTION})
    if unknown:
        raise ConfigError(f"eval options: audio takes {TARGET_OPTION!r} only, got {', '.join(unknown)}")
    pipe = None
    if (target / "model.json").is_file():
        from genforge.models.pipeline import load_pipeline

        pipe = load_pipeline(target)
    samples = load_audio_samples(target, config.n, config.seed, dataset, pipe)
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    evaluator = evaluator_from_options(dataset, config.extractor_options)
    check_ids(samples, dataset)
    reference, ref_info = reference_features(dataset, split, evaluator, config.batch_size)
    train = None
    if "train" in dataset.split_names and split != "train":
        train, _ = reference_features(dataset, "train", evaluator, config.batch_size)
    feats = evaluator.extract(samples.audio, config.batch_size)
    t_feat = time.perf_counter() - t1
    context = {"n_samples": len(samples.audio), "n_reference": len(reference), "extractor": evaluator.id,
               "extractor_hash": evaluator.hash, "preprocessing": evaluator.preprocess.describe(),
               "reference_split": split, "reference_fingerprint": dataset.fingerprint,
               "model_step": samples.source.get("step"), "ema": samples.source.get("ema"), "seed": config.seed}  # fmt: skip
    t2 = time.perf_counter()
    records, skipped, warnings = score(
        feats, samples.labels, samples.speakers, reference, train, config, context
    )
    warnings = samples.warnings + warnings
    baselines: dict[str, Any] = {}
    audit_cfg = AuditConfig()
    if train is not None:
        rows = baseline_clips(dataset, split, len(samples.audio), config.seed)
        baselines = score_baselines(rows, evaluator, reference, train, config, context, audit_cfg)
    else:
        skipped["baselines"] = (
            f"the control and memoriser rows need a train split beside the reference split {split!r}"
        )
    t_metrics = time.perf_counter() - t2
    skipped["membership"] = "the membership-inference audit reads image and text models only"
    if config.utility.enabled:
        warnings.append("--tstr: train-on-synthetic utility is not computed for audio")
    out_path = Path(out) if out else default_out(target)
    result: dict[str, Any] = {
        "format": FORMAT,
        "modality": "audio",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "target": samples.source,
        "reference": {
            "dataset": str(Path(ref).resolve()),
            "sample_rate": dataset.sample_rate,
            "clip_length": dataset.clip_length,
            **ref_info,
            "count": len(heldout),
        },  # fmt: skip
        "extractor": evaluator.describe(),
        "config": to_dict(config),
    }
    with atomic_files(out_path.parent, out_path.name) as stage:
        if config.memorisation and train is not None:
            t3 = time.perf_counter()
            train_audio = np.array(dataset.train_split.audio)  # writable: torch reads it
            spaces = {"features": audit_space("features", feats.features, train.features, reference.features,
                                              audit_cfg),
                      "waveform": audit_space("waveform", samples.audio, train_audio, np.array(heldout.audio),
                                              audit_cfg)}  # fmt: skip
            pairs = out_path.with_name(out_path.stem + ".pairs.npz")
            save_pairs(stage / pairs.name, spaces, samples.audio, train_audio, audit_cfg.pairs)
            result["memorisation"] = {**{s: a.summary for s, a in spaces.items()}, "pairs_file": pairs.name,
                                      "heldout_split": split, "seconds": round(time.perf_counter() - t3, 3)}  # fmt: skip
            records["copy_rate"] = copy_rate_record(spaces["features"], context)
        elif not config.memorisation:
            skipped["memorisation"] = "turned off (--no-memorisation)"
        values = {k: v["value"] for k, v in records.items()}
        if config.options.get(TARGET_OPTION):  # a voice-cloning run: its target speaker's own scores
            others = None if samples.speakers is None or feats.speaker_probs is None else (
                samples.speakers, feats.speaker_probs.argmax(1))  # fmt: skip
            result["target_speaker"] = evaluate_target(pipe, dataset, evaluator, reference, train, split, config,
                                                       str(config.options[TARGET_OPTION]), others)  # fmt: skip
            values.update(result["target_speaker"]["values"])
        if "fad" in values and baselines:
            values["fad_control"] = baselines["control"]["values"].get("fad")
            values["fad_memoriser"] = baselines["memoriser"]["values"].get("fad")
            if values["fad_memoriser"]:
                values["fad_memoriser_ratio"] = values["fad"] / values["fad_memoriser"]
        # a differentially private run's guarantee (model.json `privacy`) beside its metrics
        values.update(metric_values(samples.source.get("privacy")))
        result.update({"values": values, "metrics": records, "baselines": baselines, "skipped": skipped,
                       "warnings": warnings, "privacy": samples.source.get("privacy")})  # fmt: skip
        result["timing"] = {"samples_s": round(t_gen, 3), "features_s": round(t_feat, 3),
                            "metrics_s": round(t_metrics, 3), "total_s": round(time.perf_counter() - t0, 3)}  # fmt: skip
        write_json(stage / out_path.name, result)
    return result
