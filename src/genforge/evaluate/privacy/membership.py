"""Membership-inference audit: can an attacker tell the training records from unseen ones?

Members are a random subset of the train split, non-members an equal-size subset of the
held-out split. Every attack gives each record a score (higher = "was trained on"); the audit
reports each attack's ROC AUC (0.5 = chance, 1.0 = every member ranked above every non-member)
and its true-positive rate at 1% false positives (Carlini et al. 2022, "Membership inference
attacks from first principles": an attack that is confident about a few records matters even
when its AUC is low). `mia_auc` and `mia_tpr_at_1fpr` are the maxima over the attacks run: the
attacker picks the attack.

Attacks:
- distance to the closest generated sample (any family, any samples; Chen et al. 2020,
  "GAN-Leaks"), in each space the modality offers (images: pixels, and the evaluator's
  features). With labelled samples and records the nearest sample of the record's own class
  counts, which is the stronger attack against a conditional model.
- the family's own, from `FAMILY_ATTACKS` (keyed by `GenerativeModel.family`, evaluate/privacy/
  attacks.py): the discriminator's score for GANs, ELBO and reconstruction error for VAEs,
  denoising loss at several noise levels for diffusion, the loss for the text model. Each gets
  the loaded model and the records in the model's input form.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genforge.core.errors import ConfigError
from genforge.core.registry import Registry
from genforge.evaluate.metrics.base import Output
from genforge.evaluate.neighbours import nearest
from genforge.evaluate.privacy.config import MembershipConfig

FPR = 0.01  # the false-positive rate of `mia_tpr_at_1fpr`

OUTPUTS = {
    "mia_auc": Output("lower", "ROC AUC of the strongest membership-inference attack, train-split records "
                               "(members) against held-out ones: 0.5 = chance, 1.0 = every member exposed"),
    "mia_tpr_at_1fpr": Output("lower", "the highest true-positive rate any attack reaches at 1% false positives: "
                                       "0.01 = chance"),
}  # fmt: skip


@dataclass
class Records:
    """The audited records: members first, then non-members, in the model's input form."""

    data: Any  # images: float (N,C,H,W) in [-1,1]; text: int64 token windows (N, T+1)
    labels: torch.Tensor | None  # int64 (N,) when the records are labelled
    member: np.ndarray  # bool (N,)

    def __len__(self) -> int:
        return len(self.member)

    def batches(self, size: int) -> list[slice]:
        return [slice(i, min(i + size, len(self))) for i in range(0, len(self), size)]


@dataclass(frozen=True)
class FamilyAttack:
    """A family's attacks: `score(model, records, config, seed)` -> {attack name: score per
    record, higher = member}; every name it returns starts with `prefix`."""

    prefix: str
    score: Callable[[Any, Records, MembershipConfig, int], dict[str, np.ndarray]]
    summary: str


FAMILY_ATTACKS: Registry[FamilyAttack] = Registry("membership attack")


