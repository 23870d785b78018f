"""GAN family: the article's DCGAN (fixed), WGAN-GP, SNGAN, conditional variants, DiffAugment/ADA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import Batch
from genforge.models.gan import DCGAN, GAN_LOSSES, SNGAN, WGANGP, ConditionalGAN, gradient_penalty
from genforge.models.nets.dcgan import Dropout
from genforge.models.nets.latent import seeded_normal
from genforge.models.pipeline import load_pipeline, save_model, to_uint8
from genforge.models.registry import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (conftest.one_thread)


TINY = {"g_widths": [32, 16, 8], "d_widths": [8, 16]}


def _batch(n=8, channels=1, size=28, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, channels, size, size, generator=g) * 2 - 1, labels)


def test_article_dcgan_is_the_tutorial_architecture():
    m = DCGAN(DCGAN.default_config(28, 1))
    g = m.generator
    assert g.fc.bias is None and g.fc.out_features == 7 * 7 * 256
    assert [c.stride[0] for c in g.convs] == [1, 2, 2]  # not three stride-2 layers (the article's 56x56 bug)
    assert [c.out_channels for c in g.convs] == [128, 64, 1]
    assert all(c.kernel_size == (5, 5) for c in g.convs)
    m.eval()
    assert m.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)
    d = m.discriminator
    assert not any(isinstance(mod, nn.Sigmoid) for mod in d.modules())
    convs = [mod for mod in d.modules() if isinstance(mod, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0], c.kernel_size[0]) for c in convs] == [(64, 2, 5), (128, 2, 5)]
    assert [mod.p for mod in d.modules() if isinstance(mod, Dropout)] == [0.3, 0.3]
    assert [mod.negative_slope for mod in d.modules() if isinstance(mod, nn.LeakyReLU)] == [0.2, 0.2]
    assert d.head.in_features == 128 * 7 * 7 and d.head.out_features == 1


def test_bce_is_computed_on_logits():
    real, fake = torch.tensor([3.0, -1.0, 0.5]), torch.tensor([-2.0, 4.0, 0.0])
    loss = GAN_LOSSES.get("bce").discriminator(real, fake)
    manual = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    torch.testing.assert_close(loss, manual)
    # the model's D step equals BCE-with-logits on D's raw outputs for the same noise
    m = DCGAN(DCGAN.default_config(28, 1, d_dropout=0.0, reuse_fakes=False))
    batch = _batch()
    torch.manual_seed(5)
    out = m.training_step("discriminator", batch, 0)
    torch.manual_seed(5)
    with torch.no_grad():
        fake = m.generator(torch.randn(8, 100))
        r, f = m.discriminator(batch.images), m.discriminator(fake)
    expected = F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) + F.binary_cross_entropy_with_logits(
        f, torch.zeros_like(f)
    )
    torch.testing.assert_close(out.loss.detach(), expected)
    assert out.loss.item() > 0.5  # sigmoid-then-from-logits would be stuck near 2*log(1+e^-0.5) ~ 0.95 min


@pytest.mark.parametrize(
    "name,size,channels",
    [
        ("dcgan", 28, 1),
        ("dcgan", 32, 3),
        ("dcgan", 64, 3),
        ("wgan-gp", 28, 3),
        ("wgan-gp", 32, 1),
        ("wgan-gp", 64, 1),
    ]
    + [("sngan", 28, 1), ("sngan", 32, 3), ("sngan", 64, 1)],
)
def test_shapes_and_one_step(name, size, channels):
    cls = MODELS.get(name)
    cfg = cls.default_config(size, channels)
    assert len(cfg.g_widths) - 1 == {28: 2, 32: 3, 64: 4}[size]  # stride-2 stages from a 7 or 4 px start
    # the per-size layout, at an eighth of the width to keep the test fast
    m = cls(
        cls.default_config(
            size, channels, g_widths=[w // 8 for w in cfg.g_widths], d_widths=[w // 8 for w in cfg.d_widths]
        )
    )
    batch = _batch(4, channels, size)
    for phase in m.phases():
        out = m.training_step(phase.name, batch, 0)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        out.loss.backward()
    m.eval()
    x = m.sample(3, generator=torch.Generator().manual_seed(1))
    assert x.shape == (3, channels, size, size) and x.min() >= -1 and x.max() <= 1
    assert m.discriminator(x).shape == (3,)


def test_registered_defaults():
    assert [p.repeats for p in WGANGP(WGANGP.default_config(28, 1)).phases()] == [5, 1]
    w = WGANGP.default_config(28, 1)
    assert (w.loss, w.gp_weight, w.d_norm) == ("wasserstein", 10.0, "layer")
    s = SNGAN.default_config(32, 3)
    assert (s.loss, s.spectral_norm) == ("hinge", True)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in WGANGP(w).discriminator.modules())
    with pytest.raises(ConfigError, match="num_classes"):
        ConditionalGAN(ConditionalGAN.default_config(28, 1))
    with pytest.raises(ConfigError, match="unknown GAN loss"):
        DCGAN.default_config(28, 1, loss="nope")


def test_gradient_penalty_matches_direct_autograd():
    torch.manual_seed(0)
    m = WGANGP(WGANGP.default_config(28, 1, **TINY))
    real, fake = _batch(5).images, _batch(5, seed=1).images
    eps = torch.rand(5, 1, 1, 1)
    gp = gradient_penalty(m.discriminator, real, fake, eps=eps)
    assert gp.requires_grad  # create_graph: the penalty trains the critic
    norms = []
    for i in range(5):  # one sample at a time (layer norm does not couple samples)
        x = (eps[i] * real[i] + (1 - eps[i]) * fake[i])[None].requires_grad_(True)
        (g,) = torch.autograd.grad(m.discriminator(x).sum(), x)
        norms.append(g.norm())
    torch.testing.assert_close(gp, ((torch.stack(norms) - 1) ** 2).mean(), rtol=1e-4, atol=1e-6)

    class Linear(nn.Module):  # D(x) = <w, x>: the gradient is w everywhere, GP = (|w| - 1)^2
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.full((1, 1, 28, 28), 0.1))

        def forward(self, x, labels=None):
            return (x * self.w).flatten(1).sum(1)

    torch.testing.assert_close(gradient_penalty(Linear(), real, fake), torch.tensor((2.8 - 1.0) ** 2))


def test_spectral_norm_keeps_top_singular_value_near_one():
    torch.manual_seed(0)
    m = SNGAN(SNGAN.default_config(32, 3, num_classes=4, d_widths=[16, 32, 64]))
    x = _batch(4, 3, 32).images
    with torch.no_grad():  # make the raw weights clearly non-normalised
        for mod in m.discriminator.modules():
            if isinstance(mod, nn.Conv2d | nn.Linear):
                mod.parametrizations.weight.original.mul_(5.0)
    for _ in range(30):  # power iteration runs once per training-mode forward
        m.discriminator(x, torch.arange(4))
    weights = [mod.weight for mod in m.discriminator.modules() if isinstance(mod, nn.Conv2d | nn.Linear)]
    assert len(weights) == 4
    for w in weights:
        top = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
        assert abs(top.item() - 1.0) < 0.05
    raw = m.discriminator.features[0].parametrizations.weight.original
    assert torch.linalg.matrix_norm(raw.detach().flatten(1), ord=2) > 3.0  # it really normalised something


def test_discriminator_loss_falls_on_fixed_real_and_fake():
    for cls in (DCGAN, WGANGP, SNGAN):
        torch.manual_seed(0)
        m = cls(cls.default_config(28, 1, **TINY))
        real = Batch(torch.linspace(-1, 1, 28).repeat(8, 1, 28, 1))  # gradients, unlike G's output
        opt = torch.optim.Adam(m.discriminator.parameters(), lr=1e-3)
        losses = []
        for step in range(12):
            out = m.training_step("discriminator", real, step)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(out.terms["d_loss"].item())
        assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, (cls.__name__, losses)


def test_generator_step_trains_g_only_and_its_loss_falls():
    torch.manual_seed(0)
    m = DCGAN(DCGAN.default_config(28, 1, **TINY))
    opt = torch.optim.Adam(m.generator.parameters(), lr=2e-3)
    batch, losses = _batch(), []
    for step in range(12):
        out = m.training_step("generator", batch, step)
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is None for p in m.discriminator.parameters())
        assert all(p.requires_grad for p in m.discriminator.parameters())  # unfrozen afterwards
        opt.step()
        losses.append(out.loss.item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_generator_step_reuses_the_discriminator_steps_fakes():
    m = DCGAN(DCGAN.default_config(28, 1, **TINY))
    calls = []
    generate = m._generate
    m._generate = lambda *a: calls.append(1) or generate(*a)
    batch = _batch()
    m.training_step("discriminator", batch, 3)
    assert m._fakes[1].requires_grad and len(calls) == 1
    out = m.training_step("generator", batch, 3)
    assert m._fakes is None and len(calls) == 1  # no second generator forward
    out.loss.backward()
    assert all(p.grad is not None for p in m.generator.parameters())  # the cached graph reaches G
    m.training_step("generator", batch, 4)  # no D step at this step: fresh fakes
    assert len(calls) == 2


def test_subpixel_upsampling_is_the_same_function():
    torch.manual_seed(0)
    a = DCGAN(DCGAN.default_config(28, 1)).eval()
    b = DCGAN(DCGAN.default_config(28, 1, upsample="subpixel")).eval()
    b.load_state_dict(a.state_dict())
    z = torch.randn(4, 100)
    ya, yb = a.generator(z), b.generator(z)
    torch.testing.assert_close(yb, ya, atol=1e-5, rtol=1e-4)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, pa), pb in zip(a.generator.named_parameters(), b.generator.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-4, rtol=1e-3, msg=name)


def _two_classes() -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.tensor([0, 1] * 8)
    return torch.where(labels[:, None, None, None] == 1, 0.8, -0.8).expand(16, 1, 28, 28).contiguous(), labels


def _train_two_classes(m, steps: int) -> list:
    """`steps` steps of every phase on two flat classes (dark 0, bright 1); [(phase, output)]."""
    images, labels = _two_classes()
    opts = {p.name: torch.optim.Adam(getattr(m, p.modules[0]).parameters(), lr=2e-3) for p in m.phases()}
    outs = []
    for step in range(steps):
        for phase in m.phases():
            out = m.training_step(phase.name, Batch(images, labels), step)
            opts[phase.name].zero_grad()
            out.loss.backward()
            opts[phase.name].step()
            outs.append((phase.name, out))
    return outs


def test_conditional_samples_depend_on_the_class():
    torch.manual_seed(0)
    for cls in (ConditionalGAN, SNGAN, DCGAN):
        m = cls(cls.default_config(28, 1, num_classes=2, **TINY))
        _train_two_classes(m, 10)
        m.eval()
        x0 = m.sample(4, generator=torch.Generator().manual_seed(7), labels=torch.zeros(4, dtype=torch.long))
        x1 = m.sample(4, generator=torch.Generator().manual_seed(7), labels=torch.ones(4, dtype=torch.long))
        assert (x0 - x1).abs().mean() > 1e-3, cls.__name__
    with pytest.raises(GenforgeError, match="unlabelled"):
        m.train()
        m.training_step("discriminator", _batch(), 0)


def test_class_weight_teaches_the_projection_table_to_classify():
    """`class_weight`: D's features against its projection rows are class logits; the loss
    trains them on real images (D) and pushes G's fakes towards their class (G)."""
    with pytest.raises(ConfigError, match="class_weight"):
        SNGAN.default_config(28, 1, class_weight=1.0, **TINY)  # unconditional
    torch.manual_seed(0)
    m = SNGAN(SNGAN.default_config(28, 1, num_classes=2, class_weight=1.0, **TINY))
    images, labels = _two_classes()
    logits, classes = m.discriminator(images, labels, classes=True)
    assert logits.shape == (16,) and classes.shape == (16, 2)
    outs = _train_two_classes(m, 15)
    assert all("g_class" in o.terms for name, o in outs if name == "generator")
    d_class = [o.terms["d_class"].item() for name, o in outs if name == "discriminator"]
    assert d_class[-1] < d_class[0] - 0.3, d_class  # D learns to tell the classes apart
    with torch.no_grad():
        _, classes = m.discriminator(images, labels, classes=True)
    assert (classes.argmax(1) == labels).float().mean() == 1.0


