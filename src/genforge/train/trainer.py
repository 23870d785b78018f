"""The one training loop for every model family.

Each step takes one batch from the loader and runs every phase due at this step (`step % every
== 0`), `repeats` times, each extra repeat on a fresh batch: the model computes the phase's loss,
the phase's optimiser steps its submodules' parameters. Everything random goes through state the
checkpoints save (global RNGs, generators the model holds, the loader's position, the trainer's
augmentation generator), so a resumed run continues bit for bit where the checkpoint left it.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge import __version__
from genforge.core.atomic import write_json
from genforge.core.config import to_dict
from genforge.core.errors import ConfigError, DiskFullError, GenforgeError
from genforge.core.host_memory import retain_freed_memory
from genforge.core.lock import DirLock
from genforge.models.base import Batch, GenerativeModel, LRSchedule, ModelOutput
from genforge.models.pipeline import class_mix_labels, save_model
from genforge.models.registry import MODELS
from genforge.train import checkpoint as ckpt
from genforge.train import distributed as dist
from genforge.train.budget import Budget, parse_duration
from genforge.train.callbacks import Callback
from genforge.train.compile import compile_regions, compile_wanted
from genforge.train.config import TrainConfig
from genforge.train.ema import EMA
from genforge.train.feeds import feed_for
from genforge.train.guard import DivergenceGuard
from genforge.train.logs import MetricsLog, Progress
from genforge.train.optim import build_optimizer
from genforge.train.precision import resolve_device, resolve_precision
from genforge.train.schedule import check_schedule, is_constant, lr_factor

RUN_JSON = "run.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FORMAT = "genforge-checkpoint"


@dataclass
class _PhaseRuntime:
    name: str
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    every: int
    repeats: int
    scaler: Any = None  # torch.amp.GradScaler for fp16
    group: str = ""  # Phase.group: run from one forward with the other phases of the group
    schedule: LRSchedule = field(default_factory=LRSchedule)
    clip_grad_norm: float = 0.0


class Trainer:
    def __init__(
        self,
        model_name: str,
        model_config: Any,
        config: TrainConfig,
        dataset: Any,  # a canonical dataset of any modality (data.canonical.open_dataset)
        run_dir: str | Path,
        *,
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        augment: Any = None,
        augment_config: Any = None,
        context: dist.DistContext | None = None,
        init_from: Any = None,  # train.init_from.InitFrom: the base run of a fine-tuning run
        privacy: Any = None,  # train.privacy.PrivacyConfig: train with DP-SGD (None: without)
    ):
        if not config.has_budget:
            raise ConfigError(
                "no training budget: give --steps, --images or --max-time (train.steps/images/max_time)"
            )
        self.model_name, self.config, self.dataset = model_name, config, dataset
        self.privacy = privacy if privacy is not None and privacy.enabled else None  # the feed reads it
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks)
        self.augment, self.augment_config = augment, augment_config
        self.ctx = context or dist.from_env()
        self.device = resolve_device(config.device, self.ctx.local_rank)
        self.precision = resolve_precision(config.precision, self.device)
        dist.init(self.ctx, self.device)
        if config.batch_size % self.ctx.world_size:
            raise ConfigError(
                f"train.batch_size: {config.batch_size} is not divisible by the {self.ctx.world_size} processes"
            )
        if config.deterministic:
            # CUDA has kernels without deterministic versions; there, determinism is best effort
            torch.use_deterministic_algorithms(True, warn_only=self.device.type != "cpu")
            # deterministic mode also fills every torch.empty with NaN, a debugging aid that costs
            # time on each allocation and changes no result of a correct program
            torch.utils.deterministic.fill_uninitialized_memory = False
            torch.backends.cudnn.benchmark = False
        if config.retain_host_memory and self.device.type == "cpu":
            retain_freed_memory()
        self._seed_everything(
            config.seed
        )  # same initial weights on every rank (rank 0's are broadcast anyway)
        self.model: GenerativeModel = MODELS.get(model_name)(model_config).to(self.device)
        self.init_from = init_from
        if init_from is not None:  # base weights, frozen trunk: before the EMA and the optimisers see them
            from genforge.train.init_from import start_from_base

            start_from_base(self.model, init_from, model_name)
        self._seed_everything(config.seed + self.ctx.rank)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        dist.broadcast_module(self.ctx, self.model)
        # CPU generators: the augmentation draws on the generator's device and moves the numbers,
        # and a CPU stream gives the same draws whatever device trains
        self.augment_generator = torch.Generator().manual_seed(config.seed + 7919 * self.ctx.rank)
        self._check_data_fits_model()
        # the modality's part: batches, resumable position, sample writing (train/feeds/)
        self.feed = feed_for(dataset.modality)(self)
        self.feed.check_fits(self.model)
        if init_from is not None and init_from.state is not None:
            self.feed.check_base_run(init_from.path)
        self.loader = getattr(self.feed, "loader", self.feed)

        self.phases = self._build_phases()
        self._units = self._group_units()
        # DP-SGD (train/privacy.py): wraps the private phases' optimisers, hooks their modules
        self.private = None
        if self.privacy is not None:
            from genforge.train.privacy import build_mechanism

            self.private = build_mechanism(self, self.privacy)
        self.ema = (
            EMA(self.model, self.model.ema_modules, config.ema_decay, config.ema_warmup)
            if config.ema and self.model.ema_modules
            else None
        )
        self.guard = DivergenceGuard(config.guard_lr_factor, config.guard_max_retries)
        self.weights_step: int | None = None  # set by keep_weights: the final weights are from this step
        self.budget = Budget(
            config.steps,
            config.images,
            parse_duration(config.max_time, "train.max_time") if config.max_time else None,
            rules=[self.private] if self.private is not None else [],
        )
        self.compiled = self._compile()  # after the EMA: its copy stays eager (it never trains)
        self.step = 0
        self.images_seen = 0
        self.elapsed_before = 0.0
        self.last_metrics: dict[str, Any] = {}
        # what the statistics pass of a `data_statistics` family did (checkpointed: a resume keeps it)
        self.statistics_record: dict[str, Any] | None = None
        self._acc: dict[str, torch.Tensor] = {}
        self._acc_n: dict[str, int] = {}
        self._log: MetricsLog | None = None
        self._progress: Progress | None = None

    # --- setup -------------------------------------------------------------------------------

    def _compile(self) -> bool:
        """Compile the model's regions for training steps when train.compile asks (train/compile.py)."""
        cfg = self.config
        if not compile_wanted(cfg.compile, self.device, self.budget.seconds, self.budget.steps):
            return False
        if self.private is not None:
            if cfg.compile is True:
                raise ConfigError(
                    "train.compile: DP-SGD takes per-example gradients from hooks on the layers, which a "
                    "compiled region runs past; set train.compile=false for a private run"
                )
            return False
        return bool(compile_regions(self.model))  # a family may name none (it ran slower compiled)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _check_data_fits_model(self) -> None:
        if self.model.modality != self.dataset.modality:
            raise ConfigError(
                f"model {self.model_name!r} is a {self.model.modality} model but {self.dataset.path} "
                f"is a {self.dataset.modality} dataset"
            )
        cfg = self.model.config
        classes = int(getattr(cfg, "num_classes", 0) or 0)
        if classes:
            split = self.dataset.split(self.config.split)
            if not split.has_labels:
                raise ConfigError(
                    f"model.num_classes is {classes} but split {split.name!r} of {self.dataset.path} is unlabelled"
                )
            if classes != self.dataset.num_classes:
                raise ConfigError(
                    f"model.num_classes is {classes} but {self.dataset.path} has {self.dataset.num_classes} classes"
                )

    def _build_phases(self) -> list[_PhaseRuntime]:
        phases = []
        for phase in self.model.phases():
            params: list[torch.nn.Parameter] = []
            seen: set[int] = set()
            for mod_name in phase.modules:
                module = getattr(self.model, mod_name, None)
                if not isinstance(module, torch.nn.Module):
                    raise ConfigError(
                        f"model {self.model_name}: phase {phase.name!r} names unknown submodule {mod_name!r}"
                    )
                for p in module.parameters():
                    if p.requires_grad and id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
            if not params:
                raise ConfigError(
                    f"model {self.model_name}: phase {phase.name!r} has no trainable parameters"
                )
            check_schedule(phase.schedule, f"model {self.model_name}: phase {phase.name!r} schedule")
            opt = build_optimizer(phase.optimizer, params, self.config.optimizer_impl)
            scaler = torch.amp.GradScaler(self.device.type) if self.precision.needs_scaler else None
            base_lrs = [g["lr"] for g in opt.param_groups]
            phases.append(
                _PhaseRuntime(
                    phase.name,
                    params,
                    opt,
                    base_lrs,
                    max(1, phase.every),
                    max(1, phase.repeats),
                    scaler,
                    phase.group,
                    phase.schedule,
                    max(0.0, phase.clip_grad_norm),
                )
            )
        self._check_groups(phases)
        self._scheduled = any(not is_constant(ph.schedule) for ph in phases)
        return phases

    def _check_groups(self, phases: list[_PhaseRuntime]) -> None:
        seen: set[str] = set()
        for i, ph in enumerate(phases):
            if not ph.group:
                continue
            if ph.every != 1 or ph.repeats != 1:
                raise ConfigError(
                    f"model {self.model_name}: phase {ph.name!r} of group {ph.group!r} has every/repeats "
                    "other than 1; grouped phases share one forward, so they run once per step"
                )
            if ph.group in seen and phases[i - 1].group != ph.group:
                raise ConfigError(f"model {self.model_name}: the phases of group {ph.group!r} must be consecutive")
            seen.add(ph.group)

    def _group_units(self) -> list[list[_PhaseRuntime]]:
        """The phases in order, consecutive phases of one group together."""
        units: list[list[_PhaseRuntime]] = []
        for ph in self.phases:
            if ph.group and units and units[-1][0].group == ph.group:
                units[-1].append(ph)
            else:
                units.append([ph])
        return units

    # --- the loop ----------------------------------------------------------------------------

    def _next_batch(self) -> Batch:
        # `images` counts training items of any modality (images, clips, token sequences)
        self.images_seen += self.config.batch_size
        return self.feed.next_batch()

    def _train_step(self, step: int) -> None:
        if self._scheduled:
            self._apply_lr_scale()
        batch = self._next_batch()
        for unit in self._units:
            if len(unit) > 1:
                self._grouped_step(unit, batch, step)
                continue
            ph = unit[0]
            if step % ph.every:
                continue
            for repeat in range(ph.repeats):
                b = batch if repeat == 0 else self._next_batch()
                if self.private is not None:
                    self.private.run_phase(ph, b, step, repeat, self._phase_step)
                else:
                    self._phase_step(ph, b, step)
        if self.ema is not None:
            self.ema.update(step)

    def _phase_step(self, ph: _PhaseRuntime, batch: Batch, step: int) -> None:
        with self.precision.autocast():
            out = self.model.training_step(ph.name, batch, step)
        ph.optimizer.zero_grad(set_to_none=True)
        self._backward(ph, out.loss)
        self._optimizer_step(ph)
        self._record(ph.name, out)

    def _grouped_step(self, unit: list[_PhaseRuntime], batch: Batch, step: int) -> None:
        """One forward for the group; each phase's gradients (of its own loss, for its own
        parameters only) are all taken before any of them steps, so none sees another's update."""
        group = unit[0].group
        with self.precision.autocast():
            out = self.model.training_step(group, batch, step)
        missing = [ph.name for ph in unit if ph.name not in out.parts]
        if missing:
            raise GenforgeError(f"model {self.model_name}: the {group!r} step returned no part for {missing}")
        for i, ph in enumerate(unit):
            ph.optimizer.zero_grad(set_to_none=True)
            self._backward(ph, out.parts[ph.name].loss, retain_graph=i < len(unit) - 1)
        for ph in unit:
            self._optimizer_step(ph)
            self._record(ph.name, out.parts[ph.name])

    def _backward(self, ph: _PhaseRuntime, loss: torch.Tensor, retain_graph: bool = False) -> None:
        scaled = ph.scaler.scale(loss) if ph.scaler is not None else loss
        # gradients for this phase's parameters only: the graph is not walked further than they need
        torch.autograd.backward(scaled, inputs=ph.params, retain_graph=retain_graph)
        dist.reduce_gradients(self.ctx, ph.params)

    def _optimizer_step(self, ph: _PhaseRuntime) -> None:
        if ph.clip_grad_norm:
            if ph.scaler is not None:
                ph.scaler.unscale_(ph.optimizer)  # clip the true gradients, not the scaled ones
            norm = torch.nn.utils.clip_grad_norm_(ph.params, ph.clip_grad_norm, foreach=True)
            self._accumulate(f"{ph.name}/grad_norm", norm)
        if ph.scaler is not None:
            ph.scaler.step(ph.optimizer)
            ph.scaler.update()
        else:
            ph.optimizer.step()

    def _record(self, phase: str, out: ModelOutput) -> None:
        if self.config.guard:
            self.guard.observe(out.loss)
        items = {f"{phase}/loss": out.loss, **{f"{phase}/{k}": v for k, v in out.terms.items()}}
        for key, value in items.items():
            self._accumulate(key, value)

    def _accumulate(self, key: str, value: torch.Tensor | float) -> None:
        """Add `value` to the mean of `key` logged at the next log step (no device sync)."""
        v = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
        self._acc[key] = self._acc[key] + v if key in self._acc else v
        self._acc_n[key] = self._acc_n.get(key, 0) + 1

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self._t0)

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until the budget is spent; returns a summary. Rank 0 writes the run directory,
        holding its lock (core/lock.py): a second process training the same run is refused."""
        with DirLock(self.run_dir) if self.ctx.is_main else contextlib.nullcontext():
            return self._fit(resume)

    def _fit(self, resume: bool) -> dict[str, Any]:
        main = self.ctx.is_main
        resumed_from = self._resume() if resume else None
        if resumed_from is None and self.model.data_statistics:
            self._fit_statistics()  # a resumed run has its targets in the checkpoint's weights
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_run_json()
            self.feed.write_run_files(self.run_dir)
            self._log = MetricsLog(
                self.run_dir, self.config.tensorboard, resume_step=self.step if resume else None
            )
            self._progress = Progress(self.config.progress)
            if resumed_from is not None:
                self._progress.message(f"resumed from {resumed_from} (step {self.step})")
        # the state to roll back to when training diverges before the first checkpoint
        self._initial = None
        if resumed_from is None:
            tensors, meta = self.capture_state()
            self._initial = ({k: v.detach().clone() for k, v in tensors.items()}, meta)
        self._run_callbacks("on_train_start")
        self._t0 = time.monotonic()
        self._log_t, self._log_images = self._t0, self.images_seen
        guard_every = self.config.guard_every or (1 if self.device.type == "cpu" else self.config.log_every)
        last_checkpoint = self.step if resumed_from is not None else -1
        first_step = self.step
        try:
            while True:
                reason = self.budget.exhausted(self.step, self.images_seen, self.elapsed())
                if reason is not None:
                    # losses since the last check must be finite before anything is saved
                    if self.config.guard and self._check_divergence(check_weights=True):
                        continue
                    break
                self._train_step(self.step)
                self.step += 1
                s, cfg = self.step, self.config
                at_checkpoint = bool(cfg.checkpoint_every) and s % cfg.checkpoint_every == 0
                if (
                    cfg.guard
                    and (s % guard_every == 0 or at_checkpoint)
                    and self._check_divergence(at_checkpoint)
                ):
                    continue
                if s % cfg.log_every == 0 or at_checkpoint:
                    self._log_step()
                if main and cfg.sample_every and s % cfg.sample_every == 0:
                    self.write_samples()
                # callbacks first, so an evaluation at this step counts for the best checkpoint
                self._run_callbacks("on_step_end", s)
                if at_checkpoint:
                    self.save_checkpoint()
                    last_checkpoint = s
            self._log_step()
            self._run_callbacks("on_train_end")
            if last_checkpoint != self.step:
                self.save_checkpoint()
            if main:
                # a resumed run whose budget was already spent trains nothing: its samples at this
                # step were written when it got here (and a restoration model has no batch to show)
                if self.step != first_step:
                    self.write_samples()
                self.save_final()
                self._progress.message(
                    f"done: {reason}; {self.step} steps, {self.images_seen} images -> {self.run_dir}"
                )
        finally:
            if self._progress is not None:
                self._progress.close()
            if self._log is not None:
                self._log.close()
        dist.barrier(self.ctx)
        dist.shutdown(self.ctx)
        return {
            "step": self.step,
            "images": self.images_seen,
            "elapsed": self.elapsed(),
            "stop_reason": reason,
        }

    def _fit_statistics(self) -> None:
        """The one pass over the training split a `data_statistics` family trains against
        (train/statistics.py): per-class means of its embedding, released with noise under
        privacy (train/privacy_release.py). Its time counts against the run's time budget."""
        from genforge.train.statistics import ClassMeans

        t0 = time.monotonic()
        rows, dim = self.model.statistics_shape()
        stats = ClassMeans(rows, dim).add_all(self.model.fit_statistics(self.feed.examples, self.private is not None))
        means, _ = self.private.release(stats) if self.private is not None else stats.means()
        self.model.set_targets(means.to(self.device))
        seconds = time.monotonic() - t0
        self.elapsed_before += seconds
        self.statistics_record = {**getattr(self.model, "statistics_info", {}), "examples": stats.examples,
                                  "rows": rows, "dim": dim, "seconds": round(seconds, 2),
                                  "noise_multiplier": getattr(self.private, "noise_multiplier", 0.0)}  # fmt: skip

    def _run_callbacks(self, hook: str, *args: Any) -> None:
        """Call `hook` of every callback on the main process, leaving the training RNG streams as they were."""
        if not self.ctx.is_main:
            return
        for cb in self.callbacks:
            with ckpt.preserved_rng():
                getattr(cb, hook)(self, *args)

    # --- logging, samples, final weights -------------------------------------------------------

    def _log_step(self) -> None:
        if not self._acc:
            return
        keys = sorted(self._acc)
        sums = torch.stack(
            [torch.as_tensor(self._acc[k], dtype=torch.float32, device=self.device) for k in keys]
        )
        counts = torch.tensor([self._acc_n[k] for k in keys], dtype=torch.float32, device=self.device)
        means = dist.all_reduce_mean(self.ctx, sums / counts).tolist()
        self._acc, self._acc_n = {}, {}
        now = time.monotonic()
        record: dict[str, Any] = {
            "step": self.step,
            "images": self.images_seen,
            "time": round(self.elapsed(), 3),
            "images_per_s": (self.images_seen - self._log_images) / max(now - self._log_t, 1e-9),
        }
        self._log_t, self._log_images = now, self.images_seen
        record.update(zip(keys, means, strict=True))
        record["loss"] = sum(v for k, v in zip(keys, means, strict=True) if k.endswith("/loss"))
        for ph in self.phases:
            record[f"lr/{ph.name}"] = ph.optimizer.param_groups[0]["lr"]
        if self.ema is not None:
            record["ema_decay"] = self.ema.decay_at(self.step)
        if self.private is not None:
            record.update(self.private.log_values())
        self.log_metrics(self.step, record)

    def log_metrics(self, step: int, values: dict[str, Any]) -> None:
        """Write `values` for `step` into metrics.jsonl/TensorBoard (rank 0); callbacks use this too."""
        self.last_metrics.update(values)
        if self._log is None:
            return
        self._log.write({"step": step, **values})
        if self._progress is not None and "images_per_s" in values:
            self._progress.update(
                self.budget.fraction(self.step, self.images_seen, self.elapsed()), {"step": step, **values}
            )

    @contextlib.contextmanager
    def ema_weights(self):
        """The model with its EMA weights in place (or as is, without EMA), in eval mode."""
        ctx = self.ema.applied() if self.ema is not None else contextlib.nullcontext()
        was_training = self.model.training
        with ctx:
            self.model.eval()
            try:
                yield self.model
            finally:
                self.model.train(was_training)

    def _conditional_classes(self) -> int:
        classes = int(getattr(self.model.config, "num_classes", 0) or 0)
        return classes if getattr(self.model, "conditional", False) else 0

    def sample_labels(self, n: int) -> torch.Tensor | None:
        """Labels for the sample grids: 0, 1, 2, ... cycling, so every class shows."""
        classes = self._conditional_classes()
        return torch.arange(n, device=self.device) % classes if classes else None

    def eval_labels(self, n: int) -> torch.Tensor | None:
        """Labels for scoring samples during training: the training split's class mix, as
        `genforge eval` samples a finished run (models/pipeline.py `class_mix_labels`)."""
        classes = self._conditional_classes()
        if not classes:
            return None
        counts = self.dataset.split(self.config.split).class_counts
        return torch.from_numpy(class_mix_labels(counts, classes, n)).to(self.device)

    def write_samples(self) -> Path | None:
        """A grid of samples from fixed noise (EMA weights) into samples/step-NNNNNNN.png."""
        if self.model.task == "encode":  # encoders (simclr) produce embeddings, not images
            return None
        n = self.config.sample_count
        stem = self.run_dir / "samples" / ckpt.step_dir_name(self.step)
        with ckpt.preserved_rng(), self.ema_weights() as model:
            return self.feed.write_samples(
                model, stem, self._log, self.step, n=n, seed=self.config.sample_seed, labels=self.sample_labels(n)
            )

    def dataset_info(self) -> dict[str, Any]:
        # the class frequencies the model saw: conditional sampling for evaluation draws labels
        # in these proportions (models/pipeline.py `class_mix_labels`)
        split = self.dataset.split(self.config.split)
        info = {**self.dataset.describe(), "split": split.name, "class_counts": split.class_counts}
        return self.private.public_dataset_info(info) if self.private is not None else info

    def save_final(self) -> None:
        use_ema = self.ema is not None and self.config.final_weights == "ema"
        info = {
            "dataset": self.dataset_info(),
            "step": self.step,
            **({"weights_step": self.weights_step} if self.weights_step is not None else {}),
            "images": self.images_seen,
            "ema": use_ema,
            "train": to_dict(self.config),
            "genforge_version": __version__,
            **self._init_from_record(),
            **({"privacy": self.private.record()} if self.private is not None else {}),
            **({"statistics": self.statistics_record} if self.statistics_record else {}),
        }
        ctx = self.ema.applied() if use_ema else contextlib.nullcontext()
        with ctx:
            save_model(self.model, self.model_name, self.run_dir, info)

    def _init_from_record(self) -> dict[str, Any]:
        return {"init_from": self.init_from.record} if self.init_from is not None else {}

    def _write_run_json(self) -> None:
        write_json(
            self.run_dir / RUN_JSON,
            {
                "model": self.model_name,
                "family": self.model.family,
                "model_config": to_dict(self.model.config),
                "train": to_dict(self.config),
                "augment": to_dict(self.augment_config) if self.augment_config is not None else None,
                "dataset": self.dataset_info(),
                "world_size": self.ctx.world_size,
                "device": str(self.device),
                "precision": self.precision.name,
                "compiled": self.compiled,  # train.compile resolved (auto: whether it compiled)
                "genforge_version": __version__,
                "torch_version": torch.__version__,
                **self._init_from_record(),
                "torch_threads": torch.get_num_threads(),
                "privacy": self.private.resolved_config() if self.private is not None else None,
                "private_training": self.private.setup() if self.private is not None else None,
            },
        )

    # --- state: checkpoints, resume, rollback ----------------------------------------------------

    def _held_generators(self) -> dict[str, torch.Generator]:
        """torch.Generators the model keeps as attributes (its private noise sources)."""
        found = {}
        for mod_name, module in self.model.named_modules():
            for attr, value in vars(module).items():
                if isinstance(value, torch.Generator):
                    found[f"{mod_name}.{attr}" if mod_name else attr] = value
        return found

    def _weight_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema/{k}": v for k, v in self.ema.state_tensors().items()})
        return tensors

    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the model's weights and their EMA, for `keep_weights` to put back."""
        return {k: v.detach().clone() for k, v in self._weight_tensors().items()}

    def keep_weights(self, tensors: dict[str, torch.Tensor], step: int) -> None:
        """End the run with the weights `weights()` copied at `step` (the optimiser's state, the
        step count and the RNGs stay the current ones); model.json records that step."""
        self._load_weights(tensors)
        self.weights_step = step

    def _load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")})
        if self.ema is not None:
            self.ema.load_state_tensors(
                {k[len("ema/") :]: v for k, v in tensors.items() if k.startswith("ema/")}
            )

    def capture_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue training exactly: (tensors, JSON-able metadata)."""
        tensors = self._weight_tensors()
        optimizers, scalers = {}, {}
        for ph in self.phases:
            t, meta = ckpt.optimizer_to_flat(ph.optimizer, f"optim/{ph.name}")
            tensors.update(t)
            optimizers[ph.name] = meta
            if ph.scaler is not None:
                scalers[ph.name] = ph.scaler.state_dict()
        rng = {
            "global": ckpt.rng_state(),
            "augment": ckpt.generator_state(self.augment_generator),
            "model": {k: ckpt.generator_state(g) for k, g in self._held_generators().items()},
        }
        training_state = getattr(self.model, "training_state", None)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model_name,
            "model_config": to_dict(self.model.config),
            "train": to_dict(self.config),
            "step": self.step,
            "images": self.images_seen,
            "elapsed": self.elapsed() if hasattr(self, "_t0") else self.elapsed_before,
            "loader": self.feed.state_dict(),
            "rng": dist.all_gather_json(self.ctx, rng),
            "optimizers": optimizers,
            "scalers": scalers,
            "guard": self.guard.state(),
            "model_state": training_state() if callable(training_state) else None,
            "metrics": {k: v for k, v in self.last_metrics.items() if isinstance(v, int | float)},
            "world_size": self.ctx.world_size,
            "privacy": self.private.state_dict() if self.private is not None else None,
            "statistics": self.statistics_record,
        }
        return tensors, meta

    def restore_state(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], *, keep_guard: bool = False
    ) -> None:
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("model") != self.model_name:
            raise GenforgeError(f"checkpoint is not a {self.model_name!r} genforge checkpoint")
        self._load_weights(tensors)
        for ph in self.phases:
            ckpt.optimizer_from_flat(ph.optimizer, tensors, meta["optimizers"][ph.name], f"optim/{ph.name}")
            if ph.scaler is not None and ph.name in meta.get("scalers", {}):
                ph.scaler.load_state_dict(meta["scalers"][ph.name])
        self.step, self.images_seen = int(meta["step"]), int(meta["images"])
        self.elapsed_before = float(meta["elapsed"])
        self.feed.load_state_dict(meta["loader"])
        ranks = meta["rng"]
        rng = ranks[self.ctx.rank] if self.ctx.rank < len(ranks) else None
        if rng is not None:
            ckpt.set_rng_state(rng["global"])
            ckpt.set_generator_state(self.augment_generator, rng["augment"])
            held = self._held_generators()
            for name, state in rng["model"].items():
                if name in held:
                    ckpt.set_generator_state(held[name], state)
        else:
            # a different number of processes than when saved: continue, reseeded per rank
            self._seed_everything(self.config.seed + self.ctx.rank + 104729 * self.step)
        load_training_state = getattr(self.model, "load_training_state", None)
        if callable(load_training_state) and meta.get("model_state") is not None:
            load_training_state(meta["model_state"])
        if self.private is not None:  # a rollback (keep_guard) does not refund the privacy spent
            self.private.load_state_dict(meta.get("privacy"), keep_spent=keep_guard)
        self.statistics_record = meta.get("statistics")
        if not keep_guard:
            self.guard.load_state(meta.get("guard", {}))
        self.last_metrics = dict(meta.get("metrics", {}))
        self._apply_lr_scale()
        self._acc, self._acc_n = {}, {}
        self.guard.reset()

    def _apply_lr_scale(self) -> None:
        """Each optimiser's lr: its base lr x the divergence guard's scale x the phase's schedule
        at the current step and budget progress."""
        progress = self._budget_progress() if self._scheduled else 0.0
        for ph in self.phases:
            factor = self.guard.lr_scale * lr_factor(ph.schedule, self.step, progress)
            for group, base in zip(ph.optimizer.param_groups, ph.base_lrs, strict=True):
                group["lr"] = base * factor

    def _budget_progress(self) -> float:
        elapsed = self.elapsed() if hasattr(self, "_t0") else self.elapsed_before
        progress = self.budget.fraction(self.step, self.images_seen, elapsed)
        if self.ctx.enabled and self.budget.seconds is not None:
            # every rank reads its own clock: agree on one value, or the replicas' lrs would differ
            value = torch.tensor(progress, dtype=torch.float64, device=self.device)
            progress = float(dist.all_reduce_max(self.ctx, value).item())
        return progress

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINTS

    def _state_is_finite(self) -> bool:
        tensors = [p.detach() for p in self.model.parameters()]
        if self.ema is not None:
            tensors += self.ema.shadow_params
        return bool(all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()))

    def save_checkpoint(self) -> Path | None:
        """Write checkpoints/step-NNNNNNN (rank 0), update best.json, prune old ones."""
        tensors, meta = self.capture_state()
        path = None
        if self.ctx.is_main:
            try:
                path = ckpt.save(self.checkpoint_dir, self.step, tensors, meta)
            except DiskFullError as exc:
                last = ckpt.latest(self.checkpoint_dir)
                where = f"the last checkpoint is {last.name}: --resume continues from it" if last else "no checkpoint yet"
                raise DiskFullError(f"{exc}. Training stopped at step {self.step}; {where}") from exc
            metric = self.config.best_metric
            ckpt.update_best(
                self.checkpoint_dir, self.step, metric, self.last_metrics.get(metric), self.config.best_mode
            )
            ckpt.prune(self.checkpoint_dir, self.config.keep_last)
            for cb in self.callbacks:
                cb.on_checkpoint(self, self.step, path)
        dist.barrier(self.ctx)
        return path

    def _resume(self) -> Path | None:
        """Restore the newest checkpoint that reads. Damaged newer ones (truncated, unparsable,
        a file missing) are set aside as step-NNNNNNN.corrupt with a warning; when none reads,
        a GenforgeError names them all."""
        damaged: list[tuple[Path, ckpt.CorruptCheckpoint]] = []
        for path in ckpt.candidates(self.checkpoint_dir):
            try:
                tensors, meta = ckpt.load(path, self.device)
            except ckpt.CorruptCheckpoint as exc:
                damaged.append((path, exc))
                continue
            self.restore_state(tensors, meta)
            for bad, exc in damaged:
                note = ""
                if self.ctx.is_main and bad.exists():  # other ranks leave the renaming to rank 0
                    try:
                        note = f"; set aside as {ckpt.set_aside(bad).name}"
                    except OSError as err:
                        note = f"; could not set it aside ({err})"
                print(f"warning: {exc}{note}; resuming from {path.name} instead", file=sys.stderr, flush=True)
            return path
        if damaged:
            raise GenforgeError(
                "--resume: no checkpoint of the run can be read: "
                + "; ".join(str(exc) for _, exc in damaged)
                + f". Move {self.checkpoint_dir} away to train the run from the start"
            )
        return None

    def _check_divergence(self, check_weights: bool = False) -> bool:
        """Roll back when a loss went non-finite (or the weights, checked before saving); True if rolled back."""
        flag = dist.all_reduce_max(self.ctx, self.guard.pending())
        why = "non-finite loss" if bool(flag.item()) else None
        if why is None and check_weights and not self._state_is_finite():
            why = "non-finite weights"
        if why is None:
            self.guard.reset()
            return False
        bad_step = self.step
        lr_scale = self.guard.diverged(bad_step, why)
        path = ckpt.latest(self.checkpoint_dir)
        tensors, meta = ckpt.load(path, self.device) if path is not None else self._initial
        self.restore_state(tensors, meta, keep_guard=True)
        note = f"{why} at step {bad_step}: rolled back to step {self.step} with lr x{lr_scale:g}"
        if self._progress is not None:
            self._progress.message(f"[yellow]divergence:[/] {note}")
        self.log_metrics(
            bad_step, {"event": "rollback", "reason": why, "to_step": self.step, "lr_scale": lr_scale}
        )
        return True
