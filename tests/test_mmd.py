"""The `mmd` family (models/mmd.py) and privacy by one release (train/statistics.py,
train/privacy_release.py): clipping and sensitivity, the noise scale, the exact targets without
privacy, a private run that never trains on a private batch, the base's feature net, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from genforge.data.canonical import open_dataset
from genforge.data.loader import to_float
from genforge.models.pipeline import load_pipeline
from genforge.train.launch import build_trainer
from genforge.train.privacy import calibrate_noise
from genforge.train.statistics import ClassMeans
from test_train_models import make_dataset

QUIET = ["train.progress=none", "train.tensorboard=false", "train.sample_every=0"]
# a tiny generator and feature net at 8 px
SMALL = ["model.widths=[16,8]", "model.latent_dim=4", "model.per_class=4", "model.kernel=3",
         "model.features.width=4", "model.features.dense=8", "model.features.pool=2",
         "model.features.train_steps=20", "model.features.train_batch=16"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds", n=128)


def _trainer(out, dataset, steps=6, sets=(), privacy=None, resume=False, init_from=None):
    return build_trainer(
        out, model_name="mmd", data=dataset, flags={"steps": steps, "batch_size": 16},
        sets=[*QUIET, *SMALL, *sets], privacy=privacy, conditional=True, resume=resume, init_from=init_from,
    )  # fmt: skip


def _model_json(run) -> dict:
    return json.loads((run / "model.json").read_text())


# --- the statistics -------------------------------------------------------------------------------


def test_class_means_clip_rows_and_count_classes():
    stats = ClassMeans(rows=2, dim=3)
    e = torch.tensor([[0.3, 0.0, 0.0], [30.0, 40.0, 0.0], [0.0, 0.0, 0.5]])
    stats.add(e, torch.tensor([0, 0, 1]))
    means, counts = stats.means()
    r = stats.radius  # sqrt(1 - 0.2^2)
    assert r == pytest.approx(0.9798, abs=1e-4)
    assert counts.tolist() == pytest.approx([2.0, 1.0])
    # the long row is clipped to norm r, the short ones kept
    expected0 = (torch.tensor([0.3, 0.0, 0.0]) + r * torch.tensor([0.6, 0.8, 0.0])) / 2
    assert torch.allclose(means[0], expected0, atol=1e-6)
    assert torch.allclose(means[1], torch.tensor([0.0, 0.0, 0.5]), atol=1e-6)
    with pytest.raises(Exception, match="rows must be in 0..1"):
        stats.add(e[:1], torch.tensor([2]))


def test_one_example_moves_the_table_by_at_most_one():
    """The sensitivity the noise is calibrated to: adding any example changes the table
    (sums and the count coordinate) by a vector of L2 norm <= 1."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(50, 16, generator=g) * 5
    rows = torch.randint(0, 3, (50,), generator=g)
    for scale in (0.01, 0.5, 1.0, 100.0):
        a, b = ClassMeans(3, 16), ClassMeans(3, 16)
        a.add(base, rows)
        b.add(base, rows)
        extra = torch.randn(1, 16, generator=g) * scale
        b.add(extra, torch.tensor([1]))
        assert float((b.table - a.table).norm()) <= 1.0 + 1e-9


def test_noise_has_the_given_scale():
    stats = ClassMeans(rows=2, dim=20_000)
    stats.add(torch.full((10, 20_000), 1e-3), torch.tensor([0] * 6 + [1] * 4))
    exact = stats.table[:, :-1].clone()
    means, counts = stats.means(sigma=2.0, generator=torch.Generator().manual_seed(1))
    noise = means.double() * counts[:, None] - exact
    assert float(noise.std()) == pytest.approx(2.0, rel=0.03)
    assert torch.equal(stats.table[:, :-1], exact)  # the table itself is not modified


# --- the family -------------------------------------------------------------------------------------


def _exact_means(run, dataset) -> torch.Tensor:
    model = load_pipeline(run).model
    split = open_dataset(dataset).train_split
    x = to_float(torch.from_numpy(np.array(split.images)).permute(0, 3, 1, 2))
    stats = ClassMeans(2, model.targets.shape[1])
    with torch.no_grad():
        stats.add(model.embed(x), torch.from_numpy(np.asarray(split.labels)).long())
    return stats.means()[0]


