"""Early stopping on a scenario's gates: measure them during training, stop once they pass, or
once they stall, and say which gate did what.

A scenario's gates name metrics of the final evaluation (conditional accuracy, coverage, ...).
`EarlyStop`, a training callback, measures the same metrics every so often on a few samples
(`n`, from the EMA weights, one fixed noise seed, so the curve shows the model's change and not
sampling noise) and keeps each gate's trajectory. It ends training, through the trainer's budget
(it is one of `Budget.rules`), when

- every gate passes with `margin` to spare on `consecutive` checks in a row ("passed"), or
- no gate that still fails has gained `min_gain` over its best in `patience` checks, once
  `min_progress` of the budget is spent, and one of them is measured without bias ("stalled"):
  the reason names the failing gates and their recent values, and lands in metrics.jsonl, the
  trainer's stop reason and summary.json.

The final evaluation, on the scenario's full `n`, still decides PASS or FAIL.

`keep_best`: a GAN's checks can swing by 0.3 between neighbouring checks of a fine-tune (a voice
clone's target speaker accuracy read 0.92 at step 3,750 and 0.88 at 4,000, then 0.84 in the final
evaluation), so its last weights are a draw from that swing. A run ends with the weights of its
best check instead (a run that trained on after its last check checks its final weights too), when
that check beat the last one by `min_gain` on the `distance`: the gates'
summed shortfalls, or, for a check that passes every gate, minus the summed amounts it passes
them by (scaled as the margin is). A run that stopped on passing chooses among its passing checks
(their values as the pass read them, full checks included); any other run among all its checks,
read from every check's `n` samples even where a full check followed. The final evaluation scores
those weights on samples of another seed than the checks', so a lucky check is not what it
reads; model.json records the step (`weights_step`).

Margins and gains are absolute for metrics in [0, 1] and scaled by the bound for larger ones
(FID): `margin * max(1, |bound|)`. Every metric is measured against the whole reference split,
as in the final evaluation. Precision, density and conditional accuracy average over the
samples: fewer samples only make them noisier. Coverage and recall average over the real
images (is a sample near this one?) and only grow with more samples, so with `n` below the
final evaluation's they read low: on average a lower bound, which may keep a run from stopping
early but does not stop one on a value the final evaluation would not reach. A lower bound can
pass a `min` gate, never a `max` one, and its plateau blames nothing: with real MNIST digits as
the samples, coverage reads 0.37 from 500 and 0.965 from 5,000. (Comparing `n`
samples with a reference subset of the final ratio instead was tried: on a 10-class glyph set
it read coverage 0.50 where the final evaluation measured 0.32.) So when every other gate passes
with its margin and only a lower-bound reading is short, the same check is measured again with
the final evaluation's number of samples (a "full" check, `GateProbe.measure(full=True)`), whose
values are unbiased: a coverage-gated run can stop early once the final evaluation would pass.

Cost: the checks run inside the training clock, so they spend the budget they watch. They are
spaced so that their measured cost stays under `time_share` of the elapsed training time, and
at most `max_checks` per budget (or every `every` steps, when set: deterministic spacing). The
evaluator (the classifier trained on the dataset) and the reference features are prepared
before the clock starts (`on_train_start`), as the final evaluation would otherwise do after
training: never beside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genforge.core.errors import ConfigError
from genforge.core.modality import modality_registry
from genforge.train.callbacks import Callback

EVENT = "early_stop"


@dataclass
class EarlyStopConfig:
    enabled: bool = True
    n: int = 500  # samples per check
    margin: float = 0.02  # a gate counts as passed during training with this much to spare
    consecutive: int = 2  # passing checks in a row that stop training
    patience: int = 6  # checks without a gain that make a stall
    min_gain: float = 0.01  # a smaller gain over a gate's best is no gain
    min_progress: float = 0.5  # share of the budget before a stall may stop training
    time_share: float = 0.05  # the checks' cost, at most this share of the training time
    max_checks: int = 30  # checks per budget at most (spaced by budget progress)
    every: int = 0  # > 0: check every this many steps instead (deterministic, for step budgets)
    # a run that ends without passing keeps the weights of its check closest to passing, when that
    # check beats the last one by min_gain (a GAN's checks can swing by 0.3 late in a fine-tune)
    keep_best: bool = True

    def __post_init__(self) -> None:
        if self.n < 10:
            raise ConfigError(f"train.early_stop.n: need >= 10 samples per check, got {self.n}")
        for name in ("consecutive", "patience", "max_checks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.early_stop.{name}: must be >= 1, got {getattr(self, name)}")
        if self.margin < 0 or self.min_gain < 0 or self.every < 0:
            raise ConfigError("train.early_stop: margin, min_gain and every must be >= 0")
        if not 0.0 <= self.min_progress <= 1.0 or not 0.0 < self.time_share <= 1.0:
            raise ConfigError("train.early_stop: min_progress must be in [0, 1] and time_share in (0, 1]")


def _bound(gate: Any) -> float | None:
    return gate.min if gate.min is not None else gate.max


def _scale(bound: float | None) -> float:
    return max(1.0, abs(bound)) if bound is not None else 1.0


def shortfall(gate: Any, value: float | None, margin: float) -> float:
    """How far `value` is from passing `gate` with `margin` to spare (0: it does); inf when missing."""
    if value is None or not math.isfinite(value):
        return math.inf
    short = 0.0
    if gate.min is not None:
        short += max(0.0, gate.min + margin * _scale(gate.min) - value)
    if gate.max is not None:
        short += max(0.0, value - (gate.max - margin * _scale(gate.max)))
    return short


def surplus(gate: Any, value: float) -> float:
    """How far a passing `value` is past `gate`'s bounds (the nearer one for a range), scaled by
    the bound as margins are."""
    room = [(value - gate.min) / _scale(gate.min)] if gate.min is not None else []
    room += [(gate.max - value) / _scale(gate.max)] if gate.max is not None else []
    return max(0.0, min(room, default=0.0))


@dataclass
class Check:
    step: int
    elapsed: float  # training seconds at the check
    values: dict[str, float | None]
    passed: bool  # every gate with margin
    full: bool = False  # measured with the final evaluation's number of samples


@dataclass
class GateTracker:
    """The decision, free of any model: feed it each check's gate values, it says when to stop.

    `lower_bounds` names metrics whose in-training value is a lower bound of the final one
    (coverage from fewer samples): they can pass a `min` gate early, never a `max` gate, and
    their plateau is no evidence of a stall (their gains still count as progress)."""

    gates: list[Any]  # schema.Gate
    config: EarlyStopConfig
    lower_bounds: frozenset[str] = frozenset()
    checks: list[Check] = field(default_factory=list)
    best: list[float] = field(default_factory=list)  # per gate: the lowest shortfall so far
    since_gain: int = 0
    streak: int = 0

    def needs_full(self, values: dict[str, float | None]) -> bool:
        """Whether only lower-bound readings keep this check from passing: every gate measured
        without bias passes with the margin, and a lower-bound one does not certify."""
        cfg, short = self.config, False
        for g in self.gates:
            ok = shortfall(g, values.get(g.metric), cfg.margin) == 0.0
            if g.metric not in self.lower_bounds and not ok:
                return False
            short = short or (g.metric in self.lower_bounds and not (ok and self._certifies(g)))
        return short

    def observe(
        self, step: int, elapsed: float, progress: float, values: dict[str, float | None], full: bool = False
    ) -> str | None:
        """Record one check (`full`: measured with the final evaluation's sample count, so no
        value is a lower bound); the reason to stop now, or None."""
        cfg = self.config
        shorts = [shortfall(g, values.get(g.metric), cfg.margin) for g in self.gates]
        passed = all(short == 0.0 and (full or self._certifies(g)) for g, short in zip(self.gates, shorts, strict=True))
        self.checks.append(
            Check(step, round(elapsed, 2), {g.metric: values.get(g.metric) for g in self.gates}, passed, full)
        )
        self.streak = self.streak + 1 if passed else 0
        self.best = self.best or [math.inf] * len(self.gates)
        gained = False
        for i, (gate, short) in enumerate(zip(self.gates, shorts, strict=True)):
            first = self.best[i] == math.inf and short < math.inf
            if first or short < self.best[i] - cfg.min_gain * _scale(_bound(gate)):
                gained = True
            self.best[i] = min(self.best[i], short)
        self.since_gain = 0 if gained or passed else self.since_gain + 1
        if self.streak >= cfg.consecutive:
            return self._passed_reason()
        failing = [g for g, short in zip(self.gates, shorts, strict=True) if short > 0.0]
        # only a gate measured without bias can show that training no longer helps
        if any(full or g.metric not in self.lower_bounds for g in failing) and self.since_gain >= cfg.patience \
                and progress >= cfg.min_progress:  # fmt: skip
            return self._stall_reason(failing)
        return None

    def distance(self, values: dict[str, float | None]) -> float:
        """How far one check's values are from passing every gate, without margin: the sum of
        the gates' shortfalls, each scaled by its bound (inf: a value missing); for values that
        pass every gate, minus the sum of what they pass them by, so lower is better throughout."""
        short = sum(shortfall(g, values.get(g.metric), 0.0) / _scale(_bound(g)) for g in self.gates)
        if short > 0.0:
            return short
        return -sum(surplus(g, values[g.metric]) for g in self.gates)

    def _certifies(self, gate: Any) -> bool:
        return gate.metric not in self.lower_bounds or gate.max is None

    def trajectory(self, metric: str, last: int | None = None) -> str:
        checks = self.checks if last is None else self.checks[-last:]
        return ", ".join(f"{_fmt(c.values.get(metric))} (step {c.step})" for c in checks)

    def _passed_reason(self) -> str:
        k = self.config.consecutive
        parts = [f"{g.metric} {g.describe()}: {self.trajectory(g.metric, k)}" for g in self.gates]
        return (f"early stop: every gate passed with margin {self.config.margin:g} on {k} consecutive checks; "
                + "; ".join(parts))  # fmt: skip

    def _stall_reason(self, failing: list[Any]) -> str:
        k = self.config.patience
        parts = []
        for g in failing:
            values = [c.values.get(g.metric) for c in self.checks]
            best = max((v for v in values if v is not None), default=None) if g.min is not None else \
                min((v for v in values if v is not None), default=None)  # fmt: skip
            note = ", a lower bound during training" if g.metric in self.lower_bounds else ""
            parts.append(
                f"{g.metric} {g.describe()} (best {_fmt(best)}{note}): {self.trajectory(g.metric, k + 1)}"
            )
        return (f"stalled: no failing gate gained {self.config.min_gain:g} in {k} checks; "
                + "; ".join(parts))  # fmt: skip


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.3g}"


class GateProbe:
    """Measures gate metrics on a model in training, for one modality. `problem` says why it
    cannot (None when it can); `setup` runs before the training clock starts. `lower_bounds`:
    the gate metrics it can only measure as lower bounds of the final evaluation's values."""

    lower_bounds: frozenset[str] = frozenset()

    @classmethod
    def for_scenario(cls, scenario: Any, reference: Path | None = None) -> GateProbe:
        """The probe for `scenario`'s gates; `reference`: the dataset the final evaluation scores
        against, when it is not the one trained on (a fine-tune to a new voice)."""
        raise NotImplementedError

    def problem(self, trainer: Any, metrics: list[str]) -> str | None:
        raise NotImplementedError

    def setup(self, trainer: Any) -> None:
        raise NotImplementedError

    def measure(self, trainer: Any, step: int, full: bool = False) -> dict[str, float]:
        """The gate metrics now; `full`: from the final evaluation's number of samples."""
        raise NotImplementedError