def test_a_fine_tune_may_add_or_drop_diffaugment(tmp_path):
    """DiffAugment's adaptive state is not a weight: a fine-tune on small data may switch it on
    over a base trained without it (or off), and the weights still come from the base."""
    from safetensors.numpy import load_file

    from genforge.train.launch import build_trainer
    from test_train_models import make_dataset

    data = make_dataset(tmp_path / "data")
    quiet = ["train.progress=none", "train.tensorboard=false", "train.sample_every=0",
             "model.g_widths=[16,8]", "model.d_widths=[8]"]  # fmt: skip
    flags = {"steps": 2, "batch_size": 8}
    with_da = ["model.diffaugment.policy=[translation]"]
    build_trainer(tmp_path / "plain", model_name="sngan", data=data, flags=flags, sets=quiet).fit()
    build_trainer(tmp_path / "da", model_name="sngan", data=data, flags=flags, sets=quiet + with_da).fit()
    # a fine-tune starts from its base's config: dropping DiffAugment is an explicit empty policy
    for base, sets in (("plain", with_da), ("da", ["model.diffaugment.policy=[]"])):
        trainer = build_trainer(tmp_path / f"ft-{base}", data=data, flags=flags, sets=quiet[:3] + sets,
                                init_from=tmp_path / base)  # fmt: skip
        weights = load_file(str(tmp_path / base / "model.safetensors"))
        own = trainer.model.state_dict()
        assert ("augment.ada_state" in own) == (base == "plain")
        for key in own:
            if not key.startswith("augment."):
                assert np.array_equal(own[key].numpy(), weights[key]), key
        trainer.fit()


