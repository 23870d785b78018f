"""The Python API: every stage of genforge as a function that returns a typed result.

The command line is a layer over these same stage functions; from a notebook::

    import genforge

    data = genforge.ingest("digits", "work/digits", size=16)
    run = genforge.train("cvae", data.path, "work/run", conditional=True, max_time="60s")
    images = genforge.load(run.path).generate(16, seed=1, label=3)
    result = genforge.evaluate(run.path, ref=data.path)
    print(result.values["conditional_accuracy"])

Nothing here prints but training's progress lines on stderr (`config={"train": {"progress": "none"}}`
silences them); errors are `genforge.GenforgeError` subclasses whose message names the file
or field at fault. Every function works for every modality (images, audio, text): the stage looks up
the part for the data's modality (docs/modalities.md).

A complete example, run by the test suite (tiny budgets, so the numbers are not meaningful):

>>> import tempfile, genforge
>>> work = tempfile.mkdtemp()
>>> data = genforge.ingest("digits", f"{work}/digits", size=8, val_fraction=0.2)
>>> data.modality, data.splits["train"] > 0
('image', True)
>>> run = genforge.train("cvae", data.path, f"{work}/run", conditional=True, steps=20, batch_size=32)
>>> run.steps
20
>>> model = genforge.load(run.path)
>>> out = model.generate(4, seed=1, label=3)
>>> out.images.shape, out.images.dtype.name, out.labels.tolist()
((4, 8, 8, 1), 'uint8', [3, 3, 3, 3])
>>> bool((model.generate(4, seed=1, label=3).images == out.images).all())  # same seed, same images
True
>>> result = genforge.evaluate(run.path, ref=data.path, n=200, features="pixels")
>>> 0.0 <= result.values["precision"] <= 1.0
True
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.core.errors import GenforgeError
from genforge.core.modality import lookup, modality_registry

__all__ = [
    "Dataset",
    "EvalResult",
    "Generated",
    "GeneratedAudio",
    "Model",
    "RunInfo",
    "ScenarioResult",
    "evaluate",
    "ingest",
    "load",
    "run_scenario",
    "train",
]


@dataclass(frozen=True)
class Dataset:
    """A canonical dataset on disk (`genforge data ingest`)."""

    path: Path
    modality: str
    fingerprint: str
    splits: dict[str, int]  # split name -> items (images; tokens for text)
    class_names: list[str]
    manifest: dict[str, Any] = field(repr=False)

    def open(self) -> Any:
        """The modality's dataset reader (`genforge.data.canonical.open_dataset`)."""
        from genforge.data.canonical import open_dataset

        return open_dataset(self.path)


@dataclass(frozen=True)
class RunInfo:
    """A finished training run."""

    path: Path
    model: str
    modality: str
    steps: int
    items: int  # training items drawn (images, token windows)
    seconds: float
    stop_reason: str