def test_trains_against_the_exact_class_means_without_privacy(tmp_path, dataset):
    run = tmp_path / "plain"
    result = _trainer(run, dataset).fit()
    assert result["step"] == 6
    info = _model_json(run)
    stats = info["statistics"]
    assert stats["examples"] == 128 and stats["rows"] == 2 and stats["noise_multiplier"] == 0.0
    assert stats["feature_net"].startswith("trained on this run's data (20 classifier steps)")
    model = load_pipeline(run).model
    assert int(model.features_trained) == 1
    # the targets saved with the weights are the class means of phi over the training split
    assert torch.allclose(model.targets, _exact_means(run, dataset), atol=1e-5)
    # it generates images of the data's shape, per class, deterministically under a seed
    pipe = load_pipeline(run)
    a = pipe.model.sample(6, generator=torch.Generator().manual_seed(3), labels=torch.tensor(1))
    b = pipe.model.sample(6, generator=torch.Generator().manual_seed(3), labels=torch.tensor(1))
    assert a.shape == (6, 1, 8, 8) and torch.equal(a, b) and float(a.abs().max()) <= 1.0


def test_private_run_releases_once_and_never_reads_a_private_batch(tmp_path, dataset):
    run = tmp_path / "private"
    trainer = _trainer(run, dataset, steps=5, privacy={"epsilon": 5.0, "delta": 1e-3})
    sigma = calibrate_noise(5.0, 1e-3, 1.0, 1, "rdp")
    assert trainer.private.noise_multiplier == sigma
    seen = []
    step_fn = trainer.model.training_step

    def spy(phase, batch, step):
        seen.append(batch.images.detach().clone())
        return step_fn(phase, batch, step)

    trainer.model.training_step = spy
    trainer.fit()
    assert len(seen) == 5 and all(not x.any() for x in seen)  # public zeros only
    info = _model_json(run)
    p = info["privacy"]
    assert p["steps"] == 1 and p["sample_rate"] == 1.0 and p["sensitivity"] == 1.0
    assert 4.9 <= p["epsilon"] <= 5.0 and p["noise_multiplier"] == sigma
    assert p["private_phases"] == [] and p["public_phases"] == ["generator"]
    assert "class_counts" not in info["dataset"]
    # no feature net was trained on the private data: it stays at its random init
    assert info["statistics"]["feature_net"].startswith("random")
    model = load_pipeline(run).model
    assert int(model.features_trained) == 0
    # the targets are the exact means plus noise of about sigma / count per entry
    diff = model.targets - _exact_means(run, dataset)
    assert 0.2 * sigma / 64 < float(diff.std()) < 5 * sigma / 64


def test_private_run_uses_the_base_runs_feature_net(tmp_path, dataset):
    base = tmp_path / "base"
    _trainer(base, dataset, steps=2).fit()
    run = tmp_path / "ft"
    _trainer(run, dataset, steps=3, privacy={"epsilon": 5.0, "delta": 1e-3}, init_from=base).fit()
    a, b = load_file(str(base / "model.safetensors")), load_file(str(run / "model.safetensors"))
    for key in a:
        if key.startswith("features."):
            assert np.array_equal(a[key], b[key]), key
    info = _model_json(run)
    assert info["statistics"]["feature_net"].startswith("trained before this run")
    assert info["init_from"]["path"] == str(base)


