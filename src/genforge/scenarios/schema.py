"""The scenario file: one typed dataclass per section, loaded with field-by-field validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from genforge.core.config import from_dict, load_file
from genforge.core.errors import ConfigError
from genforge.evaluate.privacy.config import MembershipConfig, UtilityConfig
from genforge.scenarios.early_stop import EarlyStopConfig


@dataclass
class DataSection:
    source: str | None = "digits"  # a source name or path, as `genforge data ingest` takes; None: --data required
    modality: str = "auto"  # image | text | auto (as `genforge data ingest --modality`)
    size: list[int] | None = None  # [H, W]; None keeps the source's size (images)
    channels: int | None = None  # images
    val_fraction: float | None = None  # None: the modality's default
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # further ingest options of the modality


@dataclass
class ModelSection:
    name: str = "dcgan"
    conditional: bool = False  # condition on the dataset's classes (num_classes from the data)
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the family's default config


@dataclass
class TrainSection:
    max_time: str | None = "2m"
    steps: int | None = None
    # the number of classes `steps` was chosen for: a conditional model on data with more classes
    # trains more steps, by the rule in scenarios/sizing.py (size_steps); None: as given
    steps_classes: int | None = None
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # further trainer settings
    # stop once the gates pass (or stall) as measured during training (scenarios/early_stop.py)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)

    def __post_init__(self) -> None:
        if self.steps_classes is not None and self.steps_classes < 1:
            raise ConfigError(f"train.steps_classes: expected a class count >= 1 (or none), got {self.steps_classes}")


@dataclass
class AdaptSection:
    """Adapting a base model to a new voice (voice cloning, scenarios/voice_clone.py): the base
    trains on every other speaker with the `model:` and `train:` sections, then a fine-tune of it
    (`--init-from`) on at most `max_clips` of the target speaker's clips with these settings."""

    speaker: str | None = None  # the new voice (a speaker name of the data); None: the last name alphabetically
    max_clips: int = 250  # of the target's training clips (the same number of each digit, seeded)
    base: str | None = None  # a finished base run to adapt (skips the base training; `genforge run --base`)
    freeze_trunk: bool = False  # train only the conditioning tables and output layers
    freeze_d: int = 0  # GAN families: the discriminator's first K convolutions stay at the base's weights
    # training clips of each base speaker the fine-tune also reads (0: the target's only): it keeps
    # the voices it knows apart instead of forgetting them into the new one
    rehearsal: int = 0
    max_time: str | None = "3m"
    steps: int | None = None
    model: dict[str, Any] = field(default_factory=dict)  # model config overrides of the fine-tune (e.g. lr)
    config: dict[str, Any] = field(default_factory=dict)  # trainer settings of the fine-tune, over train.config

    def __post_init__(self) -> None:
        if self.max_clips < 1:
            raise ConfigError(f"adapt.max_clips: expected a positive number of clips, got {self.max_clips}")
        if self.rehearsal < 0:
            raise ConfigError(f"adapt.rehearsal: expected a number of clips >= 0, got {self.rehearsal}")
        if self.freeze_d < 0:
            raise ConfigError(f"adapt.freeze_d: expected a number of discriminator convolutions >= 0, got {self.freeze_d}")


@dataclass
class PublicSection:
    """Public pretraining of a private run (docs/privacy.md): a base trained without DP on data that
    holds no private example (ingested at the private data's size and channels, with its class
    names), which the private run then fine-tunes (`--init-from`). The base costs no epsilon; the
    guarantee is the fine-tune's, and holds only because the public data is not the private data."""

    source: str  # a source name or path, as data.source (e.g. glyphs:0123456789)
    limit: int | None = None
    val_fraction: float | None = None  # None: the modality's default
    max_time: str | None = "3m"
    steps: int | None = None
    model: dict[str, Any] = field(default_factory=dict)  # model config overrides of the base (e.g. lr)
    config: dict[str, Any] = field(default_factory=dict)  # trainer settings of the base, over train.config
    # a conditional model's public classes must be the private data's: else stop with an error,
    # train without the base (a scenario meant for any labelled data, whose public set fits some),
    # or train the base on its own classes and start from what of it the family can carry across
    # a class change (`adapt_base_state`; mmd: the feature net behind phi, not its head)
    if_classes_differ: Literal["error", "skip", "transfer"] = "error"


@dataclass
class Gate:
    metric: str  # a key of metrics.json (dotted for nested values)
    min: float | None = None
    max: float | None = None
    why: str = ""

    def check(self, value: float | None) -> bool:
        if value is None:
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)


@dataclass
class EvaluateSection:
    n: int | None = None  # samples; None: the modality's default (genforge eval's)
    features: str | None = None  # None: the extractor the evaluate stage picks for the data
    options: dict[str, Any] = field(default_factory=dict)  # the modality's own settings (text: max_tokens, ...)
    utility: UtilityConfig = field(default_factory=UtilityConfig)  # TSTR beside TRTR (docs/metrics.md)
    membership: MembershipConfig = field(default_factory=MembershipConfig)  # membership-inference audit
    gates: list[Gate] = field(default_factory=list)


@dataclass
class ExportSection:
    formats: list[str] = field(default_factory=lambda: ["onnx"])


@dataclass
class ServeSection:
    host: str = "127.0.0.1"
    port: int = 8000


@dataclass
class Scenario:
    name: str
    description: str = ""
    data: DataSection = field(default_factory=DataSection)
    augment: dict[str, Any] = field(default_factory=dict)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    export: ExportSection = field(default_factory=ExportSection)
    serve: ServeSection = field(default_factory=ServeSection)
    # differentially private training: train/privacy.py PrivacyConfig fields (epsilon, delta, ...)
    privacy: dict[str, Any] = field(default_factory=dict)
    adapt: AdaptSection | None = None  # a base run, then its fine-tune to a new voice (voice cloning)
    public: PublicSection | None = None  # a base trained on public data, fine-tuned with DP (no epsilon spent)

    def __post_init__(self) -> None:
        if self.public is not None and self.adapt is not None:
            raise ConfigError(f"scenario {self.name!r}: public: and adapt: each train a base; give one of them")


PRESETS = "presets"


def preset_names() -> list[str]:
    files = resources.files("genforge.scenarios").joinpath(PRESETS).iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped preset by name, or a user's YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        data, where = load_file(path), str(path)
    else:
        if name_or_path not in preset_names():
            raise ConfigError(
                f"unknown scenario {name_or_path!r}: shipped scenarios are {', '.join(preset_names())}; "
                "or give the path of a scenario .yaml file"
            )
        res = resources.files("genforge.scenarios").joinpath(PRESETS, f"{name_or_path}.yaml")
        with resources.as_file(res) as p:
            data, where = load_file(p), f"scenario {name_or_path}"
    data.setdefault("name", path.stem if path.suffix else name_or_path)
    return from_dict(Scenario, data, where=where)