def test_save_load_gives_identical_samples(tmp_path):
    torch.manual_seed(0)
    cfg = SNGAN.default_config(
        32, 3, num_classes=3, diffaugment={"policy": ["color", "translation"], "ada": True}
    )
    m = SNGAN(cfg)
    for step in range(2):
        for phase in m.phases():
            m.training_step(
                phase.name, _batch(4, 3, 32, labels=torch.tensor([0, 1, 2, 0])), step
            ).loss.backward()
    m.eval()
    save_model(m, "sngan", tmp_path, {"step": 2})
    pipe = load_pipeline(tmp_path)
    images, labels = pipe.generate(6, seed=11)
    expected = m.sample(6, generator=torch.Generator().manual_seed(11), labels=torch.arange(6) % 3)
    assert np.array_equal(images, to_uint8(expected)) and list(labels) == [0, 1, 2, 0, 1, 2]
    assert pipe.model.augment.ada.state_dict() == m.augment.ada.state_dict()


def test_diffaugment_applies_to_both_batches_and_ada_moves_p(tmp_path):
    cfg = DCGAN.default_config(
        28,
        1,
        **TINY,
        diffaugment={
            "policy": ["translation"],
            "ada": True,
            "p": 0.5,
            "ada_speed_images": 64,
            "ada_interval": 1,
        },
    )
    m = DCGAN(cfg)
    seen = []
    m.discriminator.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
    real = Batch(torch.linspace(-1, 1, 28).repeat(8, 1, 28, 1))
    out = m.training_step("discriminator", real, 0)
    assert not torch.equal(seen[0], real.images)  # reals were translated
    assert out.terms["augment_p"] != 0.5  # the controller moved p after observing D on reals
    m2 = DCGAN(cfg)
    m2.load_state_dict(m.state_dict())
    assert m2.augment.p == m.augment.p


