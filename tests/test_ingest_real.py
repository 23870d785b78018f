"""Ingest of the real data sets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import numpy as np

from genforge.data.canonical import open_dataset
from genforge.data.process import IngestConfig, ingest

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_mnist_idx_gives_10000_labelled_images(mnist_test_dir, tmp_path):
    # the t10k files alone are the data to train on; val_fraction 0 keeps all 10,000 in order
    result = ingest(str(mnist_test_dir), tmp_path / "mnist", IngestConfig(val_fraction=0.0))
    ds = open_dataset(tmp_path / "mnist")
    assert ds.split_names == ["train"] and ds.image_shape == (28, 28, 1)
    with gzip.open(mnist_test_dir / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    with gzip.open(mnist_test_dir / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    assert ds.class_names == [str(i) for i in range(10)]
    assert np.array_equal(ds.split("train").labels, labels.astype(np.int64))
    assert np.array_equal(ds.split("train").images[..., 0], images)
    report = json.loads((tmp_path / "mnist" / "report.json").read_text())
    assert report["summary"]["images"] == 10000 and report["summary"]["quarantined"] == 0
    assert report["outliers"]["saturated"] == []  # a black background is normal for MNIST
    assert (tmp_path / "mnist" / "report.html").stat().st_size > 10000
    assert result.manifest["counts"]["val_carved"] == 0


def test_cifar10_tar_gives_50000_train_and_10000_test_with_the_right_labels(cifar_tar, tmp_path):
    result = ingest(str(cifar_tar), tmp_path / "cifar", IngestConfig(size=(32, 32)))
    ds = open_dataset(tmp_path / "cifar")
    assert sorted(ds.split_names) == ["test", "train"]  # a source test split: no val carved by default
    assert ds.class_names == CIFAR_CLASSES and ds.image_shape == (32, 32, 3)
    for name, count in (("train", 50000), ("test", 10000)):
        split = ds.split(name)
        assert len(split) == count
        folders = [o.split("::")[1].split("/")[1] for o in split.index["origins"]]
        assert [CIFAR_CLASSES[k] for k in split.labels] == folders
        assert set(Counter(folders).values()) == {count // 10}
    report = json.loads((tmp_path / "cifar" / "report.json").read_text())
    assert report["summary"]["quarantined"] == 0 and report["counts"]["overall"]["imbalance_ratio"] == 1.0
    # CIFAR-10 is known to hold test images that nearly duplicate train images
    assert report["summary"]["leakage_pairs"] > 0
    assert all({p["a"]["split"], p["b"]["split"]} == {"train", "test"} for p in report["leakage"])
    assert result.manifest["counts"]["images"] == 60000