@dataclass(frozen=True)
class Generated:
    """Images a model generated: uint8 (N,H,W,C) and the classes asked for (None: unconditional)."""

    images: np.ndarray
    labels: np.ndarray | None

    def save(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write FILE.npz (`images`, `labels`) or a folder of NNNNN[_classK].png files, atomically,
        as `genforge sample --out` does."""
        from genforge.train.sampling import write_images

        write_images(out, self.images, self.labels, overwrite=overwrite)
        return Path(out)


@dataclass(frozen=True)
class GeneratedAudio:
    """Clips an audio model generated: float32 (N, T) in [-1, 1] at `sample_rate` Hz, the classes
    (digits) asked for and the speaker ids used (None where the model has no such conditioning);
    `speaker_names[i]` names speaker id i."""

    audio: np.ndarray
    sample_rate: int
    labels: np.ndarray | None
    speakers: np.ndarray | None
    speaker_names: list[str]

    def save(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write FILE.npz (`audio`, `sample_rate`, `labels`, `speakers`) or a folder of
        NNNNN[_classK][_speakerS].wav files (16-bit PCM), atomically, as `genforge sample --out` does."""
        from genforge.train.sample_audio import write_audio

        write_audio(out, self.audio, self.sample_rate, self.labels, self.speakers, overwrite=overwrite)
        return Path(out)


@dataclass(frozen=True)
class EvalResult:
    """`metrics.json` of an evaluation: `values` maps metric names to numbers."""

    path: Path
    values: dict[str, float]
    metrics: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of `genforge run`: whether every quality gate passed, and where things are."""

    passed: bool
    run_dir: Path
    gates: list[dict[str, Any]]
    timings: dict[str, float]


def _dataset(path: Path, manifest: dict[str, Any]) -> Dataset:
    splits = {name: int(meta.get("count", 0)) for name, meta in manifest["splits"].items()}
    return Dataset(
        Path(path),
        manifest.get("modality", "image"),
        manifest["fingerprint"],
        splits,
        list(manifest.get("class_names") or []),
        manifest,
    )


def ingest(source: str | Path, out: str | Path, *, modality: str = "auto", overwrite: bool = False,
           **options: Any) -> Dataset:  # fmt: skip
    """Decode, validate, deduplicate and split `source` into the canonical dataset `out`.

    `source`: a built-in source name (`digits`, `mnist`), a folder, an archive, a file (images,
    IDX, .npz; text: .txt, .jsonl, .csv) or `hf:NAME`. `options` are the modality's ingest
    options as in `genforge data ingest --help`, by field name (images: `size`, `channels`,
    `val_fraction`, ...; text: `tokenizer`, `vocab_size`, `split_by`, ...). A number for `size`
    means a square. The dataset directory appears only when complete.
    """
    from genforge.data.ingesters import ingest as run_ingest

    if isinstance(options.get("size"), int):
        options["size"] = (options["size"], options["size"])
    _modality, result = run_ingest(str(source), out, options, modality=modality, overwrite=overwrite)
    return _dataset(Path(out), result.manifest)


def open_dataset(path: str | Path) -> Dataset:
    """An existing canonical dataset."""
    from genforge.data.canonical import read_manifest

    return _dataset(Path(path), read_manifest(path))


def train(model: str, data: str | Path, out: str | Path, *, steps: int | None = None,
          max_time: str | None = None, batch_size: int | None = None, seed: int | None = None,
          conditional: bool = False, config: dict[str, dict[str, Any]] | None = None,
          resume: bool = False, init_from: str | Path | None = None,
          privacy: dict[str, Any] | None = None) -> RunInfo:  # fmt: skip
    """Train model family `model` (e.g. `cvae`, `sngan`, `ddpm`, `gpt`) on dataset `data` into
    run directory `out`, until `steps` or `max_time` ("90s", "5m") is spent.

    `config` holds the sections of a config file: `{"model": {...}, "train": {...},
    "augment": {...}}` (the family's and the trainer's dataclass fields); `privacy` the
    differential-privacy options (`epsilon`, `delta`, ...). Returns where the run is and what
    it did.
    """
    import yaml

    from genforge.train.launch import build_trainer

    flags = {"steps": steps, "max_time": max_time, "batch_size": batch_size, "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        config_file = None
        if config:
            config_file = Path(tmp) / "config.yaml"
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        trainer = build_trainer(out, model_name=model, data=data, config_file=config_file, flags=flags,
                                resume=resume, conditional=conditional, init_from=init_from,
                                privacy=privacy)  # fmt: skip
        summary = trainer.fit(resume=resume)
    return RunInfo(Path(out), trainer.model_name, trainer.model.modality, int(summary["step"]),
                   int(summary["images"]), float(summary["elapsed"]), str(summary["stop_reason"]))  # fmt: skip


def _generate_images(pipeline: Any, n: int, seed: int, label: int | None, options: dict[str, Any]) -> Generated:
    images, labels = pipeline.generate(n, seed=seed, class_label=label, **options)
    return Generated(images, labels)


def _generate_audio(pipeline: Any, n: int, seed: int, label: int | None, options: dict[str, Any]) -> GeneratedAudio:
    audio, labels, speakers = pipeline.generate_clips(n, seed=seed, class_label=label, **options)
    return GeneratedAudio(audio, pipeline.sample_rate, labels, speakers, pipeline.speaker_names)


# modality -> (pipeline, n, seed, label, options) -> the typed result of Model.generate
GENERATORS = modality_registry("Model.generate (text runs: Model.complete)")
GENERATORS.register("image", _generate_images)
GENERATORS.register("audio", _generate_audio)


class Model:
    """A trained run loaded for inference (EMA weights). Images and audio: `generate`;
    restoration runs (`dae`, `denoiser`): `restore`; text: `complete`."""

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline

    def __repr__(self) -> str:
        return f"Model(run={str(self.pipeline.path)!r}, model={self.pipeline.name!r}, modality={self.modality!r})"

    @property
    def modality(self) -> str:
        return self.pipeline.modality

    @property
    def info(self) -> dict[str, Any]:
        """The run's model.json."""
        return self.pipeline.info

    def generate(self, n: int, *, seed: int = 0, label: int | None = None,
                 **options: Any) -> Generated | GeneratedAudio:  # fmt: skip
        """n samples, the same for the same seed: `Generated` images from an image model,
        `GeneratedAudio` clips from an audio model. `label` asks a class-conditional model for
        one class (default: the training data's class mix). `options`: `speaker` (a name or an
        id) for a speaker-conditional audio model (default: its speakers in turn), and the
        family's sampling options (diffusion: `steps`, `guidance`)."""
        generate = lookup(GENERATORS, self.modality, "genforge.api")
        return generate(self.pipeline, n, seed, label, options)

    def restore(self, inputs: np.ndarray) -> np.ndarray:
        """A restoration run's output for `inputs`, same shape: images uint8 (N,H,W,C) of the
        run's size (`dae`), or speech float32 (T,) or (N, T) at the run's sample rate
        (`denoiser`: any length). `genforge restore` does this for files and folders."""
        restore = getattr(self.pipeline, "restore", None)
        if restore is None:
            raise GenforgeError(f"model {self.pipeline.name!r} ({self.modality}) does not restore its inputs")
        return restore(inputs)

    def complete(self, prompt: str | list[str], **options: Any) -> list[str]:
        """Completions of a text model: one per prompt (times `n`); `options`: `n`,
        `max_tokens`, `temperature`, `top_k`, `top_p`, `stop`, `seed`."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        return [c.text for c in self.pipeline.complete(prompts, **options)]


def load(run: str | Path, *, device: str = "cpu") -> Model:
    """Load a finished run directory (`model.json` + `model.safetensors`)."""
    from genforge.models.pipeline import load_pipeline

    return Model(load_pipeline(run, device=device))


def evaluate(target: str | Path, ref: str | Path, *, n: int | None = None, seed: int = 0,
             out: str | Path | None = None, **options: Any) -> EvalResult:  # fmt: skip
    """Evaluate a run directory (or a samples file/folder) against the held-out split of dataset
    `ref`; writes and returns metrics.json. `options`: fields of `EvalConfig` (e.g.
    `features="pixels"`, `metrics=[...]`)."""
    from genforge.evaluate.evaluate import config_from_options, default_out
    from genforge.evaluate.evaluate import evaluate as run_evaluate

    config = config_from_options(n=n, seed=seed, **options)
    metrics = run_evaluate(target, ref, config, out=out)
    path = Path(out) if out else default_out(Path(target))
    values = {k: float(v) for k, v in metrics.get("values", {}).items() if isinstance(v, int | float)}
    return EvalResult(path, values, metrics)


def run_scenario(name: str, *, data: str | None = None, out: str | Path | None = None,
                 max_time: str | None = None, steps: int | None = None,
                 seed: int | None = None) -> ScenarioResult:  # fmt: skip
    """The whole chain on a scenario (a shipped name or a YAML path): ingest, train, evaluate,
    export, report, with quality gates. Progress goes to a quiet console."""
    import io

    from rich.console import Console

    from genforge.scenarios.runner import run_scenario as run
    from genforge.scenarios.runner import to_dict_gate

    console = Console(file=io.StringIO())
    result = run(name, data=data, out=out, max_time=max_time, steps=steps, seed=seed, console=console)
    return ScenarioResult(result.passed, result.run_dir, [to_dict_gate(g) for g in result.gates],
                          dict(result.timings))  # fmt: skip
