"""Orchestration: a run directory or a samples.npz against a reference dataset -> metrics.json.

Every metric entry records what makes two numbers comparable: sample and reference counts, the
extractor (id, hash, preprocessing), the reference split and dataset fingerprint, and the
model's step and whether its EMA weights were used.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.atomic import write_json
from genforge.core.config import to_dict
from genforge.core.errors import ConfigError, DataError, GenforgeError
from genforge.core.modality import DEFAULT as DEFAULT_MODALITY
from genforge.core.modality import lookup, modality_registry
from genforge.data.canonical import CanonicalDataset, open_dataset, read_manifest
from genforge.evaluate.extractors.base import FeatureExtractor, build_extractor, default_extractor
from genforge.evaluate.memorisation import AuditConfig, audit, save_pairs
from genforge.evaluate.metrics.base import METRICS, EvalInputs, FeatureSet
from genforge.evaluate.stats_cache import reference_features

FORMAT = "genforge-metrics"
GENERATE_CHUNK = 500


@dataclass
class EvalConfig:
    n: int = 10000
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

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError("n must be >= 2")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    def metric_options(self) -> dict[str, Any]:
        return {"kid_subsets": self.kid_subsets, "kid_subset_size": self.kid_subset_size,
                "prdc_k": self.prdc_k, "is_splits": self.is_splits}  # fmt: skip


@dataclass
class Samples:
    images: np.ndarray  # uint8 (N,H,W,C)
    labels: np.ndarray | None  # requested classes (conditional) or None
    source: dict[str, Any]  # kind, path, model, step, ema


def read_npz(path: Path, n: int | None = None) -> Samples:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DataError(f"{path}: no 'images' array (expected uint8 N,H,W,C; optional 'labels')")
            images = z["images"]
            labels = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read samples npz ({exc})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"{path}: 'images' must be uint8 (N,H,W,C) with C 1 or 3, got {images.dtype} {images.shape}"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{path}: 'labels' must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}"
            )
    if n is not None and n < len(images):
        images, labels = images[:n], None if labels is None else labels[:n]
    return Samples(images, labels, {"kind": "npz", "path": str(path.resolve()), "step": None, "ema": None})


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
              "step": info.get("step"), "ema": info.get("ema"), "conditional": pipe.conditional}  # fmt: skip
    return Samples(np.concatenate(chunks), labels, source)


def load_samples(target: str | Path, n: int, seed: int) -> Samples:
    target = Path(target)
    if target.is_file() and target.suffix == ".npz":
        return read_npz(target, n)
    if target.is_dir():
        return generate_from_run(target, n, seed)
    raise GenforgeError(f"{target}: expected a run directory (with model.json) or a samples .npz file")


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
            info = metric.outputs[out]
            records[out] = {"value": value, "metric": name, "better": info.better, "meaning": info.meaning,
                            "details": result.details, "warnings": result.warnings, "seconds": seconds,
                            **context}  # fmt: skip
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
    the dataset's modality; write and return metrics.json."""
    modality = read_manifest(ref).get("modality", DEFAULT_MODALITY)
    run = lookup(EVALUATIONS, modality, "genforge.evaluate.modalities")
    return run(target, ref, config or EvalConfig(), out)


@EVALUATIONS.register("image")
def evaluate_images(target: str | Path, ref: str | Path, config: EvalConfig,
                    out: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Images: samples (run dir or .npz) -> features -> FID/KID/PRDC/... and the memorisation audit."""
    restorer = _restoration_model(target)
    if restorer is not None:
        from genforge.evaluate.restoration import evaluate_restoration

        out_path = Path(out) if out else default_out(Path(target))
        return evaluate_restoration(restorer, ref, config.n, config.seed, out_path, config.split)
    t0 = time.perf_counter()
    dataset = open_dataset(ref)
    split = config.split or dataset.reference_split.name
    dataset.split(split)  # fails early, naming the splits, if absent
    samples = load_samples(target, config.n, config.seed)
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
    out_path = Path(out) if out else default_out(Path(target))
    result: dict[str, Any] = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "target": samples.source,
        "reference": {"dataset": str(Path(ref).resolve()), **ref_info},
        "extractor": extractor.describe(),
        "config": to_dict(config),
        "values": {k: v["value"] for k, v in records.items()},
        "metrics": records,
        "skipped": skipped,
        "warnings": warnings + metric_warnings,
    }
    if config.memorisation and train is not None:
        t3 = time.perf_counter()
        result["memorisation"] = run_audit(
            samples, feats.features, dataset, split, train, reference, out_path
        )
        result["memorisation"]["seconds"] = round(time.perf_counter() - t3, 3)
    result["timing"] = {"samples_s": round(t_gen, 3), "features_s": round(t_feat, 3),
                        "metrics_s": round(t_metrics, 3), "total_s": round(time.perf_counter() - t0, 3)}  # fmt: skip
    write_json(out_path, result)
    return result


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
    return target / "metrics.json" if target.is_dir() else target.with_suffix(".metrics.json")


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