def test_interpolation_endpoints_are_the_seeds_samples():
    m = DCGAN(DCGAN.default_config(28, 1, **TINY)).eval()
    path = m.interpolate(5, seed_a=1, seed_b=2)
    assert path.shape == (5, 1, 28, 28)
    torch.testing.assert_close(path[0], m.generator(seeded_normal((1, 100), 1))[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(path[-1], m.generator(seeded_normal((1, 100), 2))[0], atol=1e-5, rtol=1e-5)


def test_dropout_drops_at_rate_p_and_keeps_the_mean():
    torch.manual_seed(0)
    drop = Dropout(0.3)
    y = drop(torch.ones(200_000))
    assert abs((y == 0).float().mean().item() - 0.3) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    torch.testing.assert_close(torch.unique(y), torch.tensor([0.0, 1.0 / 0.7]))
    x = torch.randn(8, 4, requires_grad=True)
    y = drop(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.7)  # gradients flow through kept units only
    assert torch.equal(drop.eval()(x), x)


def test_dropout_rate_holds_in_every_lane_of_a_64_bit_draw():
    # four int16 lanes come from each 64-bit draw: each lane (and an odd-sized tensor) keeps rate p
    torch.manual_seed(1)
    y = Dropout(0.5)(torch.ones(400_001))
    dropped = (y == 0).float()
    assert dropped.shape == (400_001,)
    for lane in range(4):
        assert abs(dropped[lane::4].mean().item() - 0.5) < 0.01, lane


def _gan_trainer(tmp_path, **overrides):
    from genforge.data.canonical import open_dataset
    from genforge.train.config import TrainConfig
    from genforge.train.trainer import Trainer
    from test_train_models import make_dataset

    data = make_dataset(tmp_path / "ds", n=16, size=28)
    cfg = DCGAN.default_config(28, 1, **TINY, **overrides)
    tcfg = TrainConfig(
        steps=1, batch_size=8, precision="fp32", progress="none", tensorboard=False, sample_every=0, checkpoint_every=0
    )
    return Trainer("dcgan", cfg, tcfg, open_dataset(data), tmp_path / "run")


def _count_calls(module: nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_simultaneous_update_takes_both_gradients_from_one_forward_before_either_step(tmp_path):
    import copy

    tr = _gan_trainer(tmp_path, update="simultaneous")
    ref = copy.deepcopy(tr.model)
    batch = _batch(8)
    torch.manual_seed(4)
    tr._grouped_step(tr._units[0], batch, 0)
    torch.manual_seed(4)
    out = ref.training_step("adversarial", batch, 0)
    d_params, g_params = list(ref.discriminator.parameters()), list(ref.generator.parameters())
    d_grads = torch.autograd.grad(out.parts["discriminator"].loss, d_params, retain_graph=True)
    g_grads = torch.autograd.grad(out.parts["generator"].loss, g_params)  # against D before its update
    trained = dict(tr.model.named_parameters())
    for prefix, params, grads in (("discriminator.", d_params, d_grads), ("generator.", g_params, g_grads)):
        names = [n for n, _ in ref.named_parameters() if n.startswith(prefix)]
        for name, p, g in zip(names, params, grads, strict=True):
            torch.testing.assert_close(trained[name].grad, g, rtol=1e-5, atol=1e-7)
            assert not torch.equal(trained[name], p)  # and both players stepped
    assert {"discriminator/d_loss", "generator/g_loss"} <= set(tr._acc)


@pytest.mark.parametrize("update, d_passes", [("alternating", 3), ("simultaneous", 2)])
def test_simultaneous_update_saves_one_discriminator_pass(tmp_path, update, d_passes):
    tr = _gan_trainer(tmp_path, update=update)
    calls = _count_calls(tr.model.discriminator)
    tr._train_step(0)
    assert len(calls) == d_passes


def test_simultaneous_update_needs_one_critic_step():
    with pytest.raises(ConfigError, match="simultaneous"):
        DCGAN.default_config(28, 1, update="simultaneous", n_critic=5)


def test_article_dcgan_starts_from_keras_glorot_init_and_sngan_from_torch_defaults():
    torch.manual_seed(0)
    g = DCGAN(DCGAN.default_config(28, 1)).generator
    fan_in, fan_out = 100, 7 * 7 * 256
    glorot_std = (2.0 / (fan_in + fan_out)) ** 0.5  # Glorot-uniform: bound sqrt(6 / (in + out))
    assert g.fc.weight.std().item() == pytest.approx(glorot_std, rel=0.05)
    assert torch.count_nonzero(g.convs[-1].bias) == 0
    sn = SNGAN(SNGAN.default_config(28, 1)).generator
    assert sn.fc.weight.std().item() == pytest.approx((1 / 3) ** 0.5 / fan_in**0.5, rel=0.05)  # U(+-1/sqrt(in))
    d = DCGAN(DCGAN.default_config(28, 1, init="normal", spectral_norm=True)).discriminator
    assert d.head.parametrizations.weight.original.std().item() == pytest.approx(0.02, rel=0.1)


def test_freeze_d_keeps_the_first_discriminator_convolutions_at_the_base(tmp_path):
    """FreezeD (`--init-from BASE --freeze-d K`): the discriminator's first K convolutions, counted
    from its input, end the fine-tune equal to the base's; the rest of it and the generator train;
    the record says what was frozen and a resumed run freezes the same tensors."""
    from safetensors.torch import load_file

    from genforge.train.launch import build_trainer
    from test_train_models import make_dataset

    data = make_dataset(tmp_path / "data")
    quiet = ["train.progress=none", "train.tensorboard=false", "train.sample_every=0", "train.ema=false",
             "model.g_widths=[16,8]", "model.d_widths=[8,16]"]  # fmt: skip
    flags = {"steps": 2, "batch_size": 8}
    build_trainer(tmp_path / "base", model_name="sngan", data=data, flags=flags, sets=quiet).fit()
    base = load_file(str(tmp_path / "base" / "model.safetensors"))
    out = tmp_path / "ft"
    trainer = build_trainer(out, data=data, flags={"steps": 3, "batch_size": 8},
                            sets=[*quiet[:4], "train.checkpoint_every=2"], init_from=tmp_path / "base", freeze_d=1)  # fmt: skip
    trainer.fit()
    final = load_file(str(out / "model.safetensors"))
    convs = [n for n, m in trainer.model.discriminator.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) >= 2
    params = dict(trainer.model.named_parameters())  # spectral norm's u, v buffers still iterate
    first = [k for k in params if k.startswith(f"discriminator.{convs[0]}.")]
    second = [k for k in params if k.startswith(f"discriminator.{convs[1]}.")]
    assert first and all(torch.equal(final[k], base[k]) for k in first)
    assert any(not torch.equal(final[k], base[k]) for k in second)
    assert any(not torch.equal(final[k], base[k]) for k in params if k.startswith("generator."))
    record = json.loads((out / "run.json").read_text())["init_from"]
    assert record["freeze_d"] == 1 and record["frozen_discriminator_layers"] == [f"discriminator.{convs[0]}"]
    assert record["frozen_discriminator_parameters"] == sum(t.numel() for k, t in final.items() if k in first)
    assert json.loads((out / "model.json").read_text())["init_from"]["freeze_d"] == 1
    resumed = build_trainer(out, flags={"steps": 4}, sets=quiet[:4], resume=True)
    assert {k for k, p in resumed.model.named_parameters() if not p.requires_grad} == set(first)
    with pytest.raises(ConfigError, match=r"freeze_d 1\): drop --freeze-d"):
        build_trainer(out, flags={"steps": 5}, sets=quiet[:4], resume=True, freeze_d=2)
    with pytest.raises(ConfigError, match="--freeze-d fine-tunes a base run"):
        build_trainer(tmp_path / "x", model_name="sngan", data=data, flags=flags, sets=quiet, freeze_d=1)
    with pytest.raises(ConfigError, match=r"has 2 convolution\(s\); freeze 1 to 2"):
        build_trainer(tmp_path / "y", data=data, flags=flags, sets=quiet[:4], init_from=tmp_path / "base", freeze_d=3)
    build_trainer(tmp_path / "vae", model_name="vae", data=data, flags=flags, sets=quiet[:4]).fit()
    with pytest.raises(ConfigError, match="'vae' family has no discriminator"):
        build_trainer(tmp_path / "z", data=data, flags=flags, sets=quiet[:4], init_from=tmp_path / "vae", freeze_d=1)


def test_gan_lr_decay_lowers_both_optimisers_lr_over_the_budget(tmp_path):
    """`lr_decay` (a fine-tune's late steps move the weights less): both phases follow the schedule."""
    from genforge.train.launch import build_trainer
    from test_train_models import make_dataset

    data = make_dataset(tmp_path / "data")
    sets = ["train.progress=none", "train.tensorboard=false", "train.sample_every=0", "model.g_widths=[16,8]",
            "model.d_widths=[8]", "model.lr_decay=linear", "model.lr_min_ratio=0.25"]  # fmt: skip
    trainer = build_trainer(tmp_path / "run", model_name="sngan", data=data, flags={"steps": 4, "batch_size": 8},
                            sets=sets)  # fmt: skip
    trainer.fit()
    lrs = {ph.name: ph.optimizer.param_groups[0]["lr"] / base for ph in trainer.phases for base in ph.base_lrs[:1]}
    # the last step ran at progress 3/4: 0.25 + 0.75 * (1 - 3/4)
    assert lrs == pytest.approx({"discriminator": 0.4375, "generator": 0.4375})
    with pytest.raises(ConfigError, match="lr decay"):
        build_trainer(tmp_path / "bad", model_name="sngan", data=data, flags={"steps": 1},
                      sets=[*sets[:5], "model.lr_decay=steep"])  # fmt: skip


def _sgd_steps(m, labels, steps: int, lr: float = 0.05) -> None:
    """`steps` training steps of every phase of `m` on 4 random images, plain SGD by hand."""
    m.train()
    for step in range(steps):
        for phase in m.phases():
            m.training_step(phase.name, _batch(4, labels=labels), step).loss.backward()
            with torch.no_grad():
                for p in m.parameters():
                    if p.grad is not None:
                        p -= lr * p.grad
                        p.grad = None


def test_noise_inputs_are_part_of_the_latent_and_add_per_pixel_detail(tmp_path):
    # TINY at 28 px: hidden stages 7x7 and 14x14; g_noise 2 puts a map in both
    torch.manual_seed(0)
    cfg = SNGAN.default_config(28, 1, num_classes=2, g_noise=2, g_noise_init=0.0, **TINY)
    m = SNGAN(cfg)
    assert m.generator.latent_width == 100 + 7 * 7 + 14 * 14
    assert m.noise(3).shape == (3, 100 + 49 + 196)
    z = m.noise(4, generator=torch.Generator().manual_seed(1))
    m.eval()
    other_maps = z.clone()
    other_maps[:, 100:] = torch.randn(4, 245)
    # scales at zero: the maps change nothing until training moves them
    assert torch.equal(m.generator(z, torch.zeros(4, dtype=torch.long)),
                       m.generator(other_maps, torch.zeros(4, dtype=torch.long)))  # fmt: skip
    _sgd_steps(m, torch.tensor([0, 1, 0, 1]), 3)
    assert all(float(s.detach().abs().sum()) > 0 for s in m.generator.noise_scales)
    m.eval()
    labels = torch.zeros(4, dtype=torch.long)
    a, b = m.generator(z, labels), m.generator(other_maps, labels)
    assert (a - b).abs().mean() > 1e-5  # other maps, other detail, the same z
    save_model(m, "sngan", tmp_path, {"step": 3})
    images, _ = load_pipeline(tmp_path).generate(4, seed=5)
    expected = m.sample(4, generator=torch.Generator().manual_seed(5), labels=torch.arange(4) % 2)
    assert np.array_equal(images, to_uint8(expected))  # a seed still fixes every sample
    path = m.interpolate(3, seed_a=1, seed_b=2)
    torch.testing.assert_close(path[0], m.generator(seeded_normal((1, 345), 1), labels[:1])[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="expected 345 values"):
        m.generator(torch.zeros(1, 100), labels[:1])


def test_noise_inputs_vary_the_samples_from_the_start_by_default():
    m = SNGAN(SNGAN.default_config(28, 1, g_noise=1, **TINY)).eval()
    z = m.noise(2, generator=torch.Generator().manual_seed(3))
    other = torch.cat([z[:, :100], torch.randn(2, 196)], 1)
    assert (m.generator(z) - m.generator(other)).abs().mean() > 1e-3


def test_noise_inputs_need_a_hidden_stage_to_go_in():
    with pytest.raises(ConfigError, match="noise_stages 3"):
        SNGAN(SNGAN.default_config(28, 1, g_noise=3, **TINY))


@pytest.mark.parametrize("norm", ["layer", "pixel"])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_per_sample_generator_norms_use_no_batch_statistics(tmp_path, norm, num_classes):
    """`g_norm: layer | pixel`: a sample is the same function of its latent in training and
    sampling, alone or in any batch (batch norm is neither), and the family trains and reloads."""
    torch.manual_seed(0)
    m = SNGAN(SNGAN.default_config(28, 1, num_classes=num_classes, g_norm=norm, **TINY))
    assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.generator.modules())
    z = m.noise(5, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1]) if num_classes else None
    with torch.no_grad():
        m.train()
        batch_out = m.generator(z, labels)
        m.eval()
        one = m.generator(z[:1], None if labels is None else labels[:1])
    torch.testing.assert_close(one, batch_out[:1], atol=1e-5, rtol=1e-5)
    _sgd_steps(m, torch.tensor([0, 1, 2, 0]) if num_classes else None, 2)
    assert all(torch.isfinite(p).all() for p in m.parameters())  # no step's gradient was NaN or inf
    m.eval()
    save_model(m, "sngan", tmp_path, {"step": 2})
    images, _ = load_pipeline(tmp_path).generate(3, seed=5)
    expected = m.sample(3, generator=torch.Generator().manual_seed(5),
                        labels=torch.arange(3) % 3 if num_classes else None)  # fmt: skip
    assert np.array_equal(images, to_uint8(expected))


def test_batch_statistics_are_the_default_generator_norm():
    m = SNGAN(SNGAN.default_config(28, 1, num_classes=2, **TINY)).train()
    z = m.noise(4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        assert (m.generator(z, labels)[:1] - m.generator(z[:1].repeat(4, 1), labels[:1].repeat(4))[:1]).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="unknown generator norm 'instance'; known: batch, layer, pixel"):
        SNGAN.default_config(28, 1, g_norm="instance", **TINY)


def test_local_head_judges_each_patch_and_weighs_it_as_the_global_logit():
    """`d_local: k` adds a logit per position of D's k-th stage map beside the global one: D
    returns (n, 2P), the global logit repeated P times then the patches', so a loss's mean weighs
    the two halves equally; each patch logit depends only on its receptive field; the hinge loss
    and the gradient penalty take them as they are; a stage D lacks is refused."""
    torch.manual_seed(0)
    m = SNGAN(SNGAN.default_config(28, 1, num_classes=3, d_local=1, **TINY))
    d = m.discriminator
    x, labels = _batch(4).images, torch.tensor([0, 1, 2, 0])
    d.eval()  # spectral norm's power iteration runs in training forwards only
    logits = d(x, labels)
    assert logits.shape == (4, 2 * 14 * 14)  # stage 1 of a 28x28 input: a 14x14 map
    torch.testing.assert_close(logits[:, :196], logits[:, :1].expand(4, 196))
    plain = SNGAN(SNGAN.default_config(28, 1, num_classes=3, **TINY)).discriminator
    plain.load_state_dict({k: v for k, v in d.state_dict().items() if not k.startswith("local.")})
    plain.eval()
    torch.testing.assert_close(logits[:, 0], plain(x, labels))  # the global logit is the plain D's
    # a change in the image's top-left corner moves the patches over it, not those far away
    y = x.clone()
    y[:, :, :3, :3] += 0.5
    moved = (d(y, labels)[:, 196:] - logits[:, 196:]).abs().view(4, 14, 14)
    assert float(moved[:, :3, :3].amax()) > 1e-4 and float(moved[:, 6:, 6:].amax()) == 0.0
    d.train()
    out = m.training_step("discriminator", Batch(x, labels), 0)
    out.loss.backward()
    assert d.local.parametrizations.weight.original.grad.abs().sum() > 0
    gp = gradient_penalty(d, x, _batch(4, seed=1).images, labels)
    assert torch.isfinite(gp) and gp.requires_grad
    with pytest.raises(ConfigError, match="d_local"):
        SNGAN.default_config(28, 1, d_local=3, **TINY)
