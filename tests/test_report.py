"""The data quality report: numbers against numpy references, and a self-contained HTML page."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from genforge.core.atomic import write_json
from genforge.data.canonical import SplitData, write_dataset
from genforge.data.report import write_report


def smooth(n: int, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    raw = gaussian_filter(rng.normal(size=(n, 16, 16, 3)), sigma=(0, 3, 3, 0))
    raw = (raw - raw.mean()) / raw.std()
    return np.clip(128 + 25 * raw, 0, 255).astype(np.uint8)


@pytest.fixture()
def dataset(tmp_path):
    train = smooth(60, seed=0)
    train[5] = 77  # blank
    train[9] = np.where(np.indices((16, 16)).sum(0) % 2 == 0, 255, 0)[..., None]  # saturated checkerboard
    train[12] = np.linspace(0, 250, 16).astype(np.uint8)[
        None, :, None
    ]  # a strong ramp: far from smooth blobs
    labels = np.array([0] * 40 + [1] * 20)
    test = smooth(10, seed=1)
    test[0] = train[30]  # an exact copy in test: leakage
    write_dataset(
        tmp_path / "ds",
        {"train": SplitData(train, labels), "test": SplitData(test, np.array([0] * 5 + [1] * 5))},
        class_names=["red", "blue"],
        meta={"source": {"kind": "synthetic"}},
    )
    write_json(
        tmp_path / "ds" / "process.json",
        {
            "quarantine": [
                {"origin": "x/broken.png", "kind": "truncated", "reason": "truncated image (OSError: ...)"}
            ],
            "dropped": [],
            "notes": [{"origin": "x/anim.gif", "note": "animated GIF with 3 frames: first frame used"}],
        },
    )
    return tmp_path / "ds", np.concatenate([train, test]), np.concatenate([labels, [0] * 5 + [1] * 5])


def test_report_numbers_match_numpy(dataset):
    path, images, labels = dataset
    report = write_report(path)
    stats = report["pixel_stats"]
    x = images.reshape(-1, 3).astype(np.float64)
    assert np.allclose([c["mean"] for c in stats["channels"]], x.mean(axis=0), atol=1e-3)
    assert np.allclose([c["std"] for c in stats["channels"]], x.std(axis=0), atol=1e-3)
    assert stats["histogram_images"] == 70
    assert np.array_equal(
        np.array(stats["histogram"]), [np.bincount(images[..., c].ravel(), minlength=256) for c in range(3)]
    )
    counts = report["counts"]
    assert counts["overall"]["per_class"] == {"red": 45, "blue": 25}
    assert counts["overall"]["imbalance_ratio"] == pytest.approx(45 / 25, abs=1e-4)
    assert (
        counts["splits"]["train"]["per_class"] == {"red": 40, "blue": 20}
        and counts["splits"]["test"]["total"] == 10
    )
    assert list(counts["splits"]) == ["train", "test"]
    assert [m["index"] for m in report["outliers"]["blank"]] == [5]
    assert [m["index"] for m in report["outliers"]["saturated"]] == [9]
    far = [(m["split"], m["index"]) for m in report["outliers"]["far_from_class"]]
    assert (
        ("train", 12) in far
        and ("train", 9) not in far
        and all(m["z"] > 4.0 for m in report["outliers"]["far_from_class"])
    )
    assert report["leakage"] == [
        {
            "a": {"origin": "train[30]", "split": "train", "index": 30},
            "b": {"origin": "test[0]", "split": "test", "index": 0},
            "kind": "exact",
            "distance": 0,
        }
    ]
    assert report["quarantine_by_kind"] == {"truncated": 1} and report["summary"]["quarantined"] == 1
    assert report["notes"][0]["note"].startswith("animated")


def test_report_html_is_self_contained(dataset):
    path, _, _ = dataset
    write_report(path)
    html = (path / "report.html").read_text()
    assert not re.search(r"(?:src|href)=\"(?!data:)", html)  # no external assets
    assert "http://" not in html and "https://" not in html
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) >= 2 * 10 + 2  # samples of two classes in train, plus the leakage pair
    assert Image.open(io.BytesIO(base64.b64decode(uris[0]))).format == "PNG"
    for text in (
        "Class balance",
        "Leakage across splits (1)",
        "Quarantined files (1)",
        "x/broken.png",
        "Pixel statistics",
        "<svg",
        "animated GIF",
    ):
        assert text in html


def test_report_renders_in_headless_chromium(dataset, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (CI installs it)")
    path, _, _ = dataset
    write_report(path)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1000,1400",
            (path / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.std() > 10  # a rendered page, not a blank one
