"""`genforge train --init-from BASE_RUN`: start from a finished run's weights (fine-tuning).

The base run's `model.json` + `model.safetensors` (its final weights: the EMA ones where it kept
an EMA) initialise the new model before the optimiser and the EMA are built; everything else
(optimiser state, step, schedule, data position) starts fresh. The new model must be of the base's
family with the same architecture: every tensor's name and shape must match, and the error says
which config fields differ when they do not. The run records where it started (`init_from` in
run.json and model.json: the base's path, model, step, dataset fingerprint and a hash of its
weights file), so a fine-tuned model can be traced back to its base.

Adapting to new data (models/base.py hooks): the family may extend the base's config for the new
data (`adapt_base_config`: an audio model appends the data's new speakers by name) and fit the
base's weights to it (`adapt_base_state`: the speaker tables grow); everything else must match.
`--freeze-trunk` then trains only the family's `adaptation_parameters()` (conditioning tables,
output layers); run.json and model.json record it under `init_from` with the parameter counts.
`--freeze-d K` (FreezeD, Mo et al. 2020) keeps the first K convolutions of a GAN's discriminator,
counted from its input, at the base's weights: the generic features of real data stay as the base
learnt them from much more data, and only the upper layers follow the few new clips or images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genforge.core.config import to_dict
from genforge.core.errors import ConfigError, GenforgeError


@dataclass
class InitFrom:
    record: dict[str, Any]  # what run.json and model.json record under "init_from"
    config: dict[str, Any] | None = None  # the base model's config (model.json "config")
    state: dict[str, torch.Tensor] | None = None  # its weights; None when only carrying the record (resume)

    @property
    def path(self) -> Path:
        return Path(self.record["path"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_base_run(run_dir: str | Path, freeze_trunk: bool = False, freeze_d: int = 0) -> InitFrom:
    """The finished run at `run_dir`: its description, config and weights; `freeze_trunk`: the
    new run trains only the family's adaptation parameters; `freeze_d`: the discriminator's first
    `freeze_d` convolutions stay at the base's weights."""
    from safetensors.torch import load_file

    from genforge.models.pipeline import MODEL_JSON, MODEL_WEIGHTS

    run_dir = Path(run_dir)
    mjson, weights = run_dir / MODEL_JSON, run_dir / MODEL_WEIGHTS
    if not mjson.is_file() or not weights.is_file():
        raise GenforgeError(
            f"--init-from {run_dir}: expected a finished `genforge train` run ({MODEL_JSON} and {MODEL_WEIGHTS})"
        )
    try:
        info = json.loads(mjson.read_text())
        state = load_file(str(weights))
    except Exception as exc:  # JSON, UTF-8 and safetensors errors: the file is damaged
        raise GenforgeError(f"--init-from {run_dir}: cannot read the base model ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("model"), str) or not isinstance(info.get("config"), dict):
        raise GenforgeError(f"{mjson}: fields 'model' (a name) and 'config' (a mapping) expected")
    record = {
        "path": str(run_dir.resolve()),
        "model": info["model"],
        "family": info.get("family"),
        "step": info.get("step"),
        "dataset_fingerprint": (info.get("dataset") or {}).get("fingerprint"),
        "weights_sha256": _sha256(weights),
        **({"freeze_trunk": True} if freeze_trunk else {}),
        **({"freeze_d": int(freeze_d)} if freeze_d else {}),
    }
    return InitFrom(record, info["config"], state)


def check_family(base: InitFrom, model_name: str, family: str) -> None:
    if base.record.get("family") not in (None, family):
        raise ConfigError(
            f"--init-from {base.path}: the base run trained {base.record['model']!r} (family "
            f"{base.record['family']!r}); {model_name!r} is of family {family!r}: fine-tuning needs the same family"
        )


def load_base_weights(model: torch.nn.Module, base: InitFrom) -> None:
    """Copy the base weights into `model`, or say which tensors and config fields differ."""
    assert base.state is not None
    state = dict(model.adapt_base_state(base.state, base.config or {}))  # type: ignore[operator]
    own = model.state_dict()
    # training-process state the family lets a fine-tune add or drop (DiffAugment's): its own
    optional = model.base_state_optional  # type: ignore[attr-defined]
    state.update({k: v for k, v in own.items() if k not in state and optional(k)})
    state = {k: v for k, v in state.items() if k in own or not optional(k)}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        config = to_dict(model.config)  # type: ignore[arg-type]
        base_config = base.config or {}
        differ = sorted(k for k in set(config) | set(base_config) if config.get(k) != base_config.get(k))
        parts = [f"{k} {tuple(state[k].shape)} -> {tuple(own[k].shape)}" for k in shapes[:3]]
        parts += [f"{k} missing from the base" for k in missing[:3]] + [f"{k} not in the new model" for k in extra[:3]]
        raise ConfigError(
            f"--init-from {base.path}: the base weights do not fit the new model ({'; '.join(parts)}"
            f"{', ...' if len(shapes) + len(missing) + len(extra) > 6 else ''}); config fields that differ: "
            + (", ".join(f"{k} (base {base_config.get(k)!r}, now {config.get(k)!r})" for k in differ) or "none")
        )
    model.load_state_dict(state)


def freeze_trunk(model: torch.nn.Module) -> dict[str, Any]:
    """Stop gradients to every parameter but the family's adaptation parameters (before the
    trainer builds its optimisers, which take trainable parameters only); what the record keeps."""
    keep = set(model.adaptation_parameters())  # type: ignore[operator]
    if not keep:
        raise ConfigError(
            f"--freeze-trunk: the {model.family!r} family names no adaptation parameters to train with its trunk "  # type: ignore[union-attr]
            "frozen; fine-tune it without --freeze-trunk"
        )
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        if name not in keep:
            p.requires_grad_(False)
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return {"trainable_parameters": counts["trainable"], "frozen_parameters": counts["frozen"],
            "trainable_tensors": sorted(keep)}  # fmt: skip


def discriminator_convolutions(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The convolutions of `model.discriminator` in the order the module registers them (from
    its input: every GAN family here builds its discriminator input first)."""
    d = getattr(model, "discriminator", None)
    if not isinstance(d, torch.nn.Module):
        raise ConfigError(f"--freeze-d: the {getattr(model, 'family', type(model).__name__)!r} family has no "
                          "discriminator; it applies to the GAN families")  # fmt: skip
    conv = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    return [(f"discriminator.{n}", m) for n, m in d.named_modules() if isinstance(m, conv)]


def freeze_discriminator(model: torch.nn.Module, k: int) -> dict[str, Any]:
    """Stop gradients to the discriminator's first `k` convolutions (FreezeD); what the record keeps."""
    convs = discriminator_convolutions(model)
    # its head (the real/fake logit and the class projection) always learns, as in FreezeD
    if not convs or not 1 <= k <= len(convs):
        raise ConfigError(f"--freeze-d {k}: this discriminator has {len(convs)} convolution(s); freeze 1 to "
                          f"{len(convs)} of them (its head still learns the new data)")  # fmt: skip
    frozen = 0
    for _, module in convs[:k]:
        for p in module.parameters():  # spectral norm's `original` weight included
            p.requires_grad_(False)
            frozen += p.numel()
    return {"frozen_discriminator_layers": [n for n, _ in convs[:k]], "frozen_discriminator_parameters": frozen}


def start_from_base(model: torch.nn.Module, base: InitFrom, model_name: str) -> None:
    """The trainer's step for a run that started from a base: the base weights (a new run; a
    resumed one reads its checkpoint instead), then the frozen trunk or discriminator layers (new
    and resumed runs alike)."""
    if base.state is not None:
        check_family(base, model_name, model.family)  # type: ignore[arg-type]
        load_base_weights(model, base)
    if base.record.get("freeze_trunk"):
        base.record.update(freeze_trunk(model))
    if base.record.get("freeze_d"):
        base.record.update(freeze_discriminator(model, int(base.record["freeze_d"])))