def test_a_base_on_other_classes_gives_its_feature_net_not_its_class_tables(tmp_path, dataset):
    """The private scenario's public base may have other classes than the data (`if_classes_differ:
    transfer`): phi's layers come from the base, the class-sized tensors are the new model's own."""
    from genforge.data.canonical import SplitData, write_dataset

    base = tmp_path / "base"
    _trainer(base, dataset, steps=2).fit()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (48, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(48) % 3
    three = tmp_path / "three"
    write_dataset(three, {"train": SplitData(images, labels), "val": SplitData(images[:12], labels[:12])},
                  class_names=["a", "b", "c"], meta={"source": "test"})  # fmt: skip
    run = tmp_path / "ft"
    _trainer(run, three, steps=2, privacy={"epsilon": 5.0, "delta": 1e-3}, init_from=base).fit()
    a, b = load_file(str(base / "model.safetensors")), load_file(str(run / "model.safetensors"))
    carried = [k for k in a if k.startswith("features.") and not k.startswith("features.head.")]
    assert carried and all(np.array_equal(a[k], b[k]) for k in carried)
    assert a["features.head.weight"].shape[0] == 2 and b["features.head.weight"].shape[0] == 3
    assert b["targets"].shape[0] == 3
    info = _model_json(run)
    assert info["config"]["num_classes"] == 3
    assert info["statistics"]["feature_net"].startswith("trained before this run")
    images, labels = load_pipeline(run).generate(6, seed=0, labels=np.array([0, 1, 2, 0, 1, 2]))
    assert images.shape == (6, 8, 8, 1) and list(labels) == [0, 1, 2, 0, 1, 2]


def test_samples_per_class_follow_the_class_count():
    from genforge.models.mmd import MMD, default_per_class

    assert [default_per_class(n) for n in (0, 3, 10, 28, 40, 500)] == [25, 25, 25, 8, 6, 2]
    assert MMD.default_config(28, 1, 40).per_class == 6
    # a base's sized value follows a class change; a chosen one stays
    assert MMD.adapt_base_config({"num_classes": 10, "per_class": 25}, {"num_classes": 40})["per_class"] == 6
    assert MMD.adapt_base_config({"num_classes": 10, "per_class": 12}, {"num_classes": 40})["per_class"] == 12


def test_unbiased_estimator_removes_the_spread_penalty():
    """Over many draws of m samples around known means, the unbiased loss averages to the true
    squared distance, the biased one to that plus the estimate's variance (rows * dim / m for
    unit-variance noise); both agree with a direct loop on one draw."""
    from genforge.core.errors import ConfigError
    from genforge.models.mmd import MMDConfig, moment_distance

    g = torch.Generator().manual_seed(0)
    rows, m, dim, draws = 3, 4, 5, 20000
    mu, targets = 0.3 * torch.randn(rows, dim, generator=g), 0.3 * torch.randn(rows, dim, generator=g)
    phi = mu[None, :, None, :] + torch.randn(draws, rows, m, dim, generator=g, dtype=torch.float64).float()
    true = float((mu - targets).pow(2).sum())
    unbiased = np.mean([float(moment_distance(p, targets, unbiased=True)) for p in phi])
    biased = np.mean([float(moment_distance(p, targets, unbiased=False)) for p in phi])
    assert unbiased == pytest.approx(true, abs=0.03)
    assert biased == pytest.approx(true + rows * dim / m, abs=0.05)
    # one draw against the definition: mean over i != j of phi_i . phi_j - 2 mean . t + t . t
    p = phi[0].double()
    direct = sum(sum(float(p[r, i] @ p[r, j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
                 - 2 * float(p[r].mean(0) @ targets[r].double()) + float(targets[r].double() @ targets[r].double())
                 for r in range(rows))  # fmt: skip
    assert float(moment_distance(p, targets.double(), unbiased=True)) == pytest.approx(direct, rel=1e-9)
    with pytest.raises(ConfigError, match="estimator"):
        MMDConfig(estimator="median")


def test_private_resume_is_bit_exact_and_does_not_release_again(tmp_path, dataset):
    # a constant lr: the default cosine follows each run's own budget (4 steps, then 8)
    kw = {"sets": ["train.checkpoint_every=4", "model.lr_decay=constant"], "privacy": {"epsilon": 5.0, "delta": 1e-3}}
    _trainer(tmp_path / "full", dataset, steps=8, **kw).fit()
    _trainer(tmp_path / "part", dataset, steps=4, **kw).fit()
    trainer = _trainer(tmp_path / "part", dataset, steps=8, resume=True, **kw)
    assert trainer.fit(resume=True)["step"] == 8
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "model.safetensors"))
    for key in full:
        assert np.array_equal(full[key], part[key]), key
    a, b = _model_json(tmp_path / "full")["privacy"], _model_json(tmp_path / "part")["privacy"]
    assert a == b and a["steps"] == 1


def test_exports_to_onnx(tmp_path, dataset):
    from genforge.deploy.export import export_run

    run = tmp_path / "plain"
    _trainer(run, dataset, steps=2).fit()
    meta = export_run(run, "onnx", tmp_path / "mmd.onnx")
    assert (tmp_path / "mmd.onnx").is_file() and meta["family"] == "mmd"
