"""`mmd`: a class-conditional generator trained to match the training data's feature moments.

The generator never sees a training image. Before training, one pass over the training split
computes, per class, the mean of an embedding phi(x) (train/statistics.py: each example's row
clipped to norm <= 1, summed per class, divided by the class count); training then moves the
generator until the class means of phi over its own samples match those targets: a maximum mean
discrepancy with the finite feature kernel k(x, y) = phi(x) . phi(y) (Harder et al.: DP-MERF,
2021; DP-MEPF, 2023), estimated without the bias a step's few samples per class would add
(`estimator`). phi concatenates, each block scaled to an equal share of the norm, the
pixels and average-pooled activations of a small CNN (first moments) and the squares of the
normalised activations (second moments: spread, not just the mean image).

Why this family exists: differential privacy. The per-class sums are the only thing computed
from the private data, so ONE Gaussian mechanism on them (sensitivity 1 by the clipping) makes
the whole run private, whatever the generator then trains for (post-processing): with
`--dp-epsilon` the trainer adds the noise Opacus' accountant calibrates (train/privacy_release.py).
DP-SGD instead pays for every step, and on 5,000 MNIST digits at epsilon 10 the DP cVAE's digits
taught a classifier 0.73 (bench/results/privacy.md).

The CNN (`FeatureNetConfig`) is a digit-classifier-sized convnet. A run without privacy trains it
on its own labelled data first (`features.train_steps` classifier steps, augmented); a private run
never trains it on the private data: it comes from the base run (`--init-from`, e.g. the `private`
scenario's base on public font digits) or stays at its seeded random init (DP-MERF's random
features). `features_trained` (a buffer saved with the weights) records which.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import Batch, GenerativeModel, LRSchedule, ModelOutput, OptimizerSpec, Phase
from genforge.models.nets.dcgan import Generator
from genforge.models.nets.latent import class_labels
from genforge.models.registry import MODELS

# phi's blocks: the pixels and the CNN's activations (pooled), in this order
BLOCKS = ("pixels", "conv1", "conv2", "conv3", "dense")
ESTIMATORS = ("biased", "unbiased")


@dataclass
class FeatureNetConfig:
    width: int = 32  # conv widths width, 2 width, 4 width (3x3, max-pooled between)
    dense: int = 128
    pool: int = 4  # conv activations are average-pooled to pool x pool before the moments
    first: list[str] = field(default_factory=lambda: list(BLOCKS))  # blocks whose means are matched
    second: list[str] = field(default_factory=lambda: ["conv1", "conv2", "conv3", "dense"])  # and spreads
    # classifier steps on the run's own labelled data before the moments (runs without privacy
    # only; 0 = keep the net as it is: random, or from --init-from)
    train_steps: int = 1500
    train_batch: int = 128
    train_lr: float = 2e-3

    def __post_init__(self) -> None:
        for name in ("first", "second"):
            unknown = sorted(set(getattr(self, name)) - set(BLOCKS))
            if unknown:
                raise ConfigError(f"features.{name}: unknown block(s) {unknown}; known: {', '.join(BLOCKS)}")
        if not (self.first or self.second):
            raise ConfigError("features: first and second are both empty: nothing to match")
        if min(self.width, self.dense, self.pool, self.train_batch) < 1 or self.train_steps < 0:
            raise ConfigError("features: width, dense, pool and train_batch must be >= 1, train_steps >= 0")


@dataclass
class MMDConfig:
    image_size: int = 16
    channels: int = 1
    num_classes: int = 10  # 0: one set of moments for the whole data
    latent_dim: int = 32
    widths: list[int] = field(default_factory=lambda: [128, 64, 32])  # generator: dense, then conv widths
    kernel: int = 5
    # generated samples per class in each step's moment estimate; default_config sizes it from the
    # class count (default_per_class), so a step costs about the same for 3 classes or 40
    per_class: int = 25
    # the loss: the squared distance between the step's generated class means and the targets
    # ("biased": its expectation adds the estimate's variance, (1 - |mean phi|^2) / per_class a
    # class, which rewards a generator for varying less, most with few samples per class) or the
    # same with that variance term removed ("unbiased": the U-statistic of MMD^2, whose expectation
    # is the distance between the true means). Measured with the `private` scenario (session 23,
    # bench/results/privacy.md): on 40 classes (6 samples each a step) TSTR 0.384 -> 0.487 and FID
    # 138 -> 57; on 10 classes (25 each) 0.770 -> 0.784 and 0.918 -> 0.926 (mnist-test)
    estimator: str = "unbiased"
    lr: float = 2e-3
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay: str = "cosine"  # over the run's budget (LRSchedule), down to lr_min_ratio
    lr_min_ratio: float = 0.05
    features: FeatureNetConfig = field(default_factory=FeatureNetConfig)

    def __post_init__(self) -> None:
        if isinstance(self.features, dict):
            self.features = from_dict(FeatureNetConfig, self.features, where="model.features")
        if self.per_class < 2:
            raise ConfigError(f"model.per_class: a moment estimate needs >= 2 samples per class, got {self.per_class}")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"model.estimator: {self.estimator!r} is not one of {', '.join(ESTIMATORS)}")


def default_per_class(num_classes: int) -> int:
    """Samples per class in a step: 25 up to 10 classes (the private scenario's digits), then
    about 250 a step in all (40 classes: 6), at least 2 (a spread needs two)."""
    return max(2, min(25, 250 // max(num_classes, 1)))


def moment_distance(phi: torch.Tensor, targets: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Sum over rows of ||mean_i phi[r, i] - targets[r]||^2 for phi of shape (rows, m, dim).
    Unbiased: ||mean||^2 is replaced by its U-statistic (||sum||^2 - sum ||phi_i||^2) / (m (m - 1)),
    the mean of phi_i . phi_j over i != j, so the expectation over the generator's draws is the
    distance between its true class means and the targets, with no reward for a small spread."""
    m = phi.shape[1]
    total = phi.sum(1)
    means = total / m
    if not unbiased:
        return (means - targets).pow(2).sum()
    self_sq = (total.pow(2).sum(1) - phi.pow(2).sum((1, 2))) / (m * (m - 1))
    return (self_sq - 2 * (means * targets).sum(1) + targets.pow(2).sum(1)).sum()


class FeatureNet(nn.Module):
    """The CNN behind phi: three 3x3 conv layers (max-pooled between), a dense layer, and a
    classifier head used only to train it."""

    def __init__(self, channels: int, image_size: int, num_classes: int, c: FeatureNetConfig):
        super().__init__()
        w = c.width
        self.conv1 = nn.Conv2d(channels, w, 3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1)
        self.pool = c.pool
        self.dense = nn.Linear(4 * w * c.pool * c.pool, c.dense)
        self.head = nn.Linear(c.dense, max(num_classes, 1))

    def activations(self, x01: torch.Tensor) -> dict[str, torch.Tensor]:
        """Blocks of phi before normalisation (x in [0, 1])."""
        a1 = F.relu(self.conv1(x01))
        a2 = F.relu(self.conv2(F.max_pool2d(a1, 2)))
        a3 = F.relu(self.conv3(F.max_pool2d(a2, 2)))
        p = self.pool
        pooled = [F.adaptive_avg_pool2d(a, p).flatten(1) for a in (a1, a2, a3)]
        return {"pixels": x01.flatten(1), "conv1": pooled[0], "conv2": pooled[1], "conv3": pooled[2],
                "dense": F.relu(self.dense(pooled[2]))}  # fmt: skip

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.head(self.activations(x01)["dense"])


def feature_augment(x01: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The feature net's training augmentation (x in [0, 1], background 0): a random affine map
    (rotation +-15 degrees, scale 0.8-1.15, shear, shift +-1/8 of the side) and a random stroke
    width (a fifth thickened by a 3x3 max, a tenth thinned), so its features do not hinge on one
    data set's placement and pen."""
    n = x01.shape[0]
    angle = (torch.rand(n, generator=g) - 0.5) * math.radians(30)
    scale = 0.8 + 0.35 * torch.rand(n, generator=g)
    shear = (torch.rand(n, generator=g) - 0.5) * 0.5
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 0.5
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x01.device), list(x01.shape), align_corners=False)
    y = F.grid_sample(x01, grid, align_corners=False, padding_mode="zeros")
    r = torch.rand(n, generator=g).to(x01.device)[:, None, None, None]
    thick = F.max_pool2d(y, 3, 1, 1)
    thin = 0.5 * (y - F.max_pool2d(-y, 3, 1, 1))
    return torch.where(r < 0.2, thick, torch.where(r > 0.9, thin, y))


