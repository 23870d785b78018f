"""Differentially private training: DP-SGD through Opacus, inside the one trainer.

The guarantee. The unit of privacy is one example of the training split (an image; for text, one
of the windows the feed samples). A run is (epsilon, delta)-differentially private under adding or
removing one example, the adjacency Opacus' accountants use, for what training releases: the
weights (model.safetensors, checkpoints, EMA), the optimiser state and the sample grids, which are
all computed from the noisy gradients. What it does not cover is listed in docs/privacy.md.

The mechanism, all of it Opacus':
- the family names the submodules that see real data (`GenerativeModel.private_modules`); every
  phase updating one of them is private. Opacus' `GradSampleHooks` compute per-sample gradients
  for those modules (hooks, not a wrapper module, so state-dict keys and saved runs stay as they
  are) and `DPOptimizer` wraps the phase's optimiser: each example's gradient is clipped to
  `max_grad_norm` C, the clipped gradients are summed, N(0, (sigma C)^2) noise is added from a
  generator the checkpoints save, the sum is divided by the expected batch size, and the
  optimiser steps. Its step hook tells the accountant (RDP or PRV) about each such step.
- every other phase (the GAN's generator) gets a public batch instead of the private one: zeros
  of the expected batch size, with labels drawn uniformly from a generator seeded by (seed, step,
  repeat). It cannot read private data, so its updates are post-processing of the private
  phases' released outputs (the discriminator's weights).
- batches are Poisson samples of the training split (data/loader.py, q = batch_size / N), as the
  accountants assume; an empty one still takes its step (noise only), since the accountant counts it.
- the budget: with a target epsilon and no `noise_multiplier`, sigma is the smallest noise
  multiplier whose epsilon after the planned steps (`privacy.steps`, else `train.steps`) lies
  within 0.01 below the target (Opacus' `get_noise_multiplier`). Training stops before a step
  that would take the accountant past the target ("privacy budget spent"), or earlier at the
  step or time budget. A time budget alone plans no steps: give `privacy.steps` with it.
- DP runs train in fp32 (under bf16 the per-sample gradients are ~0.4-1% off, so a clipped
  gradient could exceed C, which the noise is scaled to) in one process (no DDP: one Poisson batch and one
  noise draw per step).

The trainer calls `PrivateTraining` at a few points: `run_phase` for each phase step, its Budget
asks `exhausted`/`fraction`, checkpoints carry `state_dict` (the accountant's history and the
noise generator: a resumed run continues bit for bit), and `record` goes into run.json,
model.json (`privacy`), metrics.json and `/v1/models`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from genforge.core.errors import ConfigError, GenforgeError
from genforge.core.registry import Registry
from genforge.models.base import Batch
from genforge.train import checkpoint as ckpt

# sigma is calibrated to an epsilon at most this far below the target (Opacus' default tolerance)
EPSILON_TOLERANCE = 0.01
# mixed into the seeds of the noise generator and of the public batches' labels, so neither
# shares a stream with the trainer's other generators
NOISE_STREAM = 0x44505347
PUBLIC_STREAM = 0x5055424C
# model.json keys copied into metrics.json values (evaluate) and kept by /v1/models
METRIC_KEYS = {
    "epsilon": "dp_epsilon",
    "delta": "dp_delta",
    "noise_multiplier": "dp_noise_multiplier",
    "sample_rate": "dp_sample_rate",
    "steps": "dp_steps",
    "max_grad_norm": "dp_max_grad_norm",
}
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass
class PrivacyConfig:
    # the target: training stops before the accountant's epsilon would pass it; None (with a
    # noise_multiplier) trains with that noise and only reports the epsilon spent
    epsilon: float | None = None
    delta: float = 1e-5  # must lie below 1 / N (N = training examples)
    max_grad_norm: float = 1.0  # C: each example's gradient is clipped to this L2 norm
    accountant: Literal["rdp", "prv"] = "rdp"  # Opacus' names
    # sigma (noise std / C); None: calibrated from epsilon for the planned steps
    noise_multiplier: float | None = None
    # trainer steps the budget is planned for; None: train.steps. Needed with a time budget alone
    steps: int | None = None
    # noise levels per example per step, averaged before clipping (DPDM; diffusion models)
    noise_multiplicity: int = 1
    poisson: bool = True  # Poisson sampling, as the accountants assume; false: fixed-size batches

    def __post_init__(self) -> None:
        if self.epsilon is not None and not self.epsilon > 0:
            raise ConfigError(f"privacy.epsilon: must be > 0, got {self.epsilon}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"privacy.delta: must be in (0, 1), got {self.delta}")
        if not self.max_grad_norm > 0:
            raise ConfigError(f"privacy.max_grad_norm: must be > 0, got {self.max_grad_norm}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError(
                f"privacy.noise_multiplier: must be > 0 (without noise there is no guarantee), got {self.noise_multiplier}"
            )
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"privacy.steps: must be >= 1, got {self.steps}")
        if self.noise_multiplicity < 1:
            raise ConfigError(f"privacy.noise_multiplicity: must be >= 1, got {self.noise_multiplicity}")

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None


# --- accounting (Opacus' accountants) --------------------------------------------------------------


@functools.cache
def _rdp_one_step(sample_rate: float, noise_multiplier: float) -> tuple[float, ...]:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    rdp = compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS
    )
    return tuple(float(x) for x in rdp)


def accountant_epsilon(accountant: str, noise_multiplier: float, sample_rate: float, steps: int,
                       delta: float) -> float:  # fmt: skip
    """The epsilon Opacus' `accountant` gives after `steps` DP-SGD steps at (sigma, q)."""
    if steps <= 0:
        return 0.0
    if accountant == "rdp":
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis.rdp import get_privacy_spent

        # what RDPAccountant.get_epsilon computes, number for number: Opacus' RDP of `steps` steps
        # is one step's times `steps`, and one step's (the slow part: a series per order) is
        # computed once per (q, sigma) here, as the budget search and the logs ask for many steps
        rdp = np.asarray(_rdp_one_step(sample_rate, noise_multiplier)) * int(steps)
        eps, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
        return float(eps)
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [(noise_multiplier, sample_rate, int(steps))]
    return float(acc.get_epsilon(delta=delta))


