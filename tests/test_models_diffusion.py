"""DDPM: U-Net shapes, schedules, parameterisations, samplers against closed forms, CFG, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from genforge.core.errors import ConfigError, GenforgeError
from genforge.models.base import Batch
from genforge.models.diffusion import DDPM
from genforge.models.diffusion.samplers import (
    ddim_sigma,
    ddim_step,
    ddpm_step,
    posterior,
    sample_loop,
    sample_timesteps,
)
from genforge.models.diffusion.schedule import (
    MAX_BETA,
    SCHEDULES,
    cosine_alpha_bar,
    eps_from_v,
    make_schedule,
    q_sample,
    v_from_eps,
    x0_from_eps,
)
from genforge.models.pipeline import load_pipeline, save_model
from genforge.models.registry import MODELS, build_model


@pytest.fixture(autouse=True)
def one_thread():
    # several test processes share 2 cores: a second intra-op thread mostly waits for the CPU
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(image_size: int = 16, channels: int = 1, num_classes: int = 0, **over) -> DDPM:
    cfg = DDPM.default_config(image_size, channels, num_classes, base_channels=8, timesteps=100, **over)
    return DDPM(cfg)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere: the zero-initialised output layers would hide any mistake."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def test_registered_with_contract():
    assert MODELS.get("ddpm") is DDPM
    model = build_model("ddpm", {"image_size": 28, "channels": 1, "base_channels": 8})
    assert model.family == "diffusion" and model.ema_modules == ("denoiser",)
    [phase] = model.phases()
    assert phase.name == "main" and phase.modules == ["denoiser"]
    assert phase.optimizer.name == "adamw" and phase.optimizer.betas == (0.9, 0.999)


@pytest.mark.parametrize("size", [28, 32, 64, 30])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("patch", [1, 2])
def test_unet_keeps_shape(size, channels, patch):
    model = randomize(tiny(size, channels, num_classes=3, patch_size=patch))
    x = torch.randn(2, channels, size, size)
    out = model.denoiser(x, torch.tensor([0, 99]), torch.tensor([1, 3]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_patches_and_odd_levels():
    """With 2x2 patches every output pixel still depends on its own input pixel (unfold and fold
    are inverse permutations); 28 px runs unpadded at 14 -> 7 -> 4, the decoder cropping 8 -> 7,
    and an odd image size is padded only up to the patch multiple."""
    torch.manual_seed(0)
    model = randomize(tiny(28, 1, patch_size=2))
    x = torch.randn(1, 1, 28, 28, requires_grad=True)
    out = model.denoiser(x, torch.tensor([10]))
    (grad,) = torch.autograd.grad(out[0, 0, 5, 7], x)
    assert grad[0, 0, 5, 7] != 0 and out.shape == (1, 1, 28, 28)
    assert tuple(model.denoiser.pad) == (0, 0, 0, 0) and model.denoiser.crops == [0, 7, 0]
    odd = tiny(29, 1, patch_size=2).denoiser
    assert tuple(odd.pad) == (0, 1, 0, 1) and odd.crops == [0, 0, 15]  # 30 -> 15 -> 8 -> 4


def test_default_config_sizes():
    cfg28 = DDPM.default_config(28, 1)
    assert cfg28.patch_size == 2 and tuple(cfg28.channel_mults) == (1, 2, 2)
    assert tuple(cfg28.attention_resolutions) == (4,)  # 28 -> 14 -> 7 -> 4
    assert DDPM(cfg28).denoiser.down[-1].attn[0].__class__.__name__ == "Attention"
    cfg64 = DDPM.default_config(64, 3, 10, prediction="v")
    assert tuple(cfg64.channel_mults) == (1, 2, 4, 4) and tuple(cfg64.attention_resolutions) == (4,)
    assert cfg64.prediction == "v" and cfg64.num_classes == 10
    with pytest.raises(ConfigError, match="patch_size"):
        DDPM.default_config(28, 1, patch_size=0)


def test_group_norm_runs_in_fp32_under_bf16_autocast():
    """The U-Net's norms compute in fp32 (PyTorch's bf16 channels-last GroupNorm is slow) and hand
    back the input's dtype; the result equals fp32 GroupNorm of the same bf16 values."""
    from genforge.models.diffusion.unet import GroupNorm

    norm = GroupNorm(16)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 16, 8, 8).bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.bfloat16
    ref = torch.nn.functional.group_norm(x.float(), 8, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(y.float(), ref.bfloat16().float(), rtol=0, atol=0)


def test_training_noise_does_not_depend_on_memory_format():
    model = tiny(16, 3)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    losses = []
    for images in (x, x.contiguous(memory_format=torch.channels_last)):
        torch.manual_seed(3)
        losses.append(model.training_step("main", Batch(images=images), 0).loss)
    torch.testing.assert_close(losses[0], losses[1])


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_alpha_bar_monotone_in_unit_interval(name):
    ab = make_schedule(name, 1000).alpha_bar
    assert ab.dtype == np.float64 and ab.shape == (1000,)
    assert np.all(np.diff(ab) < 0) and ab[0] < 1 and ab[-1] > 0
    assert ab[-1] < 1e-3  # the chain ends in (almost) pure noise


def test_linear_schedule_is_ho_et_al():
    betas = SCHEDULES.get("linear")(1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)


def test_cosine_schedule_matches_nichol_dhariwal():
    T, s = 1000, 0.008
    ab = make_schedule("cosine", T).alpha_bar
    # alpha_bar(t) = f(t)/f(0), f(t) = cos((t/T + s)/(1+s) * pi/2)^2, step index i is t = i + 1
    f = [math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    expected = np.array([f[t] / f[0] for t in range(1, T + 1)])
    betas = 1 - expected[1:] / expected[:-1]
    unclipped = int(np.argmax(betas > MAX_BETA)) + 1  # the clip acts only at the very end
    assert unclipped > 990
    np.testing.assert_allclose(ab[:unclipped], expected[:unclipped], rtol=1e-10)
    np.testing.assert_allclose(cosine_alpha_bar(np.arange(1, 11), T), expected[:10], rtol=1e-12)


def test_v_eps_conversion_is_exact():
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((2, 3, 8, 8))
    for ab in (0.9999, 0.5, 1e-4):
        x_t = q_sample(x0, eps, ab)
        v = v_from_eps(x0, eps, ab)
        np.testing.assert_allclose(eps_from_v(x_t, v, ab), eps, atol=1e-12)
        np.testing.assert_allclose(x0_from_eps(x_t, eps, ab), x0, atol=1e-9 / ab**0.5)


def test_posterior_matches_bayes_closed_form():
    rng = np.random.default_rng(1)
    ab = make_schedule("linear", 1000).alpha_bar
    x0, x_t = rng.standard_normal((2, 5))
    for t, prev in [(500, 499), (10, 9), (800, 780)]:
        a, a_prev = ab[t], ab[prev]
        alpha = a / a_prev
        # q(x_prev | x0) = N(sqrt(a_prev) x0, 1 - a_prev); q(x_t | x_prev) = N(sqrt(alpha) x_prev, 1 - alpha)
        precision = 1 / (1 - a_prev) + alpha / (1 - alpha)
        mean = (a_prev**0.5 * x0 / (1 - a_prev) + alpha**0.5 * x_t / (1 - alpha)) / precision
        got_mean, got_var = posterior(x0, x_t, a, a_prev)
        np.testing.assert_allclose(got_mean, mean, rtol=1e-10)
        assert got_var == pytest.approx(1 / precision, rel=1e-10)
        # DDIM with eta = 1 has the same variance
        assert ddim_sigma(a, a_prev, 1.0) ** 2 == pytest.approx(got_var, rel=1e-10)


def test_ddpm_step_equals_ddim_eta_one():
    rng = np.random.default_rng(2)
    x, eps, noise = rng.standard_normal((3, 2, 1, 4, 4))
    ab = make_schedule("cosine", 1000).alpha_bar
    for clip in (False, True):
        a = ddpm_step(x, eps, ab[300], ab[250], noise=noise, clip=clip)
        b = ddim_step(x, eps, ab[300], ab[250], eta=1.0, noise=noise, clip=clip)
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("step", [ddim_step, ddpm_step])
def test_numpy_step_equals_torch_step(step, eta):
    rng = np.random.default_rng(3)
    x, eps, noise = rng.standard_normal((3, 2, 3, 5, 5))
    ab = make_schedule("linear", 1000).alpha_bar
    out_np = step(x, eps, float(ab[400]), float(ab[380]), eta=eta, noise=noise)
    tx, te, tn = (torch.from_numpy(a) for a in (x, eps, noise))
    out_t = step(tx, te, float(ab[400]), float(ab[380]), eta=eta, noise=tn)
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-12, atol=1e-12)


def test_timesteps_strictly_decreasing():
    for steps in (1, 7, 50, 1000):
        ts = sample_timesteps(1000, steps)
        assert len(ts) == steps and ts[0] == 999 and ts[-1] == (0 if steps > 1 else 999)
        assert np.all(np.diff(ts) < 0)
    with pytest.raises(ConfigError, match="1..1000"):
        sample_timesteps(1000, 1001)


def _oracle_eps(x0: np.ndarray, alpha_bar: np.ndarray):
    def eps_fn(x_t, t):
        return (x_t - alpha_bar[t] ** 0.5 * x0) / (1 - alpha_bar[t]) ** 0.5

    return eps_fn


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_oracle_denoiser_recovers_x0(sampler):
    schedule = make_schedule("cosine", 1000)
    x0 = np.full((2, 1, 6, 6), 0.3)
    x = np.random.default_rng(4).standard_normal(x0.shape)
    noise_rng = np.random.default_rng(5)
    out = sample_loop(
        _oracle_eps(x0, schedule.alpha_bar),
        x,
        schedule,
        steps=20,
        sampler=sampler,
        noise_fn=lambda: noise_rng.standard_normal(x0.shape),
    )
    np.testing.assert_allclose(out, x0, atol=1e-9)


class OracleNet(nn.Module):
    """Knows the data is the constant image `value`; predicts eps or v exactly."""

    def __init__(self, alpha_bar: torch.Tensor, value: float, prediction: str):
        super().__init__()
        self.alpha_bar, self.value, self.prediction = alpha_bar, value, prediction

    def forward(self, x, t, labels=None):
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        x = x.double()
        x0 = torch.full_like(x, self.value)
        eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5
        return (v_from_eps(x0, eps, ab) if self.prediction == "v" else eps).float()


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_model_sampling_with_oracle_recovers_x0(prediction):
    model = tiny(prediction=prediction, schedule="linear")
    model.denoiser = OracleNet(torch.from_numpy(model.schedule.alpha_bar), -0.4, prediction)
    out = model.sample(3, generator=torch.Generator().manual_seed(0), steps=10)
    torch.testing.assert_close(out, torch.full_like(out, -0.4), atol=2e-5, rtol=0)


def test_ddim_eta0_deterministic_under_seed():
    model = randomize(tiny(num_classes=2))
    labels = torch.tensor([0, 1, 0])
    a = model.sample(3, generator=torch.Generator().manual_seed(7), labels=labels, steps=4)
    b = model.sample(3, generator=torch.Generator().manual_seed(7), labels=labels, steps=4)
    c = model.sample(3, generator=torch.Generator().manual_seed(8), labels=labels, steps=4)
    assert a.shape == (3, 1, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # stochastic samplers draw extra noise from the same generator: still reproducible, but different
    d = model.sample(3, generator=torch.Generator().manual_seed(7), labels=labels, steps=4, eta=1.0)
    e = model.sample(3, generator=torch.Generator().manual_seed(7), labels=labels, steps=4, eta=1.0)
    assert torch.equal(d, e) and not torch.equal(a, d)


def test_classifier_free_guidance_endpoints():
    model = randomize(tiny(num_classes=4))
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([5, 50, 95])
    labels = torch.tensor([0, 2, 3])
    cond = model.denoiser(x, t, labels)
    uncond = model.denoiser(x, t, torch.full_like(labels, 4))
    assert (cond - uncond).abs().max() > 1e-3  # the label matters
    torch.testing.assert_close(model.predict(x, t, labels, 0.0), uncond, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.predict(x, t, labels, 1.0), cond, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        model.predict(x, t, labels, 3.0), uncond + 3 * (cond - uncond), atol=1e-5, rtol=1e-5
    )


def test_label_dropout_uses_null_class():
    model = tiny(num_classes=5, cfg_dropout=0.0)
    labels = torch.tensor([0, -1, 4, 2])
    assert model._train_labels(labels, 4, torch.device("cpu")).tolist() == [0, 5, 4, 2]
    model.config.cfg_dropout = 0.5
    torch.manual_seed(0)
    dropped = model._train_labels(torch.zeros(4000, dtype=torch.long), 4000, torch.device("cpu")) == 5
    assert 0.45 < dropped.float().mean().item() < 0.55


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("patch", [1, 2])
def test_loss_falls_on_tiny_batch(prediction, patch):
    torch.manual_seed(0)
    model = tiny(prediction=prediction, patch_size=patch)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    images = torch.stack([torch.tanh(3 * xx), torch.tanh(3 * yy), -torch.tanh(3 * xx), -torch.tanh(3 * yy)])
    batch = Batch(images=images.unsqueeze(1).repeat(4, 1, 1, 1))

    def held_out_loss() -> float:
        state = torch.get_rng_state()
        torch.manual_seed(123)  # the same t and noise every time
        with torch.no_grad():
            loss = model.training_step("main", batch, 0).loss.item()
        torch.set_rng_state(state)
        return loss

    before = held_out_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(100):
        out = model.training_step("main", batch, step)
        assert set(out.terms) == {"mse"}
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = held_out_loss()
    # measured after 100 steps: eps 0.04x (1x1 patches) / 0.21x (2x2); v 0.56x / 0.74x
    assert after < (0.65 if prediction == "eps" else 0.85) * before, (before, after)


def test_training_step_reproducible_from_global_seed():
    model = randomize(tiny()).train()
    batch = Batch(images=torch.rand(4, 1, 16, 16) * 2 - 1)
    torch.manual_seed(3)
    a = model.training_step("main", batch, 0).loss
    torch.manual_seed(3)
    b = model.training_step("main", batch, 0).loss
    assert torch.equal(a, b)


def test_save_load_gives_identical_samples(tmp_path):
    model = randomize(tiny(num_classes=3, schedule="cosine", prediction="v"))
    save_model(model, "ddpm", tmp_path, {"step": 0, "ema": False})
    pipe = load_pipeline(tmp_path)
    assert pipe.conditional and pipe.num_classes == 3
    a = model.sample(
        4, generator=torch.Generator().manual_seed(11), labels=torch.tensor([0, 1, 2, 0]), steps=5
    )
    b = pipe.model.sample(
        4, generator=torch.Generator().manual_seed(11), labels=torch.tensor([0, 1, 2, 0]), steps=5
    )
    assert torch.equal(a, b)
    images, labels = pipe.generate(4, seed=3, class_label=2, steps=3, sampler="ddpm", guidance=1.5)
    again, _ = pipe.generate(4, seed=3, class_label=2, steps=3, sampler="ddpm", guidance=1.5)
    assert images.shape == (4, 16, 16, 1) and images.dtype == np.uint8 and labels.tolist() == [2, 2, 2, 2]
    assert np.array_equal(images, again)


def test_clear_errors():
    with pytest.raises(ConfigError, match="unknown noise schedule 'quadratic'"):
        DDPM.default_config(28, 1, schedule="quadratic")
    with pytest.raises(ConfigError, match="prediction type"):
        DDPM.default_config(28, 1, prediction="x0")
    with pytest.raises(ConfigError, match="sample_steps"):
        DDPM.default_config(28, 1, timesteps=10, sample_steps=50)
    model = tiny()
    with pytest.raises(GenforgeError, match="unconditional"):
        model.sample(2, labels=torch.tensor([0, 1]))
    with pytest.raises(GenforgeError, match="class-conditional"):
        model.sample(2, guidance=2.0)
    with pytest.raises(ConfigError, match="unknown sampler 'euler'"):
        model.sample(2, sampler="euler")
    with pytest.raises(ConfigError, match="1..100"):
        model.sample(2, steps=101)
    with pytest.raises(GenforgeError, match="training label 5 is out of range for num_classes = 3"):
        tiny(num_classes=3).training_step("main", Batch(torch.zeros(2, 1, 16, 16), torch.tensor([0, 5])), 0)
    with pytest.raises(GenforgeError, match="0..2"):
        tiny(num_classes=3).sample(2, labels=torch.tensor([0, 7]))


def test_onnx_export_and_numpy_sampler_match_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = randomize(tiny(28, 1, num_classes=3))
    module, inputs, names, outputs, axes = model.export_spec()
    path = tmp_path / "denoiser.onnx"
    torch.onnx.export(
        module, inputs, str(path), input_names=names, output_names=outputs, dynamic_axes=axes, dynamo=False
    )
    session = ort.InferenceSession(str(path))
    labels = np.array([0, 2, 3])  # 3 = the null class
    x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(9))

    def eps_fn(x, t):
        feed = {"x_t": x.astype(np.float32), "t": np.full(3, t, np.int64), "labels": labels}
        return session.run(None, feed)[0].astype(np.float64)

    out_np = np.clip(sample_loop(eps_fn, x_T.double().numpy(), model.schedule, steps=6), -1, 1)
    out_t = model.sample(
        3, generator=torch.Generator().manual_seed(9), labels=torch.from_numpy(labels), steps=6, guidance=1.0
    )
    np.testing.assert_allclose(out_np, out_t.numpy(), atol=1e-4)