class MMD(GenerativeModel):
    family = "mmd"
    config_class = MMDConfig
    ema_modules = ("generator",)
    # the trainer runs `fit_statistics` once before the first step of a new run (train/statistics.py)
    data_statistics = True
    # under --dp-epsilon: one Gaussian release of the per-class sums, no DP-SGD (train/privacy_release.py)
    privacy_mechanism = "release"

    def __init__(self, config: MMDConfig):
        super().__init__(config)
        c = config
        self.conditional = c.num_classes > 0
        self.rows = max(c.num_classes, 1)
        self.generator = Generator(c.latent_dim, c.channels, c.image_size, list(c.widths), kernel=c.kernel,
                                   num_classes=c.num_classes)  # fmt: skip
        self.features = FeatureNet(c.channels, c.image_size, c.num_classes, c.features)
        self.features.requires_grad_(False)  # trained only in fit_statistics, never by the phases
        self.names = [("first", b) for b in c.features.first] + [("second", b) for b in c.features.second]
        self.register_buffer("targets", torch.zeros(self.rows, self.embedding_dim()))
        # 1 once the feature net was trained (on this run's data, or on a base run's)
        self.register_buffer("features_trained", torch.zeros((), dtype=torch.long))

    @classmethod
    def default_config(cls, image_size: int, channels: int, num_classes: int = 0, **overrides: Any) -> Any:
        # two upsamplings from a side >= 3 (16, 28, 32 px), else one (8, 12 px)
        widths = [128, 64, 32] if image_size % 4 == 0 and image_size >= 12 else [128, 64]
        sized = {"widths": widths, "per_class": default_per_class(num_classes)}
        return super().default_config(image_size, channels, num_classes, **{**sized, **overrides})

    # --- fine-tuning from a base run on other classes (train/init_from.py) --------------------------

    @classmethod
    def adapt_base_config(cls, base_config: dict[str, Any], data_fields: dict[str, Any]) -> dict[str, Any]:
        """A base trained on other classes (a public set whose classes are not the private data's)
        still initialises phi: the config takes the data's class count."""
        n = data_fields.get("num_classes")
        if n is None or not base_config.get("num_classes") or n == base_config["num_classes"]:
            return base_config
        adapted = {**base_config, "num_classes": n}
        if base_config.get("per_class") == default_per_class(base_config["num_classes"]):  # sized, not chosen
            adapted["per_class"] = default_per_class(n)
        return adapted

    def adapt_base_state(self, base_state: dict[str, torch.Tensor], base_config: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Of a base with another class count, the feature net's layers up to its dense layer (what
        phi reads: nothing in them depends on the classes) and whether they were trained; the
        generator, the classifier head and the targets, which do, keep this model's fresh init."""
        if base_config.get("num_classes") == self.config.num_classes:
            return base_state
        def carried(name: str) -> bool:
            return name == "features_trained" or (name.startswith("features.") and not name.startswith("features.head."))

        # a carried tensor the base lacks stays missing, so the shape check names it
        return {k: base_state[k] if carried(k) else v for k, v in self.state_dict().items()
                if k in base_state or not carried(k)}  # fmt: skip

    def statistics_shape(self) -> tuple[int, int]:
        """(rows, dim) of the per-class means the trainer computes."""
        return self.rows, int(self.targets.shape[1])

    def embedding_dim(self) -> int:
        with torch.no_grad():
            c = self.config
            x = torch.zeros(1, c.channels, c.image_size, c.image_size)
            return int(self.embed(x).shape[1])

    # --- phi ---------------------------------------------------------------------------------------

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """phi of images in [-1, 1]: every row has norm <= 1 (each of the k blocks, normalised,
        is scaled by 1/sqrt(k)), so the moments of the data have sensitivity 1."""
        acts = self.features.activations((images + 1) / 2)
        scale = 1.0 / math.sqrt(len(self.names))
        out = []
        for kind, name in self.names:
            v = acts[name]
            if kind == "second":
                v = F.normalize(v, dim=1, eps=1e-8) ** 2
            out.append(scale * F.normalize(v, dim=1, eps=1e-8))
        return torch.cat(out, 1)

    def train_features(self, examples: Callable[[], Iterable[Batch]]) -> dict[str, Any]:
        """Train the feature net as a classifier on the (labelled) examples; what it did."""
        fc = self.config.features
        batches = list(examples())
        x = torch.cat([b.images for b in batches])
        y = torch.cat([b.labels for b in batches]) if self.conditional else None
        if y is None:
            return {"feature_net": "random (unlabelled data: nothing to train it on)"}
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
        net = self.features
        net.requires_grad_(True)
        opt = torch.optim.Adam(net.parameters(), fc.train_lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, fc.train_lr, total_steps=max(fc.train_steps, 1))
        loss = torch.zeros(())
        for _ in range(fc.train_steps):
            idx = torch.randint(0, len(x), (fc.train_batch,), generator=gen).to(x.device)
            loss = F.cross_entropy(net(feature_augment((x[idx] + 1) / 2, gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.requires_grad_(False)
        self.features_trained.fill_(1)
        return {"feature_net": f"trained on this run's data ({fc.train_steps} classifier steps)",
                "feature_net_loss": round(float(loss.detach()), 4)}  # fmt: skip

    def fit_statistics(self, examples: Callable[[], Iterable[Batch]], private: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(phi, class row) of every training example, for the trainer's per-class means; a run
        without privacy first trains the feature net on the examples (unless it is trained)."""
        self.statistics_info: dict[str, Any] = {}
        if not private and self.config.features.train_steps and not int(self.features_trained):
            self.statistics_info = self.train_features(examples)
        elif int(self.features_trained):
            self.statistics_info = {"feature_net": "trained before this run (the base run's data)"}
        else:
            self.statistics_info = {"feature_net": "random (seeded init, trained on no data)"}
        self.features.eval()
        with torch.no_grad():
            for b in examples():
                if self.conditional and b.labels is None:
                    raise GenforgeError("mmd is class-conditional but the training examples have no labels")
                rows = b.labels if self.conditional else torch.zeros(len(b.images), dtype=torch.long)
                yield self.embed(b.images), rows

    def set_targets(self, means: torch.Tensor) -> None:
        if tuple(means.shape) != tuple(self.targets.shape):
            raise GenforgeError(f"mmd: targets of shape {tuple(means.shape)}, expected {tuple(self.targets.shape)}")
        self.targets.copy_(means)

    # --- training ---------------------------------------------------------------------------------

    def phases(self) -> list[Phase]:
        c = self.config
        return [Phase("generator", ["generator"], OptimizerSpec("adam", c.lr, c.betas),
                      schedule=LRSchedule(c.lr_decay, min_ratio=c.lr_min_ratio))]  # fmt: skip

    def training_step(self, phase: str, batch: Batch, step: int) -> ModelOutput:
        """The squared distance between the generated and the target class means of phi. The
        batch is not read: the generator trains on the targets alone."""
        c, device = self.config, self.targets.device
        rows = torch.arange(self.rows, device=device).repeat_interleave(c.per_class)
        z = torch.randn(len(rows), c.latent_dim, device=device)
        fake = self.generator(z, rows if self.conditional else None)
        phi = self.embed(fake).view(self.rows, c.per_class, -1)
        loss = moment_distance(phi, self.targets, unbiased=c.estimator == "unbiased")
        return ModelOutput(loss, {"mmd2": loss.detach()})

    # --- sampling ---------------------------------------------------------------------------------

    def noise(self, n: int, *, generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
               latents: torch.Tensor | None = None, **options: Any) -> torch.Tensor:  # fmt: skip
        device = self.targets.device
        z = (self.noise(n, generator=generator) if latents is None else latents).to(device)
        y = class_labels(labels, n, self.config.num_classes, device) if self.conditional else None
        return self.generator(z, y)


MODELS.register("mmd", MMD)
