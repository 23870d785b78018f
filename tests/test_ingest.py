"""End-to-end ingest: quarantine, duplicates and leakage, splits, manifest, atomicity, CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genforge.core.config import from_dict
from genforge.core.errors import DataError, GenforgeError
from genforge.data.canonical import open_dataset
from genforge.data.process import IngestConfig, ingest
from genforge.data.report import write_report
from genforge.data.sources.base import RawItem

REPO = Path(__file__).resolve().parents[1]


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def distinct_images(n: int, size: int = 24, seed: int = 0) -> np.ndarray:
    """Smooth random colour images: clearly different from each other."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    raw = gaussian_filter(rng.normal(size=(n, size, size, 3)), sigma=(0, 2, 2, 0))
    lo, hi = raw.min(axis=(1, 2, 3), keepdims=True), raw.max(axis=(1, 2, 3), keepdims=True)
    return np.rint((raw - lo) / (hi - lo) * 255).astype(np.uint8)


def labelled_items(images: np.ndarray, split: str, classes=("cat", "dog")) -> list[RawItem]:
    return [
        RawItem(
            origin=f"{split}/{classes[i % len(classes)]}/{i:03d}.png",
            split=split,
            label=classes[i % len(classes)],
            data=png(im),
        )
        for i, im in enumerate(images)
    ]