def family_attack(family: str) -> FamilyAttack | None:
    if family not in FAMILY_ATTACKS:
        import genforge.evaluate.privacy.attacks  # noqa: F401  (registers the shipped families' attacks)
    return FAMILY_ATTACKS.get(family) if family in FAMILY_ATTACKS else None


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float = FPR) -> float:
    """The largest true-positive rate of a threshold on the scores whose false-positive rate is
    at most `fpr` (every threshold considered, ties kept together)."""
    from sklearn.metrics import roc_curve

    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    f, t, _ = roc_curve(y, np.r_[member_scores, nonmember_scores], drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


def roc_summary(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    auc = float(roc_auc_score(y, np.r_[member_scores, nonmember_scores]))
    return {"auc": auc, "tpr_at_1fpr": tpr_at_fpr(member_scores, nonmember_scores)}


def distance_scores(samples: np.ndarray, records: np.ndarray, sample_labels: np.ndarray | None,
                    record_labels: np.ndarray | None) -> tuple[np.ndarray, bool]:  # fmt: skip
    """Minus each record's distance to its closest sample (of its own class when both sides are
    labelled and the class has samples), and whether the classes were used."""
    if sample_labels is None or record_labels is None:
        return -nearest(records, samples)[1], False
    dist = np.full(len(records), np.inf)
    for c in np.unique(record_labels):
        rows, pool = record_labels == c, sample_labels == c
        # a class the samples never show: the nearest sample of any class
        dist[rows] = nearest(records[rows], samples[pool] if pool.any() else samples)[1]
    return -dist, True


def draw_pairs(n_members: int, n_nonmembers: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of equal-size member and non-member subsets (as many as the smaller side
    allows, at most `n`), drawn with `seed`."""
    m = min(n, n_members, n_nonmembers)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_members, m, replace=False)), np.sort(rng.choice(n_nonmembers, m, replace=False))


@dataclass
class MembershipResult:
    values: dict[str, float]
    details: dict[str, Any]
    warnings: list[str]
    seconds: float


def audit(records: Records, config: MembershipConfig, seed: int, *, spaces: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
          sample_labels: np.ndarray | None = None, model: Any = None) -> MembershipResult:  # fmt: skip
    """Run every applicable attack on `records`. `spaces`: name -> (generated samples, records)
    as vectors of one space, for the distance attack; `model`: the trained model, for its
    family's attacks (None for a samples file)."""
    start = time.perf_counter()
    scores: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    attack = family_attack(getattr(model, "family", "")) if model is not None else None
    if attack is not None and getattr(model, "conditional", False) and records.labels is None:
        warnings.append(f"membership: the {model.family} model is class-conditional but the records are "
                        "unlabelled; its own attacks were not run")  # fmt: skip
        attack = None
    wanted = set(config.attacks) if config.attacks is not None else None
    available = [f"distance_{space}" for space in spaces or {}] + ([attack.prefix + "*"] if attack else [])
    unknown = {w for w in wanted or () if w not in available and not (attack and w.startswith(attack.prefix))}
    if unknown:
        raise ConfigError(f"membership.attacks: {', '.join(sorted(unknown))} cannot run on this target; "
                          f"available here: {', '.join(available) or 'none'}")  # fmt: skip
    record_labels = None if records.labels is None else records.labels.numpy()
    for space, (sample_vecs, record_vecs) in (spaces or {}).items():
        name = f"distance_{space}"
        if wanted is None or name in wanted:
            scores[name], by_class = distance_scores(sample_vecs, record_vecs, sample_labels, record_labels)
            info[name] = {"kind": "distance to the closest generated sample" + (" of the record's class" if by_class else ""),
                          "space": space, "samples": len(sample_vecs)}  # fmt: skip
    if attack is not None and (wanted is None or any(w.startswith(attack.prefix) for w in wanted)):
        model.eval()
        with torch.no_grad():
            for name, s in attack.score(model, records, config, seed).items():
                if wanted is None or name in wanted:
                    scores[name] = s
                    info[name] = {"kind": attack.summary, "family": model.family}
    if wanted is not None and wanted - set(scores):
        raise ConfigError(f"membership.attacks: {', '.join(sorted(wanted - set(scores)))} cannot run on this "
                          f"target; the {model.family} family's attacks are {', '.join(sorted(info)) or 'none'}")  # fmt: skip
    member = records.member
    for name, s in scores.items():
        s = np.asarray(s, np.float64)
        if not np.isfinite(s).all():
            warnings.append(f"membership attack {name}: {int((~np.isfinite(s)).sum())} non-finite scores ranked lowest")
            s = np.where(np.isfinite(s), s, np.finfo(np.float64).min)  # an overflowed loss: no evidence
        info[name].update(roc_summary(s[member], s[~member]))
    n_members, n_non = int(member.sum()), int((~member).sum())
    if n_non * FPR < 1:
        warnings.append(f"membership: {n_non} non-members cannot resolve 1% false positives; "
                        "mia_tpr_at_1fpr is the true-positive rate at zero false positives")  # fmt: skip
    details: dict[str, Any] = {"attacks": info, "members": n_members, "non_members": n_non, "seed": seed,
                               "draws": config.draws, "levels": list(config.levels)}  # fmt: skip
    values: dict[str, float] = {}
    if info:
        best = max(info, key=lambda k: info[k]["auc"])
        details["best_attack"] = best
        values = {"mia_auc": info[best]["auc"], "mia_tpr_at_1fpr": max(a["tpr_at_1fpr"] for a in info.values())}
    return MembershipResult(values, details, warnings, round(time.perf_counter() - start, 3))