def calibrate_noise(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The smallest sigma (to EPSILON_TOLERANCE) whose epsilon after `steps` steps is <= `epsilon`."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                          steps=steps, accountant=accountant, epsilon_tolerance=EPSILON_TOLERANCE))  # fmt: skip
    except ValueError as exc:
        raise ConfigError(
            f"privacy.epsilon: no noise multiplier reaches epsilon {epsilon:g} at delta {delta:g} over {steps} steps "
            f"at sample rate {sample_rate:.4g} ({exc}); raise epsilon or plan fewer steps"
        ) from None


def largest_steps(within: Callable[[int], bool], known: int = 0) -> int:
    """The largest n >= `known` with within(n) true, for `within` monotone (true, then false)
    and true at `known`: doubling, then bisection."""
    lo, hi = known, max(2 * known, 1)
    while within(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if within(mid) else (lo, mid)
    return lo


# --- what the private modules may contain -----------------------------------------------------------


def check_layers(model_name: str, modules: dict[str, nn.Module]) -> None:
    """Refuse layers DP-SGD cannot train (ConfigError naming each): batch norm (its statistics
    mix the examples of a batch, with or without affine parameters), reparametrised weights
    (spectral norm: Opacus computes per-sample gradients of a layer's own parameters only) and
    whatever Opacus' `ModuleValidator` refuses."""
    from opacus.validators import ModuleValidator
    from torch.nn.utils import parametrize

    problems: list[str] = []
    for root, module in modules.items():
        found = len(problems)
        for name, sub in module.named_modules():
            where = f"{root}.{name}" if name else root
            kind = type(sub).__name__
            if isinstance(sub, _BATCH_NORMS):
                problems.append(f"{where} ({kind}): batch statistics mix the examples of a batch")
            elif parametrize.is_parametrized(sub):
                names = ", ".join(sub.parametrizations.keys())
                problems.append(f"{where} ({kind}): its {names} is reparametrised (e.g. spectral norm)")
            else:
                validator = ModuleValidator.VALIDATORS.get(type(sub))
                problems += [f"{where} ({kind}): {err}" for err in (validator(sub) if validator else [])]
        if len(problems) == found:  # Opacus' own check of the whole module (training mode, ...)
            problems += [f"{root}: {err}" for err in ModuleValidator.validate(module, strict=False)]
    if problems:
        raise ConfigError(
            f"model {model_name}: DP-SGD cannot train these layers of its private modules "
            f"({', '.join(modules)}): "
            + "; ".join(problems)
            + ". Use layers that treat each example on its own (GroupNorm or LayerNorm instead of BatchNorm)"
        )


def _not_in_place(module: nn.Module) -> None:
    """Turn off in-place activations: Opacus' backward hooks wrap each hooked layer's output, and
    autograd forbids modifying such an output in place. Same function, one more buffer."""
    for sub in module.modules():
        if getattr(sub, "inplace", None) is True:
            sub.inplace = False


# --- the trainer's part ------------------------------------------------------------------------------


class PrivacyMechanism:
    """What every privacy mechanism of the trainer shares: the accountant (Opacus'), the noise
    generator the checkpoints save, the public batches of the phases that must not read private
    data, and the records. A family names its mechanism (`GenerativeModel.privacy_mechanism`):
    "dp-sgd" (`PrivateTraining`, below) or "release" (train/privacy_release.py)."""

    def _setup_common(self, trainer: Any, config: PrivacyConfig, num_examples: int,
                      noise_device: Any = None) -> None:  # fmt: skip
        from opacus.accountants import create_accountant

        self.config, self.trainer, self.num_examples = config, trainer, num_examples
        # what the modality adds to the record (text: the privacy unit, whether the tokenizer is covered)
        describe = getattr(trainer.feed, "privacy_record", None)
        self.feed_record: dict[str, Any] = describe() if describe is not None else {}
        self.expected_batch = trainer.config.batch_size
        self._check_delta()
        device = trainer.device if noise_device is None else noise_device
        self.noise = torch.Generator(device=device).manual_seed(trainer.config.seed + NOISE_STREAM)
        self.accountant = create_accountant(config.accountant)
        self._public_classes = trainer._conditional_classes()
        # a speaker-conditioned family's public phases (an audio GAN's generator) get speakers the same way
        model = trainer.model
        speakers = int(getattr(model.config, "num_speakers", 0) or 0)
        self._public_speakers = speakers if getattr(model, "speaker_conditional", False) else 0

    def _check_delta(self) -> None:
        n, delta = self.num_examples, self.config.delta
        if delta >= 1.0 / n:
            suggestion = 10 ** math.floor(math.log10(0.1 / n))
            raise ConfigError(
                f"privacy.delta: {delta:g} is not below 1/N = 1/{n}: a run that publishes one random example "
                f"in the clear meets such a delta; use e.g. {suggestion:g}"
            )

    @property
    def steps_taken(self) -> int:
        """Mechanism invocations the accountant has counted (DP-SGD steps, across resumes and
        rolled-back steps too; a release: 1)."""
        return sum(int(h[2]) for h in self.accountant.history)

    def epsilon(self) -> float:
        """The epsilon spent so far, from the accountant's history."""
        if not self.accountant.history:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.config.delta))

    def public_batch(self, batch: Batch, step: int, repeat: int) -> Batch:
        """What a phase outside the private set sees: zeros of the expected batch size and, for
        a conditional model, labels (and speakers, for a speaker-conditioned one) drawn uniformly
        (not the private class or speaker mix)."""
        data = batch.data
        zeros = data.new_zeros((self.expected_batch, *data.shape[1:]))
        seed = np.random.SeedSequence([self.trainer.config.seed, step, repeat, PUBLIC_STREAM])
        gen = torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0]))
        labels, speakers = (
            torch.randint(0, n, (self.expected_batch,), generator=gen).to(data.device) if n else None
            for n in (self._public_classes, self._public_speakers)
        )
        return Batch(zeros, labels, speakers=speakers)

    def state_dict(self) -> dict[str, Any]:
        return {
            "accountant": self.config.accountant,
            "history": [[float(s), float(q), int(n)] for s, q, n in self.accountant.history],
            "noise": ckpt.generator_state(self.noise),
        }

    def load_state_dict(self, state: dict[str, Any] | None, *, keep_spent: bool = False) -> None:
        """Restore a checkpoint's privacy state. `keep_spent` (a divergence rollback): keep the
        accountant's history, so the steps rolled back still count as spent."""
        if not state:
            raise GenforgeError("checkpoint has no privacy state: it was written by a run without DP")
        if state.get("accountant") != self.config.accountant:
            raise GenforgeError(
                f"checkpoint's privacy accountant is {state.get('accountant')!r}, the run's {self.config.accountant!r}"
            )
        if not keep_spent:
            self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
        ckpt.set_generator_state(self.noise, state["noise"])

    def setup(self) -> dict[str, Any]:
        raise NotImplementedError

    def _setup_fields(self, mechanism: str, library_note: str = "") -> dict[str, Any]:
        """The fields of `setup()` every mechanism records."""
        import opacus

        c = self.config
        return {
            "mechanism": mechanism,
            "library": f"opacus {opacus.__version__}{library_note}",
            "delta": c.delta,
            "target_epsilon": c.epsilon,
            "accountant": c.accountant,
            "noise_multiplier": self.noise_multiplier,
            "dataset_size": self.num_examples,
            "planned_steps": self.planned_steps,
            "unit": "one training example, added or removed",
            "secure_rng": False,
            **self.feed_record,
        }

    def resolved_config(self) -> dict[str, Any]:
        """The config as run.json keeps it: with the noise multiplier used and the steps it was
        planned for, so a resumed run (whatever its new step budget) trains with the same noise."""
        from genforge.core.config import to_dict

        return {**to_dict(self.config), "noise_multiplier": self.noise_multiplier, "steps": self.planned_steps}

    def record(self) -> dict[str, Any]:
        """What was private and what it cost: model.json's `privacy`."""
        return {"epsilon": self.epsilon(), "steps": self.steps_taken, **self.setup()}

    def log_values(self) -> dict[str, float]:
        return {"privacy/epsilon": self.epsilon(), "privacy/dp_steps": self.steps_taken}

    @staticmethod
    def public_dataset_info(info: dict[str, Any]) -> dict[str, Any]:
        """The dataset description a DP run records: without the private split's class counts
        (sampling then draws classes uniformly)."""
        return {k: v for k, v in info.items() if k != "class_counts"}


