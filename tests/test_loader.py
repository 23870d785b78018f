"""The training-batch loader: epochs, determinism, resume, DDP shards, class balance, real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genforge.core.errors import DataError
from genforge.data.canonical import SplitData, open_dataset, write_dataset
from genforge.data.loader import BatchLoader, inverse_frequency_weights, to_float
from genforge.models.pipeline import from_uint8


def toy(n: int = 103, shape=(5, 4, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Image i is filled with i % 256 in channel 0 and its label is i, so batches name their indices."""
    images = np.zeros((n, *shape), np.uint8)
    images[..., 0] = (np.arange(n) % 256)[:, None, None]
    images[..., 1:] = np.random.default_rng(0).integers(0, 256, (n, *shape[:2], shape[2] - 1), dtype=np.uint8)
    return images, np.arange(n, dtype=np.int64)


def take(loader: BatchLoader, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b.images.clone(), b.labels.clone()) for b in (next(loader) for _ in range(k))]


def assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(la, lb)


@pytest.mark.parametrize("drop_last", [True, False])
def test_every_index_once_per_epoch_and_batches_match_their_indices(drop_last):
    images, labels = toy()
    loader = BatchLoader(images, labels, batch_size=16, seed=3, drop_last=drop_last)
    seen = torch.cat([b.labels for b in loader.iter_epoch()]).numpy()
    expected = (103 // 16) * 16 if drop_last else 103
    assert len(loader) == (6 if drop_last else 7)
    assert len(seen) == expected and len(np.unique(seen)) == expected
    assert not np.array_equal(seen, np.arange(expected))  # shuffled
    # the layout is channels-first and each image is the one its label names
    batch = loader.gather(np.array([7, 2, 99]))
    assert batch.images.shape == (3, 3, 5, 4) and batch.images.dtype == torch.uint8
    assert torch.equal(batch.images.permute(0, 2, 3, 1), torch.from_numpy(images[[7, 2, 99]]))
    assert batch.labels.tolist() == [7, 2, 99]
    with pytest.raises(DataError, match=r"0\.\.102"):
        loader.gather(np.array([3, 103]))


def test_seeded_determinism_and_new_order_each_epoch():
    images, labels = toy()
    a = take(BatchLoader(images, labels, batch_size=10, seed=1), 25)
    b = take(BatchLoader(images, labels, batch_size=10, seed=1), 25)
    c = take(BatchLoader(images, labels, batch_size=10, seed=2), 25)
    assert_same(a, b)
    assert not torch.equal(a[0][1], c[0][1])
    # 10 batches per epoch: epoch 1 starts at batch 10 with a different order than epoch 0
    assert not torch.equal(torch.cat([lab for _, lab in a[:10]]), torch.cat([lab for _, lab in a[10:20]]))


def test_unshuffled_order_is_sequential():
    images, labels = toy(20)
    loader = BatchLoader(images, labels, batch_size=5, shuffle=False)
    assert torch.cat([b.labels for b in loader.iter_epoch()]).tolist() == list(range(20))


@pytest.mark.parametrize("stop", [3, 10, 11, 17])
def test_resume_gives_the_remaining_batches_of_an_uninterrupted_run(stop):
    images, labels = toy()
    full = take(BatchLoader(images, labels, batch_size=10, seed=5), 30)
    first = BatchLoader(images, labels, batch_size=10, seed=5)
    take(first, stop)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint stores it
    resumed = BatchLoader(images, labels, batch_size=10, seed=0)
    resumed.load_state_dict(state)
    assert_same(take(resumed, 30 - stop), full[stop:])


def test_bad_state_and_bad_sizes_are_named():
    images, labels = toy()
    loader = BatchLoader(images, labels, batch_size=10)
    with pytest.raises(DataError, match="saved for 50 images"):
        loader.load_state_dict({"seed": 0, "epoch": 0, "position": 0, "size": 50})
    with pytest.raises(DataError, match="not a multiple"):
        loader.load_state_dict({"seed": 0, "epoch": 0, "position": 15})
    with pytest.raises(DataError, match="missing field"):
        loader.load_state_dict({"seed": 0})
    with pytest.raises(DataError, match="cannot fill one batch of 128"):
        BatchLoader(images, labels, batch_size=64, world_size=2)
    with pytest.raises(DataError, match="rank < world_size"):
        BatchLoader(images, labels, batch_size=8, rank=2, world_size=2)
    with pytest.raises(DataError, match="uint8"):
        BatchLoader(images.astype(np.float32), labels, batch_size=8)


def test_world_size_one_is_the_plain_loader():
    images, labels = toy()
    assert_same(
        take(BatchLoader(images, labels, batch_size=8, seed=4), 20),
        take(BatchLoader(images, labels, batch_size=8, seed=4, rank=0, world_size=1), 20),
    )


@pytest.mark.parametrize("drop_last", [True, False])
def test_ddp_ranks_union_is_the_single_process_double_batch(drop_last):
    images, labels = toy()
    steps = 20  # crosses epoch boundaries
    single = take(BatchLoader(images, labels, batch_size=16, seed=9, drop_last=drop_last), steps)
    ranks = [
        take(
            BatchLoader(images, labels, batch_size=8, seed=9, rank=r, world_size=2, drop_last=drop_last),
            steps,
        )
        for r in range(2)
    ]
    assert len(BatchLoader(images, labels, batch_size=8, rank=1, world_size=2, drop_last=drop_last)) == len(
        BatchLoader(images, labels, batch_size=16, drop_last=drop_last)
    )
    for k in range(steps):
        union_images = torch.cat([ranks[0][k][0], ranks[1][k][0]])
        union_labels = torch.cat([ranks[0][k][1], ranks[1][k][1]])
        if drop_last or len(single[k][1]) == 16:
            assert torch.equal(union_images, single[k][0]) and torch.equal(union_labels, single[k][1])
        else:
            # the last, short global batch (103 % 16 = 7) is padded to 8 so both ranks take 4
            assert len(ranks[0][k][1]) == len(ranks[1][k][1]) == 4
            assert torch.equal(union_labels[:7], single[k][1])
    # within one epoch the two shards are disjoint
    epoch0 = [torch.cat([lab for _, lab in ranks[r][:6]]) for r in range(2)]
    assert not set(epoch0[0].tolist()) & set(epoch0[1].tolist())


def test_memory_map_and_ram_copy_give_the_same_batches(tmp_path):
    images, labels = toy()
    write_dataset(tmp_path, {"train": SplitData(images, labels)}, class_names=None, meta={})
    split = open_dataset(tmp_path).split("train")
    assert isinstance(split.images, np.memmap)
    mapped = BatchLoader.from_split(split, batch_size=12, seed=2, in_memory=False)
    ram = BatchLoader.from_split(split, batch_size=12, seed=2, in_memory=True)
    assert not mapped.in_memory and ram.in_memory
    for (im, lm), (ir, lr) in zip(take(mapped, 12), take(ram, 12), strict=True):
        assert im.shape == ir.shape and torch.equal(im, ir) and torch.equal(lm, lr)


def test_to_float_matches_the_numpy_conversion():
    images, labels = toy(40)
    loader = BatchLoader(images, labels, batch_size=8, in_memory=False)
    batch = next(loader)
    x = to_float(batch.images)
    assert x.dtype == torch.float32 and x.is_contiguous() and x.shape == (8, 3, 5, 4)
    reference = from_uint8(images[batch.labels.numpy()])
    assert torch.allclose(x, reference, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1
    with pytest.raises(DataError, match="uint8"):
        to_float(x)


def test_class_balanced_sampling_is_roughly_uniform_over_classes():
    counts = [600, 60, 6]
    labels = np.repeat(np.arange(3), counts)
    images = np.zeros((len(labels), 2, 2, 1), np.uint8)
    weights = inverse_frequency_weights(labels)
    assert np.isclose(weights.sum(), 1.0) and np.isclose(weights[0] * 600, weights[-1] * 6)
    loader = BatchLoader(images, labels, batch_size=32, seed=0, balanced=True)
    drawn = torch.cat([next(loader).labels for _ in range(100)]).numpy()
    freq = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(freq, 1 / 3, atol=0.04), freq
    # unbalanced sampling keeps the data's proportions
    plain = BatchLoader(images, labels, batch_size=32, seed=0)
    drawn = torch.cat([next(plain).labels for _ in range(20)]).numpy()
    assert np.bincount(drawn, minlength=3)[0] / len(drawn) > 0.85
    with pytest.raises(DataError, match="label >= 0"):
        BatchLoader(images, np.full(len(labels), -1), batch_size=4, balanced=True)


def test_balanced_resume_and_shards():
    labels = np.repeat(np.arange(4), [50, 20, 10, 5])
    images = np.zeros((len(labels), 2, 2, 1), np.uint8)
    full = take(BatchLoader(images, labels, batch_size=8, seed=1, balanced=True), 15)
    part = BatchLoader(images, labels, batch_size=8, seed=1, balanced=True)
    take(part, 6)
    resumed = BatchLoader(images, labels, batch_size=8, seed=1, balanced=True)
    resumed.load_state_dict(part.state_dict())
    assert_same(take(resumed, 9), full[6:])
    single = take(BatchLoader(images, labels, batch_size=8, seed=1, balanced=True), 5)
    halves = [
        take(BatchLoader(images, labels, batch_size=4, seed=1, balanced=True, rank=r, world_size=2), 5)
        for r in (0, 1)
    ]
    for k in range(5):
        assert torch.equal(torch.cat([halves[0][k][1], halves[1][k][1]]), single[k][1])


def test_mnist_canonical_split(mnist_test_dir, tmp_path):
    from genforge.data.sources.idx import read_idx

    images = read_idx(mnist_test_dir / "t10k-images-idx3-ubyte.gz")[:2000, :, :, None]
    labels = read_idx(mnist_test_dir / "t10k-labels-idx1-ubyte.gz")[:2000].astype(np.int64)
    write_dataset(
        tmp_path, {"train": SplitData(images, labels)}, class_names=[str(i) for i in range(10)], meta={}
    )
    loader = BatchLoader.from_split(open_dataset(tmp_path).split("train"), batch_size=256, seed=0)
    order = loader.epoch_order(0)
    batch = next(loader)
    assert batch.images.shape == (256, 1, 28, 28)
    assert torch.equal(batch.images[:, 0], torch.from_numpy(images[order[:256], :, :, 0]))
    assert torch.equal(batch.labels, torch.from_numpy(labels[order[:256]]))
