"""`restore_path`: image file, folder and .npz round trips through a saved restoration model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.core.errors import DataError, GenforgeError
from genforge.models.corruption import CorruptionConfig
from genforge.models.dae import DAE
from genforge.models.gan import DCGAN
from genforge.models.pipeline import from_uint8, save_model, to_uint8
from genforge.models.restoration import restore_path


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    m = DAE(DAE.default_config(16, 3, widths=[8, 16]))
    with torch.no_grad():
        m.net.out.weight.normal_(0, 0.05)  # not the identity, so outputs differ from inputs
    m.eval()
    save_model(m, "dae", tmp_path / "run", {"step": 0})
    return tmp_path / "run", m


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def _expected(model, images):
    return to_uint8(model.restore(from_uint8(images)))


def test_png_round_trip(run_dir, tmp_path):
    run, model = run_dir
    img = _images(1)
    Image.fromarray(img[0]).save(tmp_path / "in.png")
    res = restore_path(run, tmp_path / "in.png", tmp_path / "out.png")
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert res.kind == "image" and out.shape == (16, 16, 3)
    assert np.array_equal(out, _expected(model, img)[0]) and not np.array_equal(out, img[0])


def test_folder_round_trip(run_dir, tmp_path):
    run, model = run_dir
    imgs = _images(3, seed=1)
    (tmp_path / "in").mkdir()
    for i, arr in enumerate(imgs):
        Image.fromarray(arr).save(tmp_path / "in" / f"im{i}.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    res = restore_path(run, tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.png", "im1.png", "im2.png"]
    expected = _expected(model, imgs)
    for i in range(3):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"im{i}.png")), expected[i])
    assert res.names == ["im0", "im1", "im2"]
    with pytest.raises(GenforgeError, match="already exists"):
        restore_path(run, tmp_path / "in", tmp_path / "out")


def test_npz_round_trip_with_demo_corruption(run_dir, tmp_path):
    run, model = run_dir
    imgs = _images(5, seed=2)
    np.savez(tmp_path / "in.npz", images=imgs)
    cfg = CorruptionConfig(kinds=["rectangles"])
    restore_path(run, tmp_path / "in.npz", tmp_path / "a.npz", corruption=cfg, seed=3)
    restore_path(run, tmp_path / "in.npz", tmp_path / "b.npz", corruption=cfg, seed=3)
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a["images"].shape == (5, 16, 16, 3) and a["images"].dtype == np.uint8
        assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["corrupted"], b["corrupted"])
        assert not np.array_equal(a["corrupted"], imgs)  # holes were cut
        assert np.array_equal(a["images"], _expected(model, a["corrupted"]))
    restore_path(run, tmp_path / "in.npz", tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as plain:
        assert set(plain.files) == {"images"} and np.array_equal(plain["images"], _expected(model, imgs))


def test_bad_inputs_are_named(run_dir, tmp_path):
    run, _ = run_dir
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big\.png.*16x16"):
        restore_path(run, tmp_path / "big.png", tmp_path / "o.png")
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(DataError, match=r"wrong\.npz: no `images`"):
        restore_path(run, tmp_path / "wrong.npz", tmp_path / "o.npz")
    with pytest.raises(DataError, match="no such file"):
        restore_path(run, tmp_path / "missing.png", tmp_path / "o.png")
    gan = DCGAN(DCGAN.default_config(16, 3, g_widths=[8, 8, 8], d_widths=[8]))
    save_model(gan, "dcgan", tmp_path / "gan", {})
    with pytest.raises(GenforgeError, match="restoration model"):
        restore_path(tmp_path / "gan", tmp_path / "big.png", tmp_path / "o.png")


def test_grey_input_is_converted_to_the_models_channels(run_dir, tmp_path):
    run, model = run_dir
    Image.fromarray(np.full((16, 16), 100, np.uint8), mode="L").save(tmp_path / "grey.png")
    res = restore_path(run, tmp_path / "grey.png", tmp_path / "o.png")
    assert res.corrupted.shape == (1, 16, 16, 3) and (res.corrupted == 100).all()
