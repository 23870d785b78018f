"""Orchestration: a run directory or a samples.npz against a reference dataset -> metrics.json.

Every metric entry records what makes two numbers comparable: sample and reference counts, the
extractor (id, hash, preprocessing), the reference split and dataset fingerprint, and the
model's step and whether its EMA weights were used.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import atomic_files, write_json
from genforge.core.config import to_dict
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.core.lock import DirLock
from genforge.core.modality import DEFAULT as DEFAULT_MODALITY
from genforge.core.modality import lookup, modality_registry
from genforge.data.canonical import CanonicalDataset, open_dataset, read_manifest
from genforge.evaluate.extractors.base import FeatureExtractor, build_extractor, default_extractor
from genforge.evaluate.memorisation import AuditConfig, audit, save_pairs
from genforge.evaluate.metrics.base import METRICS, EvalInputs, FeatureSet, metric_record
from genforge.evaluate.privacy.config import MembershipConfig, UtilityConfig
from genforge.evaluate.privacy.images import image_privacy
from genforge.evaluate.samples import VALUE_RANGES, normalise_samples, read_array_file, read_folder
from genforge.evaluate.stats_cache import reference_features
from genforge.train.privacy import metric_values

FORMAT = "genforge-metrics"
IMAGE_N = 10000  # samples of an image evaluation when EvalConfig.n is None
GENERATE_CHUNK = 500


@dataclass
class EvalConfig:
    n: int | None = None  # samples; None: the modality's default (images IMAGE_N, text 64 completions)
    features: str | None = None  # extractor spec; default: classifier if labelled, else contrastive
    seed: int = 0
    batch_size: int = 500
    split: str | None = None  # reference split; default val, else test
    metrics: list[str] | None = None  # default: all registered
    memorisation: bool = True
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prdc_k: int = 5
    is_splits: int = 10
    extractor_options: dict[str, Any] = field(default_factory=dict)
    samples_range: str = "auto"  # float sample arrays: auto (see evaluate.samples), 0,1, -1,1 or 0,255
    # the modality's own settings, checked by it (text: evaluate.text.TextEvalConfig's fields)
    options: dict[str, Any] = field(default_factory=dict)
    utility: UtilityConfig = field(default_factory=UtilityConfig)  # TSTR/TRTR (evaluate/privacy)
    membership: MembershipConfig = field(default_factory=MembershipConfig)  # membership-inference audit

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 2:
            raise ValueError("n must be >= 2")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.samples_range.replace(" ", "") not in VALUE_RANGES:
            raise ValueError(
                f"samples_range must be one of {', '.join(VALUE_RANGES)}, got {self.samples_range!r}"
            )

    def metric_options(self) -> dict[str, Any]:
        return {"kid_subsets": self.kid_subsets, "kid_subset_size": self.kid_subset_size,
                "prdc_k": self.prdc_k, "is_splits": self.is_splits}  # fmt: skip


@dataclass
class Samples:
    images: np.ndarray  # uint8 (N,H,W,C)
    labels: np.ndarray | None  # requested classes (conditional) or None
    source: dict[str, Any]  # kind, path, model, step, ema


def read_npz(
    path: Path, n: int | None = None, value_range: str = "auto", channels: int | None = None
) -> Samples:
    """Samples from a .npz or .npy file, in any layout and value range `normalise_samples` reads."""
    images, labels = read_array_file(path, n)
    images, read = normalise_samples(images, str(path), value_range, channels)
    kind = path.suffix.lower().lstrip(".")
    return Samples(
        images, labels, {"kind": kind, "path": str(path.resolve()), "step": None, "ema": None, **read}
    )


def read_image_folder(path: Path, n: int | None = None, channels: int | None = None) -> Samples:
    """Samples from a folder of image files (as torch-fidelity and clean-fid take them)."""
    images, read = normalise_samples(read_folder(path, n, channels), str(path), channels=channels)
    return Samples(
        images, None, {"kind": "folder", "path": str(path.resolve()), "step": None, "ema": None, **read}
    )


def generate_from_run(run_dir: Path, n: int, seed: int) -> Samples:
    from genforge.models.pipeline import load_pipeline

    pipe = load_pipeline(run_dir)
    if getattr(pipe.model, "task", "generate") != "generate":
        raise GenforgeError(f"{run_dir}: model {pipe.name!r} restores images rather than generating them; "
                            "evaluate its outputs as a samples .npz")  # fmt: skip
    labels = pipe.class_labels(n) if pipe.conditional else None
    chunks = []
    # chunked so memory stays bounded; chunk i uses seed + i, so the set depends only on (n, seed)
    for i, start in enumerate(range(0, n, GENERATE_CHUNK)):
        stop = min(n, start + GENERATE_CHUNK)
        images, _ = pipe.generate(
            stop - start, seed=seed + i, labels=None if labels is None else labels[start:stop]
        )
        chunks.append(images)
    info = pipe.info
    source = {"kind": "run", "path": str(run_dir.resolve()), "model": info.get("model"), "family": info.get("family"),
              "step": info.get("step"), "ema": info.get("ema"), "conditional": pipe.conditional,
              "privacy": info.get("privacy")}  # fmt: skip
    return Samples(np.concatenate(chunks), labels, source)


def load_samples(
    target: str | Path, n: int, seed: int, value_range: str = "auto", channels: int | None = None
) -> Samples:
    """Generated by a run directory, or read from a samples .npz/.npy or a folder of images
    (`channels`: the reference's, which files and arrays of the other kind are converted to)."""
    target = Path(target)
    if target.is_file() and target.suffix.lower() in (".npz", ".npy"):
        return read_npz(target, n, value_range, channels)
    if target.is_dir():
        if (target / "model.json").is_file():
            return generate_from_run(target, n, seed)
        return read_image_folder(target, n, channels)
    raise GenforgeError(
        f"{target}: expected a run directory (with model.json), a samples .npz/.npy file or a folder of images"
    )


def compute_metrics(
    inputs: EvalInputs, names: list[str] | None, context: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(records per output name, skipped metric -> reason, warnings) for the metrics in `names`."""
    import genforge.evaluate.metrics  # noqa: F401  (registers the built-in metrics)

    records: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    warnings: list[str] = []
    for name in names or METRICS.names_in_order():
        metric = METRICS.get(name)
        missing = metric.missing(inputs)
        if missing:
            skipped[name] = "needs " + " and ".join(missing)
            continue
        start = time.perf_counter()
        result = metric.compute(inputs)
        seconds = round(time.perf_counter() - start, 4)
        warnings += result.warnings
        for out, value in result.values.items():
            records[out] = metric_record(value, name, metric.outputs[out], result.details, result.warnings,
                                         seconds, context)  # fmt: skip
    return records, skipped, warnings


def check_shapes(samples: np.ndarray, dataset: CanonicalDataset, extractor: FeatureExtractor) -> list[str]:
    shape = tuple(samples.shape[1:])
    if shape == tuple(dataset.image_shape):
        return []
    msg = (
        f"sample images are {shape}, reference images {tuple(dataset.image_shape)}: resized by the extractor"
    )
    if extractor.preprocess.size is None:
        raise DataError(
            f"{msg.split(':')[0]} and extractor {extractor.id!r} does not resize; use matching images"
        )
    return [msg]


# modality -> fn(target, ref, config, out) -> metrics dict (written to out or the default path)
EVALUATIONS = modality_registry("evaluation")


def evaluate(target: str | Path, ref: str | Path, config: EvalConfig | None = None,
             out: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Evaluate `target` (a run dir or samples file) against dataset `ref` with the evaluation of
    the dataset's modality; write and return metrics.json. Writing into a run directory holds its
    lock (core/lock.py): not while another process trains or evaluates that run."""
    modality = read_manifest(ref).get("modality", DEFAULT_MODALITY)
    run = lookup(EVALUATIONS, modality, "genforge.evaluate.modalities")
    target_dir = Path(target)
    run_json = target_dir / "model.json"
    if run_json.is_file():
        run_modality = json.loads(run_json.read_text()).get("modality", DEFAULT_MODALITY)
        if run_modality != modality:
            raise GenforgeError(f"{run_json}: a {run_modality} model, but dataset {ref} holds {modality}")
    out_path = Path(out) if out else default_out(target_dir)
    into_run = target_dir.is_dir() and out_path.absolute().is_relative_to(target_dir.absolute())
    with DirLock(target_dir) if into_run else contextlib.nullcontext():
        return run(target, ref, config or EvalConfig(), out)


@EVALUATIONS.register("image")
def evaluate_images(target: str | Path, ref: str | Path, config: EvalConfig,
                    out: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Images: samples (run dir or .npz) -> features -> FID/KID/PRDC/... and the memorisation audit."""
    config = replace(config, n=config.n or IMAGE_N)
    restorer = _restoration_model(target)
    if restorer is not None:
        from genforge.evaluate.restoration import evaluate_restoration

        out_path = Path(out) if out else default_out(Path(target))
        return evaluate_restoration(restorer, ref, config.n, config.seed, out_path, config.split)
    t0 = time.perf_counter()
    dataset = open_dataset(ref)
    split = config.split or dataset.reference_split.name
    dataset.split(split)  # fails early, naming the splits, if absent
    samples = load_samples(target, config.n, config.seed, config.samples_range, dataset.image_shape[2])
    t_gen = time.perf_counter() - t0
    spec = config.features or default_extractor(dataset)
    extractor = build_extractor(spec, dataset, **config.extractor_options)
    warnings = check_shapes(samples.images, dataset, extractor)
    t1 = time.perf_counter()
    reference, ref_info = reference_features(dataset, split, extractor, config.batch_size)
    train = None
    if "train" in dataset.split_names and split != "train":
        train, _ = reference_features(dataset, "train", extractor, config.batch_size)
    feats = extractor.extract(samples.images, config.batch_size)
    t_feat = time.perf_counter() - t1
    sample_set = FeatureSet(feats.features, feats.probs, samples.labels)
    context = {
        "n_samples": len(samples.images),
        "n_reference": len(reference),
        "extractor": extractor.id,
        "extractor_hash": extractor.hash,
        "preprocessing": extractor.preprocess.describe(),
        "reference_split": split,
        "reference_fingerprint": dataset.fingerprint,
        "model_step": samples.source.get("step"),
        "ema": samples.source.get("ema"),
        "seed": config.seed,
    }
    inputs = EvalInputs(sample_set, reference, train, config.seed, config.metric_options())
    t2 = time.perf_counter()
    records, skipped, metric_warnings = compute_metrics(inputs, config.metrics, context)
    t_metrics = time.perf_counter() - t2
    privacy = image_privacy(target, samples.images, samples.labels, feats.features, dataset, split, train, reference,
                            config.utility, config.membership, config.seed, context,
                            more=lambda k: _images_and_labels(load_samples(target, k, config.seed, config.samples_range,
                                                                           dataset.image_shape[2])))  # fmt: skip
    records.update(privacy.records)
    skipped.update(privacy.skipped)
    metric_warnings += privacy.warnings
    t_privacy = time.perf_counter() - t2 - t_metrics
    out_path = Path(out) if out else default_out(Path(target))
    result: dict[str, Any] = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "target": samples.source,
        "reference": {"dataset": str(Path(ref).resolve()), **ref_info},
        "extractor": extractor.describe(),
        "config": to_dict(config),
        # a differentially private run's guarantee (model.json `privacy`) beside its metrics
        "values": {**{k: v["value"] for k, v in records.items()}, **metric_values(samples.source.get("privacy"))},
        "privacy": samples.source.get("privacy"),
        "metrics": records,
        "skipped": skipped,
        "warnings": warnings + metric_warnings,
    }
    # the pairs file and metrics.json replace the previous ones together (a full disk: neither)
    with atomic_files(out_path.parent, out_path.name) as stage:
        if config.memorisation and train is not None:
            t3 = time.perf_counter()
            result["memorisation"] = run_audit(
                samples, feats.features, dataset, split, train, reference, stage / out_path.name
            )
            result["memorisation"]["seconds"] = round(time.perf_counter() - t3, 3)
        result["timing"] = {"samples_s": round(t_gen, 3), "features_s": round(t_feat, 3),
                            "metrics_s": round(t_metrics, 3), "privacy_s": round(t_privacy, 3),
                            "total_s": round(time.perf_counter() - t0, 3)}  # fmt: skip
        write_json(stage / out_path.name, result)
    return result


def _images_and_labels(samples: Samples) -> tuple[np.ndarray, np.ndarray | None]:
    return samples.images, samples.labels


def _restoration_model(target: str | Path):
    """The loaded pipeline when `target` is a run of a restoration model, else None."""
    path = Path(target)
    info = path / "model.json"
    if not (path.is_dir() and info.is_file()):
        return None
    import genforge.models.zoo  # noqa: F401  (registers the families)
    from genforge.models.pipeline import load_pipeline
    from genforge.models.registry import MODELS

    name = json.loads(info.read_text()).get("model")
    if name not in MODELS or MODELS.get(name).task != "restore":
        return None
    return load_pipeline(path)


def run_audit(samples: Samples, sample_features: np.ndarray, dataset: CanonicalDataset, split: str,
              train: FeatureSet, heldout: FeatureSet, out_path: Path) -> dict[str, Any]:  # fmt: skip
    train_images = dataset.split("train").images
    cfg = AuditConfig()
    spaces = audit(samples.images, sample_features, train_images, train.features,
                   dataset.split(split).images, heldout.features, cfg)  # fmt: skip
    pairs = out_path.with_name(out_path.stem + ".pairs.npz")
    save_pairs(pairs, spaces, samples.images, train_images, cfg.pairs)
    return {**{s: a.summary for s, a in spaces.items()}, "pairs_file": pairs.name, "heldout_split": split}


def default_out(target: Path) -> Path:
    """RUN_DIR/metrics.json; beside a samples file or folder of images, NAME.metrics.json."""
    if (target / "model.json").is_file():
        return target / "metrics.json"
    return (
        target.with_name(target.name + ".metrics.json")
        if target.is_dir()
        else target.with_suffix(".metrics.json")
    )


def read_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GenforgeError(f"{path}: cannot read metrics ({exc})") from None
    if data.get("format") != FORMAT:
        raise GenforgeError(f"{path}: not a genforge metrics file (field 'format' must be {FORMAT!r})")
    return data


def config_from_options(**fields: Any) -> EvalConfig:
    try:
        return EvalConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(f"eval options: {exc}") from None
