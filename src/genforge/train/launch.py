"""From command-line options to a configured `Trainer`: layered configs and resume checks.

Config layers, later wins: the family's defaults for the dataset's shape (or, on resume,
the run's saved config), the YAML/JSON file's `model:`/`train:`/`augment:`/`privacy:` sections,
`--set section.key=value` items, then the explicit flags (--steps, --batch-size, --dp-epsilon, ...).
A private run (train/privacy.py) starts its model config from the family's `private_defaults`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from genforge.core.config import from_dict, load_file, to_dict
from genforge.core.errors import ConfigError, GenforgeError
from genforge.train.config import RESUMABLE_CHANGES, TrainConfig

SECTIONS = ("model", "train", "augment", "privacy")


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """["model.latent_dim=64", "train.ema=false"] -> {"model": {"latent_dim": 64}, "train": {"ema": False}}.

    Values are read as YAML scalars/lists, so numbers, booleans and [1, 2] lists get their types.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, _, field = key.strip().partition(".")
        if not sep or not field:
            raise ConfigError(
                f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. model.latent_dim=64 or train.ema_decay=0.99"
            )
        if section not in SECTIONS:
            raise ConfigError(
                f"--set {item!r}: section must be one of {', '.join(SECTIONS)}, got {section!r}"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot read the value ({exc})") from None
        value = _yaml11_float(value)
        node = out.setdefault(section, {})
        *parents, leaf = field.split(".")
        for part in parents:  # nested sub-configs, e.g. model.diffaugment.p=0.3
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _yaml11_float(value: Any) -> Any:
    """YAML 1.1 reads `3e-3` (no dot) as a string; users mean the number."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in "eE") else value
        except ValueError:
            return value
    return value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update (sub-config mappings merge instead of replacing each other)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_layers(
    config_file: str | Path | None, sets: list[str] | tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    layers: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    if config_file is not None:
        data = load_file(config_file)
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"{config_file}: unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}"
            )
        for section in SECTIONS:
            value = data.get(section) or {}
            if not isinstance(value, dict):
                raise ConfigError(f"{config_file}: section {section!r} must be a mapping")
            layers[section] = value
    for section, values in parse_sets(sets).items():
        layers[section] = merge(layers[section], values)
    return layers


def model_config(
    model_name: str, dataset: Any, overrides: dict[str, Any], conditional: bool, base: dict | None
) -> Any:
    from genforge.models.registry import MODELS

    ensure_models_registered(model_name)
    cls = MODELS.get(model_name)
    where = f"model {model_name}"
    if base is not None:  # the family fits the base's config to the new data (new speakers: models/base.py)
        data_fields = dataset.model_fields()
        if conditional and dataset.num_classes:  # a family whose class table can change sees the data's
            data_fields["num_classes"] = dataset.num_classes
        adapted = cls.adapt_base_config(base, data_fields)
        return from_dict(cls.config_class, merge(adapted, overrides), where=where)
    if cls.modality != dataset.modality:
        raise ConfigError(
            f"model {model_name!r} is a {cls.modality} model but {dataset.path} is a {dataset.modality} dataset"
        )
    fields = dict(overrides)
    if conditional and "num_classes" not in fields:
        if not dataset.num_classes:
            raise ConfigError(f"--conditional: dataset {dataset.path} has no classes")
        fields["num_classes"] = dataset.num_classes
    # explicit values win over the dataset's (the trainer then reports any mismatch with the data)
    data_fields = {k: fields.pop(k, v) for k, v in dataset.model_fields().items()}
    return cls.default_config(**data_fields, num_classes=fields.pop("num_classes", 0), **fields)


def ensure_models_registered(model_name: str) -> None:
    from genforge.models.registry import MODELS

    if model_name not in MODELS:
        import genforge.models.zoo  # noqa: F401  (importing the families registers them)


def augment_from_config(section: dict[str, Any], dataset: Any) -> tuple[Any, Any]:
    """(callable(batch, generator) -> batch, its config) for the batch augmentation of the
    dataset's modality (`augment.augmentation_for`: images' classical ops, audio's wave ops)."""
    if not section:
        return None, None
    try:
        from genforge.augment import augmentation_for
    except ImportError as exc:
        raise ConfigError(f"augment section given but genforge.augment cannot provide it ({exc})") from None
    kind = augmentation_for(dataset.modality)
    cfg = from_dict(kind.config, section, where="augment")
    return kind.build(cfg, dataset), cfg


def route_diffaugment(
    model_name: str, augment_section: dict[str, Any], model_overrides: dict[str, Any]
) -> dict[str, Any]:
    """Move `augment.diffaugment` into the model config: DiffAugment runs inside the model's step.

    Removes it from `augment_section`; fields set in the model section win.
    """
    diff = augment_section.pop("diffaugment", None)
    if diff is None:
        return model_overrides
    from genforge.models.registry import MODELS

    ensure_models_registered(model_name)
    fields = {f.name for f in dataclasses.fields(MODELS.get(model_name).config_class)}
    if "diffaugment" not in fields:
        raise ConfigError(
            f"augment.diffaugment: model {model_name!r} does not use DiffAugment (GAN families do)"
        )
    return merge({"diffaugment": diff}, model_overrides)


def _field_defaults(config: Any) -> dict[str, Any]:
    """The default of every field of the dataclass instance `config` that has one, as saved."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else json.loads(json.dumps(value))
    return out


def _check_resume_changes(
    saved: dict[str, Any], new: dict[str, Any], section: str, allowed: tuple[str, ...], config: Any = None
) -> None:
    # a field the saved config lacks was added by a later genforge: the run trained with its default
    if config is not None:
        saved = {**{k: v for k, v in _field_defaults(config).items() if k in new}, **saved}
    changed = sorted(k for k in set(saved) | set(new) if saved.get(k) != new.get(k) and k not in allowed)
    if changed:
        raise ConfigError(
            f"--resume continues the run with its saved config; these {section} fields differ: "
            + ", ".join(f"{k} (saved {saved.get(k)!r}, now {new.get(k)!r})" for k in changed)
            + (f". Only {', '.join(allowed)} may change on resume" if allowed else "")
        )


def build_trainer(
    out: str | Path,
    *,
    model_name: str | None = None,
    data: str | Path | None = None,
    config_file: str | Path | None = None,
    sets: list[str] | tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
    resume: bool = False,
    conditional: bool = False,
    callbacks: list | tuple = (),
    init_from: str | Path | None = None,
    privacy: dict[str, Any] | None = None,
    freeze_trunk: bool = False,
    freeze_d: int = 0,
):
    """A Trainer for run directory `out`; `flags` are TrainConfig fields from explicit options,
    `privacy` PrivacyConfig fields from explicit options (--dp-epsilon, ...); `init_from` a
    finished run whose weights the new run starts from (train/init_from.py), `freeze_trunk`
    training only its adaptation parameters, `freeze_d` keeping its discriminator's first
    `freeze_d` convolutions."""
    from genforge.core.lock import ensure_free
    from genforge.data.canonical import open_dataset
    from genforge.train.trainer import RUN_JSON, Trainer

    out = Path(out)
    ensure_free(out)  # another process training this run: say so before anything else
    run_json = out / RUN_JSON
    try:
        saved = json.loads(run_json.read_text()) if run_json.is_file() else None
    except (OSError, ValueError) as exc:
        raise GenforgeError(f"{run_json}: cannot read the run's config ({exc})") from None
    if saved is not None and not resume:
        raise GenforgeError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    if saved is not None:
        if model_name not in (None, saved["model"]):
            raise ConfigError(f"--resume: {out} trained model {saved['model']!r}, not {model_name!r}")
        model_name = saved["model"]
        data = data or saved["dataset"]["path"]
    base = _init_from(init_from, saved, out, freeze_trunk, freeze_d)
    if base is not None and base.state is not None:
        from genforge.models.registry import MODELS
        from genforge.train.init_from import check_family

        model_name = model_name or base.record["model"]
        ensure_models_registered(model_name)
        check_family(base, model_name, MODELS.get(model_name).family)  # before its config is read
    if model_name is None or data is None:
        raise ConfigError("give --model NAME and --data DATASET_DIR")
    dataset = open_dataset(data)
    if saved is not None and saved["dataset"]["fingerprint"] != dataset.fingerprint:
        raise ConfigError(f"--resume: {data} is not the dataset the run trained on (fingerprint differs)")

    layers = read_layers(config_file, sets)
    train_base = saved["train"] if saved is not None else {}
    train_fields = merge(
        merge(train_base, layers["train"]), {k: v for k, v in (flags or {}).items() if v is not None}
    )
    train_cfg = from_dict(TrainConfig, train_fields, where="train")
    saved_augment = (
        {k: v for k, v in (saved.get("augment") or {}).items() if k != "diffaugment"} if saved else {}
    )
    augment_section = merge(saved_augment, layers["augment"])
    model_overrides = route_diffaugment(model_name, augment_section, layers["model"])
    privacy_cfg = privacy_config(saved, layers["privacy"], privacy)
    if privacy_cfg is not None and saved is None:
        model_overrides = merge(private_defaults(model_name), model_overrides)
    # a fine-tuning run starts from the base's config (its architecture), overridden as usual
    start_config = saved["model_config"] if saved else base.config if base is not None else None
    mcfg = model_config(model_name, dataset, model_overrides, conditional, start_config)
    augment, augment_cfg = augment_from_config(augment_section, dataset)
    if saved is not None:
        _check_resume_changes(saved["train"], to_dict(train_cfg), "train", RESUMABLE_CHANGES, train_cfg)
        _check_resume_changes(saved["model_config"], to_dict(mcfg), "model", (), mcfg)
        new_privacy = to_dict(privacy_cfg) if privacy_cfg is not None else {}
        _check_resume_changes(saved.get("privacy") or {}, new_privacy, "privacy", ())
    trainer = Trainer(
        model_name,
        mcfg,
        train_cfg,
        dataset,
        out,
        callbacks=list(callbacks),
        augment=augment,
        augment_config=augment_cfg,
        init_from=base,
        privacy=privacy_cfg,
    )
    return trainer


def privacy_config(saved: dict[str, Any] | None, section: dict[str, Any],
                   flags: dict[str, Any] | None) -> Any:  # fmt: skip
    """The run's PrivacyConfig (train/privacy.py), or None for a run without DP: the saved one on
    resume, the config file's `privacy:` section and --set privacy.* items, then the flags."""
    from genforge.train.privacy import PrivacyConfig

    fields = merge(merge((saved or {}).get("privacy") or {}, section),
                   {k: v for k, v in (flags or {}).items() if v is not None})  # fmt: skip
    if not fields:
        return None
    cfg = from_dict(PrivacyConfig, fields, where="privacy")
    if not cfg.enabled:
        raise ConfigError(
            f"privacy: {', '.join(sorted(fields))} given, but no privacy.epsilon (the target, --dp-epsilon) "
            "nor privacy.noise_multiplier: give one to train with differential privacy"
        )
    return cfg


def private_defaults(model_name: str) -> dict[str, Any]:
    """The model config fields a family's private runs start from (GenerativeModel.private_defaults)."""
    from genforge.models.registry import MODELS

    ensure_models_registered(model_name)
    return dict(MODELS.get(model_name).private_defaults)


def _init_from(init_from: str | Path | None, saved: dict[str, Any] | None, out: Path, freeze_trunk: bool = False,
               freeze_d: int = 0):  # fmt: skip
    """The base run of `--init-from`; on resume, the record of the one the run started from."""
    from genforge.train.init_from import InitFrom, read_base_run

    recorded = (saved or {}).get("init_from")
    if freeze_d < 0:
        raise ConfigError(f"--freeze-d: expected a number of discriminator convolutions >= 0, got {freeze_d}")
    asked = {"--freeze-trunk": (bool(freeze_trunk), "freeze_trunk", False),
             "--freeze-d": (int(freeze_d), "freeze_d", 0)}  # fmt: skip
    for flag, (value, key, off) in asked.items():
        if value == off or (recorded or {}).get(key, off) == value:
            continue
        if saved is not None:
            raise ConfigError(f"--resume continues {out} as it started ({key} "
                              f"{(recorded or {}).get(key, off)!r}): drop {flag}")  # fmt: skip
        if init_from is None:
            raise ConfigError(f"{flag} fine-tunes a base run: give --init-from BASE_RUN")
    if saved is not None:
        if init_from is not None and (recorded is None or Path(init_from).resolve() != Path(recorded["path"])):
            raise ConfigError(
                f"--resume continues {out} from its checkpoints; it did not start from {init_from} "
                f"({'it started from ' + recorded['path'] if recorded else 'it trained from scratch'}): "
                "drop --init-from"
            )
        return InitFrom(recorded) if recorded else None
    return read_base_run(init_from, freeze_trunk, freeze_d) if init_from is not None else None
