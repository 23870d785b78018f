"""Feature extractors: torchscript from a local file, sanity baselines, preprocessing, registry errors,
and the deterministic, cached classifier evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genforge.core.errors import ConfigError, GenforgeError
from genforge.data.canonical import open_dataset
from genforge.evaluate.extractors.base import Preprocess, build_extractor, default_extractor
from genforge.evaluate.extractors.classifier import ClassifierConfig, classifier_extractor
from test_eval_fixtures import squares, squares_dataset


class TinyFeatures(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def test_torchscript_extractor_loads_a_saved_module(tmp_path) -> None:
    torch.manual_seed(0)
    module = TinyFeatures()
    path = tmp_path / "feat.pt"
    torch.jit.script(module).save(str(path))
    ext = build_extractor(f"torchscript:{path}", size=20, value_range="0,1")
    images, _ = squares(10, seed=0)
    feats = ext.extract(images).features
    assert feats.shape == (10, 4) and ext.dim == 4
    pre = Preprocess(size=(20, 20), resize_filter="bicubic", value_range=(0.0, 1.0), channels=3)
    with torch.no_grad():
        expected = module(pre.apply(images)).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    d = ext.describe()
    assert (
        d["id"] == "torchscript"
        and d["preprocessing"]["size"] == [20, 20]
        and d["preprocessing"]["value_range"] == [0, 1]
    )
    # the hash covers the preprocessing, so numbers at another input size never look comparable
    assert build_extractor(f"torchscript:{path}", size=24, value_range="0,1").hash != ext.hash


def test_torchscript_missing_file_says_what_to_fetch(tmp_path) -> None:
    missing = tmp_path / "inception.pt"
    with pytest.raises(GenforgeError) as err:
        build_extractor(f"torchscript:{missing}")
    msg = str(err.value)
    assert str(missing) in msg and "inception-2015-12-05" in msg and "Nothing is downloaded" in msg
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(GenforgeError, match="not a loadable TorchScript"):
        build_extractor(f"torchscript:{bad}")


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="unknown feature extractor 'inception'.*known: classifier"):
        build_extractor("inception")
    with pytest.raises(ConfigError, match="needs an argument"):
        build_extractor("torchscript")
    with pytest.raises(ConfigError, match="takes no argument"):
        build_extractor("pixels:foo", size=8)
    with pytest.raises(ConfigError, match="does not take option"):
        build_extractor("random", size=8, epochs=3)
    with pytest.raises(ConfigError, match="trained on a dataset"):
        build_extractor("classifier")


def test_pixels_and_random_baselines() -> None:
    images, _ = squares(6, seed=0)
    pix = build_extractor("pixels", size=16).extract(images).features
    assert pix.shape == (6, 16 * 16 * 3)  # grey expanded to 3 channels when no dataset fixes them
    np.testing.assert_allclose(pix.reshape(6, 3, 16, 16)[:, 0], images[..., 0] / 255.0, rtol=1e-6)
    r1, r2 = build_extractor("random", size=16), build_extractor("random", size=16)
    assert r1.weights_hash == r2.weights_hash and r1.dim == 256
    np.testing.assert_array_equal(r1.extract(images).features, r2.extract(images).features)


def test_preprocess_resize_and_channels() -> None:
    images = np.full((2, 8, 8, 3), 255, np.uint8)
    images[..., 1:] = 0  # pure red
    out = Preprocess(size=(4, 4), channels=1, value_range=(0.0, 1.0)).apply(images)
    assert out.shape == (2, 1, 4, 4)
    assert float(out.mean()) == pytest.approx(0.299, abs=1e-5)


def test_classifier_is_deterministic_cached_and_accurate(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(squares_dataset(tmp_path / "ds"))
    assert default_extractor(ds) == "classifier"
    cfg = ClassifierConfig(epochs=2, width=8, feature_dim=16, batch_size=32)
    first = classifier_extractor(ds, cfg)
    assert first.info["heldout_split"] == "val" and first.info["heldout_accuracy"] > 0.9
    again = classifier_extractor(ds, cfg, retrain=True)  # same data + seed -> same weights
    assert again.weights_hash == first.weights_hash
    cached = classifier_extractor(ds, cfg)
    assert cached.info["train_seconds"] == again.info["train_seconds"]  # loaded, not retrained
    images, _ = squares(50, seed=9)
    np.testing.assert_array_equal(first.extract(images).features, cached.extract(images).features)
    other_seed = classifier_extractor(
        ds, ClassifierConfig(epochs=2, width=8, feature_dim=16, batch_size=32, seed=1)
    )
    assert other_seed.weights_hash != first.weights_hash
    # a corrupted cache fails loudly instead of silently shifting every metric
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in first.net.state_dict().items()}
    key = next(k for k in state if k.endswith("weight"))
    state[key] += 1
    save_file(state, first.info["cache"] + "/weights.safetensors")
    with pytest.raises(GenforgeError, match="do not match their recorded hash"):
        classifier_extractor(ds, cfg)
