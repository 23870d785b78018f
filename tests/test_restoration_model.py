"""`models.restoration.RestorationModel`, the step the restoration families share (`dae` on images,
`denoiser` on audio): clean batch -> corruption from the global RNG -> network -> the family's
loss; `restore`; the training progress view and the refusal to generate. A family gives only its
corruption, its loss and what `restore` accepts, so a new one is a few lines (`_Offset` below)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audio_fixtures import synth_clips
from genforge.core.errors import GenforgeError
from genforge.models.audio.denoiser import Denoiser
from genforge.models.base import Batch, ModelOutput
from genforge.models.dae import DAE
from genforge.models.restoration import RestorationModel


def _dae() -> tuple[DAE, torch.Tensor]:
    model = DAE(DAE.default_config(16, 1, widths=[8, 16], corruption={"kinds": ["gaussian", "rectangles"]}))
    return model, torch.rand(40, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _denoiser() -> tuple[Denoiser, torch.Tensor]:
    cfg = Denoiser.default_config(8000, 4000, hidden=16, blocks=1, crop=2000)
    return Denoiser(cfg), torch.from_numpy(synth_clips(20, 3, 2, 4000, 8000, seed=1)[0])


FAMILIES = {"dae": _dae, "denoiser": _denoiser}


@pytest.mark.parametrize("family", FAMILIES)
def test_step_is_the_family_corruption_then_its_loss_from_the_global_rng(family):
    model, clean = FAMILIES[family]()
    torch.manual_seed(11)
    out = model.training_step("main", Batch(clean), 0)
    # the same global RNG state (what the trainer saves and restores on resume) gives the same step
    torch.manual_seed(11)
    target = model.clean_batch(Batch(clean))
    expected = model.restoration_loss(target, model.net(model.corrupt(target)))
    assert torch.equal(out.loss, expected.loss) and out.terms.keys() == expected.terms.keys()
    torch.manual_seed(12)
    assert not torch.equal(model.training_step("main", Batch(clean), 1).loss, out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    assert [p.name for p in model.phases()] == ["main"] and model.phases()[0].modules == ["net"]
    assert model.phases()[0].optimizer.lr == model.config.lr


def test_dae_loss_is_its_l1_on_the_corrupted_batch():
    model, clean = _dae()
    torch.manual_seed(5)
    out = model.training_step("main", Batch(clean), 0)
    torch.manual_seed(5)
    noisy = model.corrupt(clean)
    l1 = (model.net(noisy) - clean).abs().mean()
    torch.testing.assert_close(out.loss, l1)
    assert set(out.terms) == {"l1"} and float(out.terms["l1"]) == pytest.approx(float(l1.detach()))


def test_denoiser_trains_on_crops_of_the_batch():
    model, clean = _denoiser()
    torch.manual_seed(0)
    model.training_step("main", Batch(clean), 0)
    assert model._preview.shape == (16, 2000)  # preview_size clips of `crop` samples
    # every crop is a stretch of its own clip
    for crop, clip in zip(model._preview, clean[:16], strict=True):
        starts = [s for s in range(clip.numel() - 2000 + 1) if torch.equal(clip[s : s + 2000], crop)]
        assert starts, "a crop that is no stretch of its clip"


@pytest.mark.parametrize(
    "family,usage", [("dae", "INPUT --out OUTPUT"), ("denoiser", "noisy.wav --out clean.wav")]
)
def test_progress_view_and_refusal_to_generate(family, usage):
    model, clean = FAMILIES[family]()
    with pytest.raises(GenforgeError, match=f"{family} is a restoration model") as err:
        model.sample(4)
    assert f"`genforge restore RUN_DIR {usage}`" in str(err.value)
    torch.manual_seed(0)
    model.training_step("main", Batch(clean), 0)
    assert len(model._preview) == model.preview_size < len(clean)
    model.eval()
    view = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert view.shape == (5, *model._preview.shape[1:])
    noisy, restored = view[0::2], view[1::2]
    assert noisy.abs().max() <= 1.0 and restored.abs().max() <= 1.0
    # pairs: the first preview items corrupted with the given generator, then their restorations
    again = model.corrupt(model._preview[:3], torch.Generator().manual_seed(3)).clamp(-1, 1)
    torch.testing.assert_close(noisy, again)
    torch.testing.assert_close(restored, model.restore(noisy[:2]))


@dataclass
class _OffsetConfig:
    dim: int = 4
    lr: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)


class _Offset(RestorationModel):
    """A toy family: vectors shifted by +0.5 and jittered; a linear map learns to undo it."""

    family = "offset"
    config_class = _OffsetConfig
    restores = "vectors"

    def __init__(self, config: _OffsetConfig):
        super().__init__(config)
        self.net = nn.Linear(config.dim, config.dim)

    def corrupt(self, clean, generator=None):
        return clean + 0.5 + 0.01 * torch.randn(clean.shape, generator=generator)

    def restoration_loss(self, clean, estimate):
        loss = F.mse_loss(estimate, clean)
        return ModelOutput(loss, {"mse": loss.detach()})

    def restore_input(self, x):
        if x.dim() != 2 or x.shape[1] != self.config.dim:
            raise GenforgeError(f"offset restores (n, {self.config.dim}) vectors, got {tuple(x.shape)}")
        return x


def test_a_family_needs_only_its_corruption_loss_and_input():
    torch.manual_seed(0)
    model = _Offset(_OffsetConfig())
    assert model.task == "restore" and model.ema_modules == ("net",)
    opt = torch.optim.Adam(model.parameters(), lr=model.config.lr, betas=model.config.betas)
    clean = torch.rand(64, 4) - 0.5
    first = None
    for step in range(300):
        out = model.training_step("main", Batch(clean), step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else float(out.loss.detach())
    assert float(out.loss.detach()) < 1e-3 < first / 100  # left: about the jitter's 1e-4
    test = torch.rand(8, 4) - 0.5
    restored = model.restore(model.corrupt(test, torch.Generator().manual_seed(1)))
    assert (restored - test).abs().max() < 0.1
    with pytest.raises(GenforgeError, match=r"offset restores \(n, 4\) vectors, got \(2, 3\)"):
        model.restore(torch.zeros(2, 3))
    with pytest.raises(
        GenforgeError, match="offset is a restoration model: it does not generate new vectors"
    ):
        _Offset(_OffsetConfig()).sample(2)