PROBES = modality_registry("gate probe")


@PROBES.register("image")
class ImageGateProbe(GateProbe):
    """Image gates from evaluate/'s metric registry, scored by the in-training evaluator
    (evaluate/callback.py `EvalCallback`: the final evaluation's extractor and whole reference
    split, fixed-seed samples of the training class mix from the EMA weights)."""

    def __init__(self, n: int, features: str | None, seed: int, n_final: int):
        self.n, self.features, self.seed, self.n_final = n, features, seed, n_final
        self.metric_names: list[str] = []
        self.evaluator: Any = None
        # averages over the real images: fewer samples than the final evaluation's read low
        self.lower_bounds = frozenset({"coverage", "recall"}) if n < n_final else frozenset()

    @classmethod
    def for_scenario(cls, scenario: Any, reference: Path | None = None) -> ImageGateProbe:
        # image scenarios evaluate against the data they train on: `reference` is that data
        from genforge.evaluate.evaluate import IMAGE_N

        n_final = scenario.evaluate.n or IMAGE_N
        return cls(
            min(scenario.train.early_stop.n, n_final),
            scenario.evaluate.features,
            scenario.train.seed + 1,
            n_final,
        )

    @staticmethod
    def metric_of(output: str) -> str | None:
        """The registered metric that computes output `output` (coverage -> prdc)."""
        import genforge.evaluate.metrics  # noqa: F401  (registers the built-in metrics)
        from genforge.evaluate.metrics.base import METRICS

        return next((name for name in METRICS.names() if output in METRICS.get(name).outputs), None)

    def problem(self, trainer: Any, metrics: list[str]) -> str | None:
        if trainer.model.task != "generate":
            return f"a {trainer.model.task!r} model has no samples to score during training"
        missing = [m for m in metrics if self.metric_of(m) is None]
        if missing:
            return f"gate metric(s) {', '.join(missing)} are not measured during training"
        self.metric_names = sorted({str(self.metric_of(m)) for m in metrics})
        return None

    def setup(self, trainer: Any) -> None:
        from genforge.evaluate.callback import EvalCallback

        self.evaluator = EvalCallback(every=1, n=self.n, features=self.features, seed=self.seed,
                                      metrics=self.metric_names)  # fmt: skip
        self.evaluator.on_train_start(trainer)  # trains (or loads) the evaluator, reference features

    def measure(self, trainer: Any, step: int, full: bool = False) -> dict[str, float]:
        from genforge.evaluate.callback import PREFIX

        self.evaluator.n = self.n_final if full else self.n
        try:
            values = self.evaluator.evaluate(trainer, step)  # also logs eval/<metric> into metrics.jsonl
        finally:
            self.evaluator.n = self.n
        return {k[len(PREFIX) :]: v for k, v in values.items()}