def broken_items() -> list[RawItem]:
    good = png(distinct_images(1, seed=99)[0])
    return [
        RawItem(origin="bad/truncated.png", split="train", label="cat", data=good[: len(good) // 2]),
        RawItem(origin="bad/empty.png", split="train", label="cat", data=b""),
        RawItem(origin="bad/text.png", split="train", label="dog", data=b"hello, not an image"),
        RawItem(
            origin="bad/loop", split="train", label="dog", error="symlink loop: bad/loop points back to bad"
        ),
    ]


def read_report(path: Path) -> dict:
    return json.loads((path / "report.json").read_text())


def test_broken_inputs_are_quarantined_and_every_good_image_is_kept(tmp_path):
    train = labelled_items(distinct_images(40), "train")
    test = labelled_items(distinct_images(10, seed=1), "test")
    items = train[:20] + broken_items() + train[20:] + test
    result = ingest(items, tmp_path / "ds", IngestConfig(workers=0))
    ds = open_dataset(tmp_path / "ds")
    assert set(ds.split_names) == {"train", "test"}
    assert len(ds.split("train")) == 40 and len(ds.split("test")) == 10  # test present: no val carved
    assert ds.split("train").index["origins"] == [i.origin for i in train]
    assert ds.class_names == ["cat", "dog"]
    assert ds.split("train").labels.tolist() == [i % 2 for i in range(40)]
    assert np.array_equal(ds.split("train").images[7], distinct_images(40)[7])
    report = read_report(tmp_path / "ds")
    quarantine = {q["origin"]: q for q in report["quarantine"]}
    assert {o: q["kind"] for o, q in quarantine.items()} == {
        "bad/truncated.png": "truncated",
        "bad/empty.png": "empty",
        "bad/text.png": "not-image",
        "bad/loop": "unreadable",
    }
    assert "symlink loop" in quarantine["bad/loop"]["reason"]
    assert result.manifest["quarantined"] == 4 and result.manifest["counts"]["read"] == 54
    assert report["summary"]["quarantined"] == 4 and report["quarantine_by_kind"]["empty"] == 1


def test_duplicates_and_leakage_are_reported_and_drop_keeps_held_out_copies(tmp_path):
    base = distinct_images(30, seed=2)
    brighter = np.clip(base[3].astype(int) + 12, 0, 255).astype(np.uint8)
    train = labelled_items(base[:20], "train")
    train.append(RawItem(origin="train/cat/copy-of-000.png", split="train", label="cat", data=png(base[0])))
    test = labelled_items(base[20:], "test")
    test.append(RawItem(origin="test/dog/leak-exact.png", split="test", label="dog", data=png(base[5])))
    test.append(RawItem(origin="test/dog/leak-near.png", split="test", label="dog", data=png(brighter)))
    ingest(train + test, tmp_path / "keep", IngestConfig(workers=0))
    report = read_report(tmp_path / "keep")
    exact = [sorted(m["origin"] for m in g["members"]) for g in report["duplicates"]["exact"]]
    assert sorted(exact) == [
        ["test/dog/leak-exact.png", "train/dog/005.png"],
        ["train/cat/000.png", "train/cat/copy-of-000.png"],
    ]
    leaks = {(p["a"]["origin"], p["b"]["origin"], p["kind"]) for p in report["leakage"]}
    assert leaks == {
        ("train/dog/005.png", "test/dog/leak-exact.png", "exact"),
        ("train/dog/003.png", "test/dog/leak-near.png", "near"),
    }
    assert report["summary"]["leakage_pairs"] == 2 and report["summary"]["near_duplicate_groups"] == 1
    write_report(tmp_path / "keep")  # `genforge data report` searches afresh and agrees
    assert read_report(tmp_path / "keep") == report

    result = ingest(train + test, tmp_path / "drop", IngestConfig(workers=0, dup_policy="drop"))
    ds = open_dataset(tmp_path / "drop")
    train_origins = set(ds.split("train").index["origins"])
    assert "train/cat/000.png" in train_origins and "train/cat/copy-of-000.png" not in train_origins
    # held-out copies stay; their train twins go
    assert {"train/dog/005.png", "train/dog/003.png"}.isdisjoint(train_origins)
    assert len(ds.split("test")) == 12 and len(ds.split("train")) == 18
    assert result.manifest["dup_policy"] == "drop" and result.manifest["counts"]["duplicates_dropped"] == 3
    dropped = read_report(tmp_path / "drop")
    assert dropped["summary"]["leakage_pairs"] == 0 and len(dropped["duplicates"]["dropped"]) == 3


def test_val_is_carved_stratified_when_the_source_has_only_train(tmp_path):
    items = labelled_items(distinct_images(60, seed=3), "train", classes=("a", "b", "c"))
    for it in items:
        it.split = None
    ingest(items, tmp_path / "ds", IngestConfig(workers=0, seed=1))
    ds = open_dataset(tmp_path / "ds")
    assert len(ds.split("train")) == 54 and len(ds.split("val")) == 6
    assert np.bincount(ds.split("val").labels).tolist() == [2, 2, 2]
    assert ds.reference_split.name == "val"
    again = ingest(items, tmp_path / "again", IngestConfig(workers=0, seed=1))
    assert again.manifest["fingerprint"] == ds.fingerprint  # same seed, same dataset


def test_mixed_sizes_need_size_and_size_resizes(tmp_path):
    items = labelled_items(distinct_images(4, size=24), "train") + labelled_items(
        distinct_images(4, size=30, seed=5), "train"
    )
    for k, it in enumerate(items):
        it.origin = f"img{k}.png"
    with pytest.raises(DataError, match=r"img0.png is 24x24 .* img4.png is 30x30.*--size"):
        ingest(items, tmp_path / "ds", IngestConfig(workers=0))
    assert not (tmp_path / "ds").exists()
    result = ingest(
        items, tmp_path / "ds", IngestConfig(workers=0, size=(16, 20), channels=1, resize_filter="area")
    )
    assert result.manifest["image_shape"] == [16, 20, 1] and result.manifest["resize_filter"] == "area"


def test_nothing_usable_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no usable images.*quarantined 4"):
        ingest(broken_items(), tmp_path / "ds", IngestConfig(workers=0))
    assert not (tmp_path / "ds").exists()


def test_worker_processes_give_the_same_dataset_as_in_process(tmp_path):
    items = labelled_items(distinct_images(300, size=16, seed=7), "train") + broken_items()
    one = ingest(items, tmp_path / "a", IngestConfig(workers=0, batch_size=32))
    two = ingest(items, tmp_path / "b", IngestConfig(workers=2, batch_size=32))
    assert one.manifest["fingerprint"] == two.manifest["fingerprint"]
    assert read_report(tmp_path / "a")["quarantine"] == read_report(tmp_path / "b")["quarantine"]


def test_manifest_config_and_overwrite(tmp_path):
    items = labelled_items(distinct_images(12, seed=8), "train")
    cfg = IngestConfig(workers=0, background="#102030", fit="pad", size=(20, 30))
    result = ingest(items, tmp_path / "ds", cfg)
    saved = json.loads((tmp_path / "ds" / "ingest.json").read_text())
    assert from_dict(IngestConfig, saved) == cfg
    m = result.manifest
    assert m["process"]["background"] == "#102030" and m["dup_policy"] == "keep-first"
    assert m["source"] == {"kind": "items"} and len(m["fingerprint"]) == 16
    with pytest.raises(GenforgeError, match="already exists"):
        ingest(items, tmp_path / "ds", cfg)
    ingest(items[:5], tmp_path / "ds", cfg, overwrite=True)
    assert open_dataset(tmp_path / "ds").manifest["counts"]["images"] == 5


def write_folder(root: Path, n_per_class: int, size: int = 20) -> None:
    images = distinct_images(2 * n_per_class, size=size, seed=11)
    for k, im in enumerate(images):
        split = "test" if k % 5 == 0 else "train"
        d = root / split / ("ants" if k % 2 else "bees")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{k:04d}.png")
    (root / "train" / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "train" / "bees" / "zero.png").write_bytes(b"")
    (root / "train" / "ants" / "loop.png").symlink_to("loop.png")  # a symlink to itself


def test_cli_ingest_and_report_on_a_folder(tmp_path):
    from genforge.cli import app

    write_folder(tmp_path / "src", 10)
    out = tmp_path / "ds"
    runner = CliRunner()
    flags = "--size 16 --channels 1 --workers 0".split()
    res = runner.invoke(app, ["data", "ingest", str(tmp_path / "src"), "--out", str(out), *flags])
    assert res.exit_code == 0, res.output
    assert "20 images" in res.output and "3 quarantined" in res.output and str(out) in res.output
    first = read_report(out)
    kinds = {Path(q["origin"]).name: q["kind"] for q in first["quarantine"]}
    assert kinds == {
        "broken.jpg": "truncated",
        "zero.png": "empty",
        "loop.png": "unreadable",
    }  # JPEG header, no data
    ds = open_dataset(out)
    assert ds.image_shape == (16, 16, 1) and ds.class_names == ["ants", "bees"]
    assert len(ds.split("test")) == 4 and len(ds.split("train")) == 16
    html = (out / "report.html").read_text()
    (out / "report.json").unlink()
    res = runner.invoke(app, ["data", "report", str(out)])
    assert res.exit_code == 0, res.output
    assert read_report(out) == first  # the report command reproduces what ingest wrote
    assert (out / "report.html").read_text() == html
    bad = runner.invoke(
        app, ["data", "ingest", str(tmp_path / "src"), "--out", str(tmp_path / "x"), "--size", "0x5"]
    )
    assert bad.exit_code != 0 and "--size" in str(bad.exception or bad.output)


def test_cli_killed_midway_leaves_no_dataset(tmp_path):
    write_folder(tmp_path / "src", 150, size=48)
    out = tmp_path / "ds"
    flags = "--size 160 --workers 0 --resize-filter lanczos".split()
    cmd = [
        sys.executable,
        "-m",
        "genforge",
        "data",
        "ingest",
        str(tmp_path / "src"),
        "--out",
        str(out),
        *flags,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".tmp-ds.*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "ingest finished before it could be killed"
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert list(tmp_path.glob(".tmp-ds.*"))  # the killed writer's leftovers, under a temporary name
    quick = [*cmd[: -len(flags)], "--size", "16"]
    done = subprocess.run(quick, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert open_dataset(out).manifest["counts"]["images"] == 300
    assert not list(tmp_path.glob(".tmp-ds.*"))  # cleaned by the next writer


def test_a_source_with_only_a_test_split_is_trained_on(tmp_path):
    # MNIST's t10k files are named as a test split; alone they are the data to train on
    items = labelled_items(distinct_images(40, seed=5), "test", classes=("a", "b"))
    ingest(items, tmp_path / "ds", IngestConfig(workers=0, val_fraction=0.5))
    ds = open_dataset(tmp_path / "ds")
    assert sorted(ds.split_names) == ["train", "val"]
    assert len(ds.split("train")) == len(ds.split("val")) == 20
    notes = json.loads((tmp_path / "ds" / "process.json").read_text())["notes"]
    assert any("only a 'test' split" in n["note"] for n in notes)
