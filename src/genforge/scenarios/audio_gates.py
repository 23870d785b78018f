"""The gate probe for audio runs (`early_stop.PROBES["audio"]`): a scenario's audio gates measured
during training, as `genforge eval` measures them after it (evaluate/audio/).

Each check makes `n` clips from the EMA weights with one fixed seed (`generate_from_run`, the
evaluation's own sampler, on the model in training) and scores them on the features of the
reference dataset's evaluator:

- the metric registry's outputs under their audio names (`conditional_accuracy`, `coverage`,
  `fad`, ...) and `speaker_accuracy`, on clips of every voice in the training class mix;
- `fad_memoriser_ratio`: the clips' FAD over the memoriser floor's (training clips redrawn, the
  evaluation's `baseline_clips`), the floor measured at the same number of clips, once (for `n`
  before the clock);
- with the scenario's option `target_speaker` (voice cloning): `target_speaker_accuracy`,
  `target_digit_accuracy` and `target_memorised_share` of clips made for that voice
  (evaluate/audio/target.py `target_scores`).

The reference is the dataset the scenario evaluates against, which for a fine-tune is not the
one it trains on: a voice clone trains on the new voice's clips (and rehearsed ones of the base
voices) and is scored by the evaluator of every voice's clips. The evaluator, the reference and
train features and the memoriser floor are ready before the training clock starts (`setup`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genforge.scenarios.early_stop import PROBES, GateProbe

SPEAKER = "speaker_accuracy"
RATIO = "fad_memoriser_ratio"
TARGET = ("target_speaker_accuracy", "target_digit_accuracy", "target_memorised_share")


@PROBES.register("audio")
class AudioGateProbe(GateProbe):
    def __init__(self, n: int, seed: int, n_final: int, reference: Path | None, target: str | None):
        self.n, self.seed, self.n_final, self.reference_path, self.target = n, seed, n_final, reference, target
        self.lower_bounds = frozenset({"coverage", "recall"}) if n < n_final else frozenset()
        self.registry: list[str] = []  # the metrics `score` computes for the gates (audio eval names)
        self.wanted: set[str] = set()
        self.state: dict[str, Any] = {}

    @classmethod
    def for_scenario(cls, scenario: Any, reference: Path | None = None) -> AudioGateProbe:
        from genforge.evaluate.audio.evaluation import AUDIO_N
        from genforge.evaluate.audio.target import OPTION

        n_final = scenario.evaluate.n or AUDIO_N
        return cls(min(scenario.train.early_stop.n, n_final), scenario.train.seed + 1, n_final, reference,
                   scenario.evaluate.options.get(OPTION))  # fmt: skip

    @staticmethod
    def registry_metric(output: str) -> str | None:
        """The registered metric that computes audio output `output` (fad -> fid, coverage -> prdc)."""
        import genforge.evaluate.metrics  # noqa: F401  (registers the built-in metrics)
        from genforge.evaluate.audio.evaluation import OUTPUT_NAMES
        from genforge.evaluate.metrics.base import METRICS

        name = {v: k for k, v in OUTPUT_NAMES.items()}.get(output, output)
        return next((m for m in METRICS.names() if name in METRICS.get(m).outputs), None)

    def problem(self, trainer: Any, metrics: list[str]) -> str | None:
        if trainer.model.task != "generate":
            return f"a {trainer.model.task!r} model has no clips to score during training"
        targets = [m for m in metrics if m.startswith("target_")]
        if targets and self.target is None:
            return f"gate metric(s) {', '.join(targets)} need the option target_speaker"
        unknown = [m for m in metrics if m not in (*TARGET, SPEAKER, RATIO) and self.registry_metric(m) is None]
        if unknown:
            return f"gate metric(s) {', '.join(unknown)} are not measured during training"
        self.wanted = set(metrics)
        general = [m for m in metrics if m not in TARGET]
        needs = [self.registry_metric("fad") if m == RATIO else self.registry_metric(m) for m in general]
        # what `score` computes: these registry metrics, and speaker accuracy when a gate reads it
        self.registry = sorted({m for m in needs if m is not None}) + ([SPEAKER] if SPEAKER in metrics else [])
        return None

    def setup(self, trainer: Any) -> None:
        from genforge.data.canonical import open_dataset
        from genforge.evaluate.audio.evaluator import evaluator_from_options
        from genforge.evaluate.audio.target import target_clips
        from genforge.evaluate.evaluate import EvalConfig
        from genforge.evaluate.stats_cache import reference_features

        dataset = open_dataset(self.reference_path) if self.reference_path else trainer.dataset
        split = dataset.reference_split.name
        evaluator = evaluator_from_options(dataset, {})
        reference, _ = reference_features(dataset, split, evaluator)
        train = reference_features(dataset, "train", evaluator)[0] if "train" in dataset.split_names else None
        config = EvalConfig(n=self.n, seed=self.seed, metrics=self.registry, memorisation=False)
        self.state = {"dataset": dataset, "evaluator": evaluator, "reference": reference, "train": train,
                      "config": config, "floors": {}, "clips": None}  # fmt: skip
        if RATIO in self.wanted:
            self.floor(self.n)
        if self.target is not None:
            self.state["clips"] = target_clips(dataset, evaluator, reference, train, split, self.target,
                                               trainer.run_dir)  # fmt: skip

    def floor(self, n: int) -> float:
        """The memoriser floor's FAD at n clips (computed once per n)."""
        from dataclasses import replace

        from genforge.evaluate.audio.evaluation import baseline_clips, score

        s = self.state
        if n not in s["floors"]:
            dataset = s["dataset"]
            row = baseline_clips(dataset, dataset.reference_split.name, n, self.seed)["memoriser"]
            feats = s["evaluator"].extract(row["audio"])
            config = replace(s["config"], metrics=["fid"])  # the floor's FAD alone
            records, _, _ = score(feats, row["labels"], row["speakers"], s["reference"], s["train"], config, {})
            s["floors"][n] = records["fad"]["value"]
        return float(s["floors"][n])

    def _generate(self, trainer: Any, step: int, n: int, speaker: str | None) -> Any:
        from genforge.core.modality import lookup
        from genforge.evaluate.audio.samples import generate_from_run
        from genforge.models.pipeline import PIPELINES
        from genforge.train.checkpoint import preserved_rng

        dataset = self.state["dataset"]
        info = {"model": trainer.model_name, "dataset": trainer.dataset_info(), "step": step, "ema": True}
        with preserved_rng(), trainer.ema_weights() as model:
            pipe = lookup(PIPELINES, "audio", "genforge.models.zoo")(model, info, trainer.run_dir)
            return generate_from_run(pipe, n, self.seed, dataset.sample_rate, dataset.clip_length,
                                     dataset.speaker_names, speaker=speaker)  # fmt: skip

    def measure(self, trainer: Any, step: int, full: bool = False) -> dict[str, float]:
        from genforge.evaluate.audio.evaluation import score
        from genforge.evaluate.audio.target import target_scores

        s, n = self.state, self.n_final if full else self.n
        values: dict[str, float] = {}
        if self.registry:
            samples = self._generate(trainer, step, n, None)
            feats = s["evaluator"].extract(samples.audio)
            records, _, _ = score(feats, samples.labels, samples.speakers, s["reference"], s["train"], s["config"], {})
            values.update({k: float(r["value"]) for k, r in records.items()})
            if RATIO in self.wanted and "fad" in values:
                values[RATIO] = values["fad"] / self.floor(n)
        if self.wanted & set(TARGET):
            samples = self._generate(trainer, step, n, self.target)
            feats = s["evaluator"].extract(samples.audio)
            values.update(target_scores(s["clips"], feats, samples.labels)[0])
        trainer.log_metrics(step, {f"eval/{k}": v for k, v in values.items() if k in self.wanted})
        return {k: v for k, v in values.items() if np.isfinite(v)}