class PrivateTraining(PrivacyMechanism):
    """DP-SGD for a built `Trainer`'s private phases (see the module docstring)."""

    def __init__(self, trainer: Any, config: PrivacyConfig):
        model, tcfg, name = trainer.model, trainer.config, trainer.model_name
        self.config = config
        self._check_run(trainer)
        num_examples, self.sample_rate = self._sampling(trainer)
        self._setup_common(trainer, config, num_examples)

        specs = {p.name: p for p in model.phases()}
        declared = model.private_modules
        private = [
            ph for ph in trainer.phases if declared is None or set(specs[ph.name].modules) & set(declared)
        ]
        if not private:
            raise ConfigError(f"model {name}: no phase updates its private modules {list(declared or ())}")
        self.private_phases = [ph.name for ph in private]
        self.public_phases = [ph.name for ph in trainer.phases if ph.name not in self.private_phases]
        problems = model.private_training_problems()  # the family's own hints first: they name the fix
        if problems:
            raise ConfigError(
                f"model {name}: differentially private training cannot use " + "; ".join(problems)
            )
        grouped = [ph.name for ph in trainer.phases if ph.group]
        if grouped:
            raise ConfigError(
                f"model {name}: phases {', '.join(grouped)} run as one group from a shared forward; under DP each "
                "private phase needs its own forward on the private batch and the others theirs on public inputs"
            )
        # every module a private phase updates is private, also ones the family did not name
        self.module_names = list(dict.fromkeys(m for ph in private for m in specs[ph.name].modules))
        modules = {m: getattr(model, m) for m in self.module_names}
        check_layers(name, modules)
        self._set_noise_multiplicity(model, name)

        # (every, repeats) of the private phases: the DP steps each trainer step takes
        self._schedule = [(ph.every, ph.repeats) for ph in private]
        self._epsilons: dict[int, float] = {}
        planned = config.steps or tcfg.steps
        if config.noise_multiplier is not None:
            # given, or calibrated when the run started (run.json keeps it: a resume with a larger
            # step budget continues with the same noise, not one recalibrated midway)
            self.noise_multiplier, safe = config.noise_multiplier, 0
            if planned is not None and config.epsilon is not None:
                planned_dp = self.dp_steps_until(planned)
                safe = planned_dp if self.epsilon_after(planned_dp) <= config.epsilon else 0
        elif planned is None:
            raise ConfigError(
                "privacy.epsilon: the noise is calibrated for a planned number of steps, and a time or image "
                "budget plans none: set privacy.steps (or train.steps / --steps), or privacy.noise_multiplier"
            )
        else:
            safe = self.dp_steps_until(planned)
            self.noise_multiplier = calibrate_noise(
                config.epsilon, config.delta, self.sample_rate, safe, config.accountant
            )
        self.planned_steps = planned
        self.max_dp_steps = self._max_dp_steps(safe, tcfg.steps)

        from opacus.grad_sample import GradSampleHooks
        from opacus.optimizers import DPOptimizer

        self._param_names = {
            id(p): f"{m}.{n}" for m, mod in modules.items() for n, p in mod.named_parameters()
        }
        self.hooks = []
        for module in modules.values():
            _not_in_place(module)
            try:
                self.hooks.append(GradSampleHooks(module, loss_reduction="mean", strict=True))
            except NotImplementedError as exc:
                raise ConfigError(
                    f"model {name}: Opacus cannot compute per-sample gradients here: {exc}"
                ) from None
        self._enable_hooks(False)
        # the first layer's input (the data) needs no gradient, and PyTorch warns that the hook
        # then fires on output gradients: that is all Opacus needs
        warnings.filterwarnings("ignore", "Full backward hook is firing when gradients are computed with respect "
                                "to module outputs", UserWarning)  # fmt: skip
        hook = self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate)
        for ph in private:
            ph.optimizer = DPOptimizer(
                ph.optimizer,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=config.max_grad_norm,
                expected_batch_size=self.expected_batch,
                loss_reduction="mean",
                generator=self.noise,
            )
            ph.optimizer.attach_step_hook(hook)
            ph.clip_grad_norm = 0.0  # per-example clipping replaces the phase's global clip

    # --- checks --------------------------------------------------------------------------------

    @staticmethod
    def _check_run(trainer: Any) -> None:
        from genforge.train.precision import resolve_precision

        if trainer.ctx.world_size > 1:
            raise ConfigError(
                "privacy: DP training runs in one process (one Poisson batch and one noise draw per step); "
                "run `genforge train` without torchrun"
            )
        precision = trainer.config.precision
        if precision not in ("auto", "fp32"):
            raise ConfigError(
                f"train.precision: {precision} computes per-sample gradients ~0.4-1% off, so a clipped "
                "gradient could exceed max_grad_norm, which the noise is scaled to: DP runs train in fp32 (use auto or fp32)"
            )
        trainer.precision = resolve_precision("fp32", trainer.device)

    def _sampling(self, trainer: Any) -> tuple[int, float]:
        """(N, q) from the feed's loader; Poisson sampling unless privacy.poisson is false."""
        loader = getattr(trainer.feed, "loader", None)
        modality = trainer.dataset.modality
        n = getattr(loader, "num_examples", None)
        if n is None:
            raise ConfigError(
                f"privacy: the {modality} training feed does not draw its batches from a fixed set of examples "
                "(no loader.num_examples), which DP accounting needs"
            )
        if self.config.poisson and getattr(loader, "sample_rate", None) is None:
            raise ConfigError(
                f"privacy.poisson: the {modality} training feed has no Poisson sampling; set privacy.poisson=false "
                "to train on fixed-size batches (the reported epsilon then assumes a sampling the run does not do)"
            )
        return int(n), trainer.config.batch_size / int(n)

    def _set_noise_multiplicity(self, model: nn.Module, name: str) -> None:
        k = self.config.noise_multiplicity
        if k == 1:
            return
        if not hasattr(model, "noise_multiplicity"):
            raise ConfigError(
                f"privacy.noise_multiplicity: model {name} draws one noise level per example; "
                "only diffusion models average several (DPDM)"
            )
        model.noise_multiplicity = k

    # --- steps and budget ---------------------------------------------------------------------

    def dp_steps_at(self, step: int) -> int:
        """DP-SGD steps trainer step `step` takes (private phases due at it, times their repeats)."""
        return sum(repeats for every, repeats in self._schedule if step % every == 0)

    def dp_steps_until(self, steps: int) -> int:
        """DP-SGD steps the trainer steps 0..steps-1 take."""
        return sum(repeats * -(-steps // every) for every, repeats in self._schedule)

    def epsilon_after(self, dp_steps: int) -> float:
        """Epsilon after `dp_steps` steps at this run's (sigma, q); cached, since the budget
        search, the logs and the records ask for the same counts (the PRV accountant takes ~0.5 s)."""
        if dp_steps not in self._epsilons:
            c = self.config
            self._epsilons[dp_steps] = accountant_epsilon(
                c.accountant, self.noise_multiplier, self.sample_rate, dp_steps, c.delta
            )
        return self._epsilons[dp_steps]

    def _max_dp_steps(self, safe: int, train_steps: int | None) -> int | None:
        """The most DP steps within the target epsilon (None without a target). `safe` steps are
        known to be within it; when the step budget ends before them, no search is needed."""
        target = self.config.epsilon
        if target is None:
            return None
        if train_steps is not None and self.dp_steps_until(train_steps) <= safe:
            return safe
        return largest_steps(lambda n: self.epsilon_after(n) <= target, safe)

    def epsilon(self) -> float:
        """The epsilon spent so far, from the accountant's history."""
        history = self.accountant.history
        if all((s, q) == (self.noise_multiplier, self.sample_rate) for s, q, _ in history):
            return self.epsilon_after(self.steps_taken)  # one (sigma, q): the same number, cached
        return super().epsilon()

    def exhausted(self, step: int) -> str | None:
        """The Budget's stop rule: why trainer step `step` must not run, or None."""
        if self.max_dp_steps is None:
            return None
        due = self.dp_steps_at(step)
        if due and self.steps_taken + due > self.max_dp_steps:
            return (
                f"privacy budget spent (epsilon {self.epsilon():.4g} of {self.config.epsilon:g} at delta "
                f"{self.config.delta:g} after {self.steps_taken} DP steps)"
            )
        return None

    def fraction(self, step: int) -> float:
        return self.steps_taken / self.max_dp_steps if self.max_dp_steps else 0.0

    # --- a phase step ---------------------------------------------------------------------------

    def run_phase(self, ph: Any, batch: Batch, step: int, repeat: int,
                  body: Callable[[Any, Batch, int], None]) -> None:  # fmt: skip
        """Run `body(ph, batch, step)` (the trainer's forward, backward and optimiser step) as DP
        needs it: a private phase with the per-sample gradient hooks on (and an empty Poisson
        batch as a noise-only step), a public phase on a public batch."""
        if ph.name not in self.private_phases:
            body(ph, self.public_batch(batch, step, repeat), step)
            return
        if len(batch.data) == 0:
            self._noise_only_step(ph)
            return
        self._enable_hooks(True)
        try:
            body(ph, batch, step)
        except ValueError as exc:
            if "Per sample gradient" not in str(exc):
                raise
            missing = [
                self._param_names.get(id(p), "?")
                for p in ph.params
                if getattr(p, "grad_sample", None) is None
            ]
            raise GenforgeError(
                f"model {self.trainer.model_name}: phase {ph.name!r} got no per-sample gradient for "
                f"{', '.join(missing)}: a parameter used outside its layer's forward cannot be clipped per example"
            ) from None
        finally:
            self._enable_hooks(False)

    def _noise_only_step(self, ph: Any) -> None:
        """The step of an empty Poisson batch: no example, so zero clipped gradients plus noise."""
        ph.optimizer.zero_grad(set_to_none=True)
        for p in ph.params:
            p.grad_sample = p.new_zeros((0, *p.shape))
        self.trainer._optimizer_step(ph)

    def _enable_hooks(self, on: bool) -> None:
        for hooks in self.hooks:
            hooks.enable_hooks() if on else hooks.disable_hooks()

    # --- state and records -----------------------------------------------------------------------

    def setup(self) -> dict[str, Any]:
        """What is private and how (run.json's `private_training`, written before training)."""
        c = self.config
        return {
            **self._setup_fields("DP-SGD"),
            "max_grad_norm": c.max_grad_norm,
            "sample_rate": self.sample_rate,
            "sampling": "poisson" if c.poisson else "fixed-size batches (the accountant assumes Poisson)",
            "expected_batch_size": self.expected_batch,
            "noise_multiplicity": c.noise_multiplicity,
            "private_modules": self.module_names,
            "private_phases": self.private_phases,
            "public_phases": self.public_phases,
        }


MECHANISMS: Registry[type[PrivacyMechanism]] = Registry(
    "privacy mechanism", lambda name, cls: _check_mechanism(name, cls)
)


def _check_mechanism(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, PrivacyMechanism)):
        raise TypeError(f"privacy mechanism {name!r}: expected a PrivacyMechanism subclass, got {cls!r}")


MECHANISMS.register("dp-sgd", PrivateTraining)


def build_mechanism(trainer: Any, config: PrivacyConfig) -> PrivacyMechanism:
    """The mechanism the trainer's model names (`GenerativeModel.privacy_mechanism`)."""
    name = trainer.model.privacy_mechanism
    if name not in MECHANISMS:
        import genforge.train.privacy_release  # noqa: F401  (registers "release")
    if name not in MECHANISMS:
        raise ConfigError(f"model {trainer.model_name}: unknown privacy mechanism {name!r} "
                          f"(known: {', '.join(MECHANISMS.names())})")  # fmt: skip
    return MECHANISMS.get(name)(trainer, config)


# --- readers for the later stages (evaluate, report, deploy) -------------------------------------------


def metric_values(record: dict[str, Any] | None) -> dict[str, Any]:
    """A run's privacy record as metrics.json values (dp_epsilon, dp_delta, ...); {} without DP."""
    if not record:
        return {}
    return {key: record[field] for field, key in METRIC_KEYS.items() if field in record}


def public_metrics(metrics: dict[str, Any] | None, info: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics a service may show for a run: all of them without DP; for a DP run only the
    privacy values, since the others are computed on the private data outside the guarantee."""
    if not info.get("privacy") or metrics is None:
        return metrics
    values = metrics.get("values", {})
    return {
        "values": {k: v for k, v in values.items() if k in METRIC_KEYS.values()},
        "withheld": "metrics computed on the private data are not covered by the DP guarantee (docs/privacy.md)",
    }
