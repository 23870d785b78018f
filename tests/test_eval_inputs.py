"""`genforge eval` on samples in the forms other tools write: (N,H,W) grayscale, NCHW, float
[0,1] and [-1,1] arrays (ambiguous ranges are an error that states the rule), folders of image
files. Every form of the same images gives the same uint8 images, hence the same metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genforge.cli import app
from genforge.core.errors import DataError
from genforge.evaluate.evaluate import load_samples
from genforge.evaluate.samples import RANGE_RULE, normalise_samples
from test_eval_fixtures import squares, squares_dataset

N = 60


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return squares(N, seed=21)[0]  # uint8 (N,16,16,1), values from 0 to 255


def load(path: Path, **kwargs) -> np.ndarray:
    samples = load_samples(path, n=10_000, seed=0, **kwargs)
    assert samples.images.dtype == np.uint8
    return samples.images


def test_grayscale_nhw_npy_and_npz(tmp_path, images):
    np.save(tmp_path / "nhw.npy", images[..., 0])
    assert np.array_equal(load(tmp_path / "nhw.npy"), images)
    np.savez(tmp_path / "adm.npz", images[..., 0], np.arange(N))  # np.savez positional: arr_0, arr_1
    samples = load_samples(tmp_path / "adm.npz", n=N, seed=0)
    assert np.array_equal(samples.images, images) and np.array_equal(samples.labels, np.arange(N))
    assert samples.source["layout"] == "NHW" and samples.source["kind"] == "npz"


def test_nchw_and_rgb_to_the_references_channels(tmp_path, images):
    nchw = images.transpose(0, 3, 1, 2)  # (N,1,16,16)
    np.save(tmp_path / "nchw.npy", nchw)
    assert np.array_equal(load(tmp_path / "nchw.npy"), images)
    rgb = np.repeat(nchw, 3, axis=1)  # (N,3,16,16), gray in every channel
    np.save(tmp_path / "rgb.npy", rgb)
    got = load_samples(tmp_path / "rgb.npy", n=N, seed=0, channels=1)
    assert np.array_equal(got.images, images) and got.source["channels"] == "3->1"
    assert np.array_equal(load(tmp_path / "nchw.npy", channels=3), np.repeat(images, 3, axis=-1))


def test_float_zero_one(tmp_path, images):
    np.savez(tmp_path / "f01.npz", images=(images / 255.0).astype(np.float32))
    samples = load_samples(tmp_path / "f01.npz", n=N, seed=0)
    assert np.array_equal(samples.images, images) and samples.source["value_range"] == [0.0, 1.0]


def test_float_minus_one_one_matches_the_pipelines_conversion(tmp_path, images):
    import torch

    from genforge.models.pipeline import from_uint8, to_uint8

    signed = from_uint8(images)  # float (N,1,16,16) in [-1,1], as models sample
    assert np.array_equal(to_uint8(signed), images)
    np.save(tmp_path / "signed.npy", signed.numpy())  # NCHW float32 in [-1,1]
    samples = load_samples(tmp_path / "signed.npy", n=N, seed=0)
    assert np.array_equal(samples.images, images)
    assert samples.source["value_range"] == [-1.0, 1.0] and samples.source["layout"] == "NCHW"
    noisy = signed + 0.004 * torch.randn(signed.shape, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "noisy.npy", noisy.clamp(-1, 1).numpy())
    assert np.array_equal(load(tmp_path / "noisy.npy"), to_uint8(noisy))


def test_ambiguous_or_out_of_range_floats_state_the_rule(tmp_path, images):
    # [-0.1, 0.8]: a [0,1] array overshooting, or [-1,1] without darks
    dips = (images / 255.0 * 0.9 - 0.1).astype(np.float32)
    np.save(tmp_path / "dips.npy", dips)
    with pytest.raises(DataError) as err:
        load(tmp_path / "dips.npy")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'dips.npy'}: float pixel values span [-0.1, 0.8]")
    assert "ambiguous" in message and RANGE_RULE in message and "--samples-range" in message
    clipped = load(tmp_path / "dips.npy", value_range="0,1")  # the user says which: negatives clip to 0
    assert np.array_equal(clipped, np.rint(np.clip(dips, 0, 1) * np.float32(255)).astype(np.uint8))
    np.save(tmp_path / "f255.npy", images.astype(np.float64))
    with pytest.raises(DataError, match=r"f255.npy: float pixel values span \[0, 255\], outside both"):
        load(tmp_path / "f255.npy")
    assert np.array_equal(load(tmp_path / "f255.npy", value_range="0,255"), images)
    with pytest.raises(DataError, match="NaN"):
        normalise_samples(np.full((2, 4, 4), np.nan), "x.npy")
    with pytest.raises(
        DataError, match=r"x.npy: sample images have 4 channels .*expected 1 \(grayscale\) or 3"
    ):
        normalise_samples(np.zeros((2, 4, 4, 4), np.uint8), "x.npy")
    with pytest.raises(DataError, match=r"x.npy: cannot tell the layout .*\(N,H,W\)"):
        normalise_samples(np.zeros((2, 5, 6, 7), np.uint8), "x.npy")
    with pytest.raises(DataError, match=r"x.npy: pixel values span \[0, 300\], expected \[0,255\]"):
        normalise_samples(np.array([[[0, 300]]], np.int64), "x.npy")


def _png(path: Path, image: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(image[..., 0])
    (im.convert(mode) if mode else im).save(path)


def test_folder_of_pngs(tmp_path, images):
    folder = tmp_path / "samples"
    for i, image in enumerate(images):  # nested folders, one RGB file; order by sorted path
        _png(folder / ("a" if i < 30 else "b") / f"{i:03d}.png", image, "RGB" if i == 7 else None)
    (folder / "a" / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"skipped")
    samples = load_samples(folder, n=10_000, seed=0, channels=1)
    assert np.array_equal(samples.images, images) and samples.source["kind"] == "folder"
    assert np.array_equal(load_samples(folder, n=5, seed=0, channels=3).images, np.repeat(images[:5], 3, -1))

    (folder / "b" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"zz-broken.png: .*expected a readable image file"):
        load(folder, channels=1)
    (folder / "b" / "zz-broken.png").unlink()
    _png(folder / "b" / "zz-big.png", np.zeros((20, 16, 1), np.uint8))
    with pytest.raises(
        DataError, match=r"zz-big.png: a 16x20 image, but .*000.png is 16x16: .*share one size"
    ):
        load(folder, channels=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no model.json and no image files \(.*\.png"):
        load(tmp_path / "empty")


def test_cli_metrics_equal_across_forms(tmp_path, images, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    ds = squares_dataset(tmp_path / "ds", n_train=100, n_val=100, n_test=20)
    folder = tmp_path / "pngs"
    for i, image in enumerate(images):
        _png(folder / f"{i:03d}.png", image)
    np.savez(tmp_path / "u8.npz", images=images)
    np.save(tmp_path / "signed.npy", (images.transpose(0, 3, 1, 2) / 127.5 - 1).astype(np.float32))
    fids = {}
    for target in (tmp_path / "u8.npz", folder, tmp_path / "signed.npy"):
        args = ["eval", str(target), "--ref", str(ds), "--features", "random", "--metric", "fid"]
        res = CliRunner().invoke(app, [*args, "--no-memorisation"])
        assert res.exit_code == 0, res.output
        out = (
            target.with_name(target.name + ".metrics.json")
            if target.is_dir()
            else target.with_suffix(".metrics.json")
        )
        metrics = json.loads(out.read_text())
        assert metrics["metrics"]["fid"]["n_samples"] == N
        fids[target.name] = metrics["values"]["fid"]
    assert len(set(fids.values())) == 1, fids
    assert not (folder / "metrics.json").exists()  # a folder of samples is not written into
    res = CliRunner().invoke(
        app, ["eval", str(tmp_path / "signed.npy"), "--ref", str(ds), "--samples-range", "0,2"]
    )
    assert res.exit_code != 0 and "samples_range must be one of" in str(res.exception or res.output)
