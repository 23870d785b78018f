"""`audio-classifier`: the spoken-digit evaluator, a small log-mel CNN trained on the dataset's
own train split, with a digit head and, when the data names speakers, a speaker head.

Its penultimate layer (after ReLU) gives the features of FAD, KAD and precision/recall/density/
coverage; the digit head's softmax the classifier score and conditional accuracy; the speaker
head's the speaker accuracy of speaker-conditional runs. Training is deterministic (seeded init,
data order and augmentation, deterministic kernels) and cached per dataset fingerprint and
config hash (`extractors.training.load_or_train`, written atomically), exactly as the image
classifier: the same dataset gives the same weights hash and therefore the same numbers (at the
same number of torch threads: FSDD trained on 1 and on 2 threads gave different hashes, float
sums split over threads round differently; the cache keeps whichever was trained first).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from genforge.core.config import from_dict, to_dict
from genforge.core.errors import DataError
from genforge.evaluate.audio.features import AudioPreprocess, Augment
from genforge.evaluate.extractors.base import FeatureExtractor, Features
from genforge.evaluate.extractors.training import deterministic, evaluator_path, frozen, load_or_train

EVALUATOR_ID = "audio-classifier"


@dataclass
class AudioEvaluatorConfig:
    # optimiser steps, not epochs: a 200-clip subset then trains as long as FSDD's 2,250 clips
    # (250 steps of 64 = 7 epochs of FSDD)
    steps: int = 250
    batch_size: int = 64
    lr: float = 3e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    width: int = 12  # channels of the first conv block (then 2x, 4x, 4x); 16 scored no higher on FSDD
    feature_dim: int = 128
    speaker_weight: float = 1.0  # of the speaker head's loss beside the digit head's
    max_shift: float = 0.1  # augmentation: circular time shift, share of the clip
    gain_db: float = 6.0  # augmentation: random gain, +- dB
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "width", "feature_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.max_shift < 1 or self.gain_db < 0 or self.speaker_weight < 0:
            raise ValueError("max_shift must be in [0, 1), gain_db and speaker_weight >= 0")


class AudioEvaluatorNet(nn.Module):
    """(B, 1, mels, frames) -> (features (B, D), digit logits (B, K), speaker logits (B, S) or None).
    Frames are averaged away at the end, so a shifted word gives nearly the same features."""

    def __init__(self, num_classes: int, num_speakers: int, width: int, feature_dim: int):
        super().__init__()
        w = width

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.body = nn.Sequential(
            *block(1, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True), *block(4 * w, 4 * w, False),
            nn.AdaptiveAvgPool2d((4, 1)), nn.Flatten(), nn.Linear(4 * w * 4, feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)
        self.speaker_head = nn.Linear(feature_dim, num_speakers) if num_speakers > 1 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        f = self.body(x)
        return f, self.head(f), None if self.speaker_head is None else self.speaker_head(f)


@dataclass
class AudioFeatures(Features):
    speaker_probs: np.ndarray | None = None  # float64 (N, S), evaluators with a speaker head only


class AudioEvaluator(FeatureExtractor):
    """The trained net behind the FeatureExtractor interface (`id`, `hash`, `describe`,
    `extract`), so the reference statistics cache (`evaluate.stats_cache`) serves it too."""

    id = EVALUATOR_ID

    def __init__(self, net: AudioEvaluatorNet, preprocess: AudioPreprocess, info: dict[str, Any]):
        self.net = frozen(net)
        self.preprocess = preprocess  # type: ignore[assignment]  (audio clips, not images)
        self.info = info
        self.dim = int(info["config"]["feature_dim"])
        self.num_classes = int(info["num_classes"])
        self.num_speakers = int(info["num_speakers"]) if net.speaker_head is not None else 0
        self.weights_hash = info["weights_hash"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f, logits, _ = self.net(x)
        return f, logits

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_speakers": self.num_speakers,
                "heldout": {k: self.info.get(k) for k in ("heldout_split", "heldout_accuracy",
                                                          "heldout_speaker_accuracy")}}  # fmt: skip

    def extract(self, images: np.ndarray, batch_size: int = 500) -> AudioFeatures:
        """Features, digit and speaker probabilities of float clips (N, T) (named `images` as
        the interface's, which the statistics cache calls with a split's `images` = its clips)."""
        return run_net(self.net, self.preprocess, images, batch_size)


@torch.no_grad()
def run_net(
    net: AudioEvaluatorNet, pre: AudioPreprocess, audio: np.ndarray, batch_size: int = 500
) -> AudioFeatures:
    """The net (in eval mode) on clips (N, T), a batch at a time."""
    net.eval()
    feats, probs, spk = [], [], []
    for start in range(0, len(audio), max(1, batch_size)):
        f, logits, s = net(pre.apply(audio[start : start + batch_size]))
        feats.append(f.float().numpy())
        probs.append(torch.softmax(logits.double(), dim=1).numpy())
        if s is not None:
            spk.append(torch.softmax(s.double(), dim=1).numpy())
    if not feats:
        return AudioFeatures(
            np.zeros((0, net.head.in_features), np.float32), np.zeros((0, net.head.out_features))
        )
    return AudioFeatures(np.concatenate(feats), np.concatenate(probs), np.concatenate(spk) if spk else None)


def _speaker_targets(split: Any) -> np.ndarray | None:
    spk = split.speakers
    return None if spk is None or not (np.asarray(spk) >= 0).any() else np.asarray(spk, np.int64)


def fit_evaluator(audio: np.ndarray, labels: np.ndarray, speakers: np.ndarray | None, num_classes: int,
                  num_speakers: int, pre: AudioPreprocess, config: AudioEvaluatorConfig) -> AudioEvaluatorNet:  # fmt: skip
    """An AudioEvaluatorNet trained on clips (N, T) with the fixed recipe `config` (AdamW, a
    one-cycle schedule over `steps`, seeded init, order and augmentation, deterministic kernels).
    Speaker ids of -1 (unknown) add no speaker loss."""
    labels_t = torch.from_numpy(np.asarray(labels, np.int64))
    spk_t = None if speakers is None else torch.from_numpy(np.asarray(speakers, np.int64))
    augment = Augment(config.max_shift, config.gain_db)
    with deterministic(config.seed) as gen:
        net = AudioEvaluatorNet(num_classes, num_speakers if spk_t is not None else 0, config.width,
                                config.feature_dim)  # fmt: skip
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps)
        net.train()
        for idx in batches(len(audio), config.batch_size, config.steps, gen):
            x = pre.transform(augment(pre.waves(audio[idx]), gen))
            _, logits, spk_logits = net(x)
            loss = nn.functional.cross_entropy(logits, labels_t[idx])
            if spk_logits is not None and spk_t is not None and config.speaker_weight > 0:
                target = spk_t[idx]
                if bool((target >= 0).any()):
                    loss = loss + config.speaker_weight * nn.functional.cross_entropy(
                        spk_logits, target, ignore_index=-1
                    )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net


def batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[np.ndarray]:
    """`steps` batches of indices, epoch after epoch of seeded permutations of range(n) (the last
    batch of an epoch may be short), each batch sorted: contiguous reads from the memory map."""
    done = 0
    while True:
        order = torch.randperm(n, generator=gen).numpy()
        for i in range(0, n, batch_size):
            if done == steps:
                return
            yield np.sort(order[i : i + batch_size])
            done += 1


def heldout_accuracy(net: AudioEvaluatorNet, pre: AudioPreprocess, dataset: Any,
                     train_speakers: set[int]) -> dict[str, Any]:  # fmt: skip
    """Digit accuracy on the first labelled held-out split (val, else test), and speaker accuracy
    on its clips whose speaker the train split has (a speaker-disjoint split has none)."""
    for name in ("val", "test"):
        if name not in dataset.split_names or not dataset.split(name).has_labels:
            continue
        split = dataset.split(name)
        feats = run_net(net, pre, split.audio)
        out: dict[str, Any] = {"heldout_split": name, "heldout_count": len(split),
                               "heldout_accuracy": float((feats.probs.argmax(1) == split.labels).mean())}  # fmt: skip
        spk = _speaker_targets(split)
        if feats.speaker_probs is not None and spk is not None:
            known = np.isin(spk, sorted(train_speakers))
            out["heldout_speaker_count"] = int(known.sum())
            if known.any():
                out["heldout_speaker_accuracy"] = float(
                    (feats.speaker_probs.argmax(1)[known] == spk[known]).mean()
                )
        return out
    return {"heldout_split": None, "heldout_accuracy": None}


def train_audio_evaluator(
    dataset: Any, config: AudioEvaluatorConfig
) -> tuple[AudioEvaluatorNet, dict[str, Any]]:
    split = dataset.train_split
    if dataset.num_classes < 2 or not split.has_labels:
        raise DataError(f"{dataset.path}: the audio evaluator needs a train split whose every clip is labelled, with "
                        f">= 2 classes (got {dataset.num_classes} classes)")  # fmt: skip
    pre = AudioPreprocess.for_data(dataset.sample_rate, dataset.clip_length)
    speakers = _speaker_targets(split) if dataset.num_speakers > 1 else None
    start = time.perf_counter()
    net = fit_evaluator(
        split.audio, split.labels, speakers, dataset.num_classes, dataset.num_speakers, pre, config
    )
    seconds = time.perf_counter() - start
    train_speakers = set() if speakers is None else {int(s) for s in np.unique(speakers) if s >= 0}
    info = {
        "extractor": EVALUATOR_ID,
        "config": to_dict(config),
        "num_classes": dataset.num_classes,
        "class_names": dataset.class_names,
        "num_speakers": dataset.num_speakers if speakers is not None else 0,
        "speaker_names": dataset.speaker_names if speakers is not None else [],
        "sample_rate": dataset.sample_rate,
        "clip_length": dataset.clip_length,
        "preprocessing": pre.describe(),
        "dataset_fingerprint": dataset.fingerprint,
        "train_count": len(split),
        "train_seconds": round(seconds, 3),
        **heldout_accuracy(frozen(net), pre, dataset, train_speakers),
    }
    return net, info


def audio_evaluator(
    dataset: Any, config: AudioEvaluatorConfig | None = None, retrain: bool = False
) -> AudioEvaluator:
    """The cached evaluator of `dataset`, trained (and cached with its held-out accuracies) if absent."""
    config = config or AudioEvaluatorConfig()
    path = evaluator_path(EVALUATOR_ID, dataset.fingerprint, config)

    def build(info: dict[str, Any]) -> nn.Module:
        cfg = from_dict(AudioEvaluatorConfig, info["config"])
        return AudioEvaluatorNet(
            int(info["num_classes"]), int(info["num_speakers"]), cfg.width, cfg.feature_dim
        )

    net, info = load_or_train(path, build, lambda: train_audio_evaluator(dataset, config), retrain)
    pre = AudioPreprocess.for_data(dataset.sample_rate, dataset.clip_length)
    return AudioEvaluator(net, pre, {**info, "cache": str(path)})  # type: ignore[arg-type]


def evaluator_from_options(dataset: Any, options: dict[str, Any]) -> AudioEvaluator:
    """The evaluator of `genforge eval` on audio: `options` (EvalConfig.extractor_options) are
    AudioEvaluatorConfig fields; none gives the default (cached) one."""
    config = from_dict(AudioEvaluatorConfig, {k: v for k, v in options.items() if v is not None},
                       where=f"{EVALUATOR_ID} evaluator options")  # fmt: skip
    return audio_evaluator(dataset, config)


def train_command(
    dataset: Any, *, seed: int = 0, epochs: int | None = None, retrain: bool = False
) -> list[str]:
    """`genforge evaluator train DATA` on an audio dataset: the lines it prints (`epochs`, when
    given, sets the steps to that many passes over the train split)."""
    per_epoch = -(-len(dataset.train_split) // AudioEvaluatorConfig.batch_size)
    config = AudioEvaluatorConfig(seed=seed, **({"steps": epochs * per_epoch} if epochs else {}))
    ext = audio_evaluator(dataset, config, retrain=retrain)
    info = ext.info
    lines = [f"evaluator: {ext.id}  hash {ext.hash}  weights {ext.weights_hash}  cache {info['cache']}",
             f"trained on {info['train_count']} clips of {dataset.path} (fingerprint {dataset.fingerprint}) "
             f"in {info['train_seconds']:.1f} s"]  # fmt: skip
    if info.get("heldout_accuracy") is not None:
        lines.append(f"held-out digit accuracy ({info['heldout_split']}, {info['heldout_count']} clips): "
                     f"{100 * info['heldout_accuracy']:.2f}%")  # fmt: skip
    if info.get("heldout_speaker_accuracy") is not None:
        lines.append(f"held-out speaker accuracy ({info['heldout_split']}, {info['heldout_speaker_count']} clips of "
                     f"{info['num_speakers']} speakers): {100 * info['heldout_speaker_accuracy']:.2f}%")  # fmt: skip
    elif info.get("num_speakers"):
        lines.append(
            f"held-out speaker accuracy: none of the {info['heldout_split']} speakers is in the train split"
        )
    return lines
