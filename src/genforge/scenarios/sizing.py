"""Recipes that follow the data: settings a scenario derives from the data set it is given.

A scenario's recipe was tuned on one data set; `size_recipe` adjusts the settings that depend on
the data's size, so the recipe holds on data of another size. It runs after the ingest, on the
canonical dataset, and fills the training layers (`model:`, `train:`, `augment:`) before the
trainer reads them. Each rule records a line in summary.json's `sizing`.

- Batch size: at most a tenth of the train split (a power of two, at least 8), so an epoch is
  at least ten optimiser steps. A recipe's batch size was chosen for its own data; on a much
  smaller set it would make a handful of steps per epoch and little progress per second.
  Private runs keep theirs: DP-SGD's noise is calibrated per batch (train/privacy.py).
- Augmentation strength for GANs: with fewer than `SMALL_DATA` training images and no
  DiffAugment set by the scenario, DiffAugment's paper policy (colour, translation, cutout)
  is turned on: a discriminator that sees a few thousand images memorises them within minutes
  and its generator stops learning (Zhao et al. 2020; the `few-shot` scenario's recipe).

- Step budget for many classes: a conditional recipe whose step budget was chosen for
  `train.steps_classes` classes trains `steps x (classes / steps_classes) ** 0.75` steps on data
  with more classes (never fewer steps). A class-conditional generator learns each class from the
  share of each batch that class gets; with four times the classes it gets a quarter of the
  updates per step. Less than the full ratio, because the classes share much of what is learnt
  (strokes, shapes). The exponent was chosen on development sets (bench/results/
  scenario_generalisation.md): on 40 classes `mnist` first passed its coverage gate on the
  final evaluation's 5,000 samples after ~5,100 steps and stopped, both gates passing with the
  early stop's margin, at 6,595 (0.75 gives 6,788; the square root, chosen on 28 classes before,
  4,800, where coverage read 0.577). A run that passes sooner stops early, so the larger budget
  costs only runs that need it. The scenario's time cap still bounds the run.

The rest of what depends on the data already follows it where it is built: every family's
`default_config(image_size, channels, num_classes)` picks its widths and depth for the image
size (GAN and VAE stage widths, the VAE's latent size for colour), the number of classes sizes
the conditional layers, and the evaluator is trained on the data set itself.

On each shipped scenario's own data these rules give the values its preset had before they
existed (tests/test_early_stop.py checks them), so the presets behave as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SMALL_DATA = 2500  # training images below which a GAN recipe gets DiffAugment
MIN_STEPS_PER_EPOCH = 10
MIN_BATCH = 8
DIFFAUGMENT_POLICY = ["color", "translation", "cutout"]
STEPS_CLASS_EXPONENT = 0.75  # steps x (classes / steps_classes) ** this: module docstring


@dataclass(frozen=True)
class DataFacts:
    """What the rules read from the data."""

    train_count: int
    num_classes: int
    shape: tuple[int, ...]  # image (H, W, C); other modalities: ()

    @classmethod
    def of(cls, dataset: Any, split: str = "train") -> DataFacts:
        shape = tuple(getattr(dataset, "image_shape", ()) or ())
        return cls(len(dataset.split(split)), int(dataset.num_classes or 0), shape)


def batch_cap(train_count: int) -> int:
    """The largest power of two <= train_count / MIN_STEPS_PER_EPOCH (at least MIN_BATCH)."""
    limit = max(MIN_BATCH, train_count // MIN_STEPS_PER_EPOCH)
    return 1 << (limit.bit_length() - 1)


def _uses_diffaugment(model_name: str) -> bool:
    from genforge.models.registry import MODELS
    from genforge.train.launch import ensure_models_registered

    ensure_models_registered(model_name)
    return "diffaugment" in {f.name for f in dataclasses.fields(MODELS.get(model_name).config_class)}


def size_steps(facts: DataFacts, steps: int | None, steps_classes: int | None,
               conditional: bool) -> tuple[int | None, list[str]]:  # fmt: skip
    """(the step budget for the data, one line if it changed): module docstring."""
    if not steps or not steps_classes or not conditional or facts.num_classes <= steps_classes:
        return steps, []
    sized = round(steps * (facts.num_classes / steps_classes) ** STEPS_CLASS_EXPONENT)
    return sized, [f"train.steps {steps} -> {sized}: {facts.num_classes} classes where the budget was chosen for "
                   f"{steps_classes} (x ({facts.num_classes}/{steps_classes}) ** {STEPS_CLASS_EXPONENT})"]  # fmt: skip


def size_recipe(facts: DataFacts, model_name: str, layers: dict[str, dict[str, Any]],
                default_batch: int) -> tuple[dict[str, dict[str, Any]], list[str]]:  # fmt: skip
    """(`layers` with the data-sized settings, one line per setting changed). `layers` are the
    scenario's `model`/`train`/`augment`/`privacy` sections; `default_batch` the batch size when
    the scenario sets none (TrainConfig's)."""
    out = {k: dict(v) for k, v in layers.items()}
    notes: list[str] = []
    train = out.setdefault("train", {})
    batch = int(train.get("batch_size", default_batch))
    cap = batch_cap(facts.train_count)
    if batch > cap and not out.get("privacy"):
        train["batch_size"] = cap
        notes.append(f"train.batch_size {batch} -> {cap}: {facts.train_count} training images make at least "
                     f"{MIN_STEPS_PER_EPOCH} steps per epoch")  # fmt: skip
    model, augment = out.setdefault("model", {}), out.setdefault("augment", {})
    explicit = "diffaugment" in model or "diffaugment" in augment
    if facts.train_count < SMALL_DATA and not explicit and _uses_diffaugment(model_name):
        model["diffaugment"] = {"policy": list(DIFFAUGMENT_POLICY)}
        notes.append(f"model.diffaugment policy {DIFFAUGMENT_POLICY}: {facts.train_count} training images "
                     f"(< {SMALL_DATA}) would let the discriminator memorise them")  # fmt: skip
    return out, notes
