"""The shipped families' membership attacks (registered in `membership.FAMILY_ATTACKS`).

Each scores records with what the family's own training objective makes of them: a model fits
its training records better than unseen ones, and the gap is what leaks. Scores are "higher =
member"; losses are negated. Stochastic scores average `draws` noise draws made once from the
audit's seed for the whole record set, so a record's score does not depend on its batch.
Runs under `torch.no_grad()` with the model in eval mode (audit() sees to both).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genforge.evaluate.privacy.config import MembershipConfig
from genforge.evaluate.privacy.membership import FAMILY_ATTACKS, FamilyAttack, Records


def _labels(model: Any, records: Records, rows: slice) -> torch.Tensor | None:
    return records.labels[rows] if getattr(model, "conditional", False) else None


def _per_record(values: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(values).double().numpy()


def gan_scores(model: Any, records: Records, cfg: MembershipConfig, seed: int) -> dict[str, np.ndarray]:
    """The discriminator's logit (critic value for WGANs): the only network that saw real data."""
    out = [model.discriminator(records.data[b], _labels(model, records, b)).reshape(-1)
           for b in records.batches(cfg.batch_size)]  # fmt: skip
    return {"gan_discriminator": _per_record(out)}


def vae_scores(model: Any, records: Records, cfg: MembershipConfig, seed: int) -> dict[str, np.ndarray]:
    """ELBO (beta = 1 whatever the training beta) over `draws` posterior draws, and minus the
    reconstruction error of the posterior mean."""
    from genforge.models.vae import kl_normal

    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(cfg.draws, len(records), model.config.latent_dim, generator=gen)
    elbo, recon = [], []
    for b in records.batches(cfg.batch_size):
        x, y = records.data[b], _labels(model, records, b)
        mu, logvar = model.encode(x, y)
        std = torch.exp(0.5 * logvar)
        nll = torch.stack([model.likelihood.nll(model.decode(mu + std * e[b], y), x, model.scale.log_sigma)
                           for e in eps]).mean(0)  # fmt: skip
        elbo.append(-(nll + kl_normal(mu, logvar)))
        recon.append(-model.likelihood.nll(model.decode(mu, y), x, model.scale.log_sigma))
    return {"vae_elbo": _per_record(elbo), "vae_reconstruction": _per_record(recon)}


def diffusion_scores(model: Any, records: Records, cfg: MembershipConfig, seed: int) -> dict[str, np.ndarray]:
    """Minus the denoising loss (the training objective, in the model's own eps or v target) at
    each noise level of `cfg.levels`, averaged over `draws` noise draws, and its mean over levels."""
    from genforge.models.diffusion.schedule import q_sample

    steps = model.config.timesteps
    levels = sorted({int(round(f * (steps - 1))) for f in cfg.levels})
    gen = torch.Generator().manual_seed(seed)
    losses = {}
    for t in levels:
        ab = model.alpha_bar[t]
        total = torch.zeros(len(records), dtype=torch.float64)
        for _ in range(cfg.draws):
            noise = torch.randn(records.data.shape, generator=gen)
            for b in records.batches(cfg.batch_size):
                x0, eps = records.data[b], noise[b]
                tt = torch.full((x0.shape[0],), t, dtype=torch.long)
                out = model.denoiser(q_sample(x0, eps, ab), tt, _labels(model, records, b))
                err = (out.float() - model.prediction.target(x0, eps, ab)).square().flatten(1).mean(1)
                total[b] += err.double()
        losses[t] = total / cfg.draws
    scores = {f"diffusion_loss_t{t}": -loss.numpy() for t, loss in losses.items()}
    scores["diffusion_loss_mean"] = -torch.stack(list(losses.values())).mean(0).numpy()
    return scores


def text_scores(model: Any, records: Records, cfg: MembershipConfig, seed: int) -> dict[str, np.ndarray]:
    """Minus the mean next-token loss (nats) of each token window."""
    return {"text_loss": -_per_record([model.nll(records.data[b]).mean(1) for b in records.batches(cfg.batch_size)])}


def mmd_scores(model: Any, records: Records, cfg: MembershipConfig, seed: int) -> dict[str, np.ndarray]:
    """The released statistic itself: a record's embedding against its class's target mean (a
    member's own phi is part of that mean, pulling it towards the record by |phi|^2 / n); and,
    for a conditional model, minus the feature net's classification loss on the record (a feature
    net trained on the data, as in a run without privacy, fits its members better)."""
    target, loss = [], []
    for b in records.batches(cfg.batch_size):
        x = records.data[b]
        rows = records.labels[b] if model.conditional else torch.zeros(len(x), dtype=torch.long)
        target.append((model.embed(x) * model.targets[rows]).sum(1))
        if model.conditional:
            logits = model.features((x + 1) / 2)
            loss.append(-torch.nn.functional.cross_entropy(logits, rows, reduction="none"))
    return {"mmd_target": _per_record(target), **({"mmd_feature_loss": _per_record(loss)} if loss else {})}


FAMILY_ATTACKS.register("gan", FamilyAttack("gan_", gan_scores, "the discriminator's score"))
FAMILY_ATTACKS.register("vae", FamilyAttack("vae_", vae_scores, "ELBO / reconstruction error"))
FAMILY_ATTACKS.register("diffusion", FamilyAttack("diffusion_", diffusion_scores,
                                                  "denoising loss at a fixed noise level (mean over fixed draws)"))  # fmt: skip
FAMILY_ATTACKS.register("mmd", FamilyAttack("mmd_", mmd_scores, "the record's embedding against its class's target mean"))
FAMILY_ATTACKS.register("transformer", FamilyAttack("text_", text_scores, "the model's loss on the record"))