class EarlyStop(Callback):
    """The callback `genforge run` adds to a scenario's training (see the module docstring); it is
    also a `Budget` stop rule, which is how it ends the run."""

    def __init__(self, gates: list[Any], config: EarlyStopConfig, probes: Callable[[str], GateProbe | None]):
        self.gates, self.config = list(gates), config
        self.tracker = GateTracker(self.gates, config)
        self.probes = probes  # modality -> its GateProbe, or None when there is none
        self.probe: GateProbe | None = None
        self.disabled: str | None = None if config.enabled else "train.early_stop.enabled is false"
        if not self.gates and self.disabled is None:
            self.disabled = "the scenario has no gates"
        self.reason: str | None = None
        self.outcome = "off"
        # keep_best: (step, distance, weights) of the best check so far, and of the best passing one
        self._best: tuple[int, float, dict[str, Any]] | None = None
        self._best_passed: tuple[int, float, dict[str, Any]] | None = None
        self._last_distance = self._last_passed = math.inf
        self.kept: dict[str, Any] | None = None
        self.setup_seconds = 0.0
        self.check_seconds = 0.0
        self.train_seconds = 0.0
        self._last_end = 0.0
        self._last_cost = 0.0
        self._last_progress = 0.0

    # --- Budget stop rule ------------------------------------------------------------------

    def exhausted(self, step: int) -> str | None:
        return self.reason

    def fraction(self, step: int) -> float:
        return 0.0  # no limit of its own: progress is the budget's

    # --- callback --------------------------------------------------------------------------

    def on_train_start(self, trainer: Any) -> None:
        if self.disabled is not None:
            return
        modality = trainer.dataset.modality
        probe = self.probes(modality)
        if probe is None:
            self.disabled = f"no gate probe for {modality} data"
            return
        why = probe.problem(trainer, [g.metric for g in self.gates])
        if why is not None:
            self.disabled = why
            return
        t0 = time.perf_counter()
        probe.setup(trainer)
        self.setup_seconds = time.perf_counter() - t0
        self.probe = probe
        self.tracker.lower_bounds = probe.lower_bounds
        self.outcome = "ran to budget"
        trainer.budget.rules.append(self)

    def _due(self, trainer: Any, step: int) -> bool:
        if self.config.every:
            return step % self.config.every == 0
        now = trainer.elapsed()
        progress = trainer.budget.fraction(step, trainer.images_seen, now)
        spaced = now - self._last_end >= self._last_cost / self.config.time_share
        return spaced and progress - self._last_progress >= 1.0 / self.config.max_checks

    def on_step_end(self, trainer: Any, step: int) -> None:
        if self.probe is None or self.reason is not None or not self._due(trainer, step):
            return
        self._check(trainer, step)

    def _check(self, trainer: Any, step: int, last: bool = False) -> None:
        """Measure the gates at `step` and record the check (`last`: the end of a run that trained
        on after its last check, which decides nothing but which weights it ends with)."""
        assert self.probe is not None
        t0 = time.perf_counter()
        values: dict[str, float | None] = dict(self.probe.measure(trainer, step))
        # keep_best compares every check at the same sample count: a full check's coverage would
        # read higher than the others' lower bounds for the count alone
        distance = self.tracker.distance(values)
        full = bool(self.probe.lower_bounds) and self.tracker.needs_full(values)
        if full:  # only lower-bound readings fall short: measure them as the final evaluation will
            values = dict(self.probe.measure(trainer, step, full=True))
        cost = time.perf_counter() - t0
        self.check_seconds += cost
        self._last_cost = cost
        now = trainer.elapsed()
        self._last_end = now
        progress = trainer.budget.fraction(step, trainer.images_seen, now)
        self._last_progress = progress
        missing = [g.metric for g in self.gates if values.get(g.metric) is None]
        if missing:  # e.g. conditional accuracy of an unconditional model: the final evaluation says so
            self.disabled = f"gate metric(s) {', '.join(missing)} could not be measured during training"
            self.probe, self.outcome = None, "off"
            return
        reason = self.tracker.observe(step, now, progress, values, full)
        if self.config.keep_best:
            self._keep_candidate(trainer, step, distance, values)
        if last:
            return
        self.reason = reason
        if self.reason is not None:
            self.outcome = "passed" if self.reason.startswith("early stop") else "stalled"
            trainer.log_metrics(step, {"event": EVENT, "outcome": self.outcome, "reason": self.reason})

    def _keep_candidate(self, trainer: Any, step: int, distance: float, values: dict[str, float | None]) -> None:
        """Copy the weights of a check that is the best so far (a tie keeps the later weights), among
        all checks on their `n` samples' `distance`, and among passing ones on the values that passed."""
        copy: dict[str, Any] | None = None
        self._last_distance = distance
        if self._best is None or distance <= self._best[1]:
            copy = trainer.weights()
            self._best = (step, distance, copy)
        if self.tracker.checks[-1].passed:
            passed = self._last_passed = self.tracker.distance(values)
            if self._best_passed is None or passed <= self._best_passed[1]:
                self._best_passed = (step, passed, copy if copy is not None else trainer.weights())

    def on_train_end(self, trainer: Any) -> None:
        self.train_seconds = trainer.elapsed()
        if self.config.keep_best and self.probe is not None and self.tracker.checks \
                and self.tracker.checks[-1].step != trainer.step:  # fmt: skip
            # the weights it would end with were never measured: a check of them joins the choice
            self._check(trainer, trainer.step, last=True)
        # a run that stopped on passing ends on its best passing check's weights, any other on its best check's
        best, last = (self._best_passed, self._last_passed) if self.outcome == "passed" else \
            (self._best, self._last_distance)  # fmt: skip
        self._best = self._best_passed = None
        if best is None:  # no check copied weights (keep_best off, or no check)
            return
        step, distance, weights = best
        if step != self.tracker.checks[-1].step and distance < last - self.config.min_gain:
            trainer.keep_weights(weights, step)
            self.kept = {"step": step, "distance": round(distance, 4), "last_distance": round(last, 4)}
            trainer.log_metrics(trainer.step, {"event": EVENT, "kept_weights": self.kept})

    def report(self) -> dict[str, Any]:
        """What summary.json records: the outcome and why, each check's values, and the cost."""
        from genforge.core.config import to_dict

        out: dict[str, Any] = {"outcome": self.outcome, "reason": self.reason, "config": to_dict(self.config)}
        if self.disabled is not None:
            out["disabled"] = self.disabled
        if self.tracker.checks:
            share = self.check_seconds / self.train_seconds if self.train_seconds else None
            out.update({
                "checks": [{"step": c.step, "elapsed_s": c.elapsed, "passed": c.passed, **c.values,
                            **({"full": True} if c.full else {})} for c in self.tracker.checks],
                "check_seconds": round(self.check_seconds, 3),
                "check_share": None if share is None else round(share, 4),
                "train_seconds": round(self.train_seconds, 2),
            })  # fmt: skip
        if self.kept is not None:
            out["kept_weights"] = self.kept
        if self.probe is not None or self.setup_seconds:
            out["setup_seconds_before_clock"] = round(self.setup_seconds, 2)
        return out


def early_stop_for(scenario: Any, reference: Path | None = None) -> EarlyStop:
    """The scenario's EarlyStop: its gates, its `train.early_stop` settings, and the gate probe
    registered for the data's modality (none: early stopping is off, and the summary says so).
    `reference`: the dataset the final evaluation scores against, where it is not the training data."""

    def probe(modality: str) -> GateProbe | None:
        return PROBES.get(modality).for_scenario(scenario, reference) if modality in PROBES else None

    return EarlyStop(scenario.evaluate.gates, scenario.train.early_stop, probe)


import genforge.scenarios.audio_gates  # noqa: E402, F401  (registers the audio probe in PROBES)
