"""Divergence guard: a NaN loss rolls back to the last good state with a lower learning rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from genforge.core.errors import GenforgeError
from genforge.train.launch import build_trainer
from test_train_models import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


def _trainer(out, dataset, steps, *sets):
    base = ["train.progress=none", "train.tensorboard=false", "train.log_every=1", "train.checkpoint_every=5"]
    return build_trainer(
        out, model_name="test-ae", data=dataset, flags={"steps": steps, "batch_size": 8}, sets=[*base, *sets]
    )


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("nan_at", "guard_every", "to_step"), [(7, 1, 5), (2, 1, 0), (6, 4, 5)])
def test_nan_once_rolls_back_and_finishes(tmp_path, dataset, nan_at, guard_every, to_step):
    run = tmp_path / "run"
    trainer = _trainer(run, dataset, 12, f"model.nan_at_step={nan_at}", f"train.guard_every={guard_every}")
    summary = trainer.fit()
    assert summary["step"] == 12
    events = [r for r in _records(run) if r.get("event") == "rollback"]
    assert len(events) == 1 and events[0]["to_step"] == to_step and events[0]["lr_scale"] == 0.5
    assert trainer.guard.retries == 1
    last = [r for r in _records(run) if "lr/main" in r][-1]
    assert last["lr/main"] == pytest.approx(0.01 * 0.5) and np.isfinite(last["main/loss"])
    weights = load_file(str(run / "model.safetensors"))
    assert all(np.isfinite(w).all() for w in weights.values())
    # the reduced learning rate is part of the checkpoint, so a resume keeps it
    state = json.loads((run / "checkpoints" / "step-0000012" / "state.json").read_text())
    assert state["guard"] == {"retries": 1, "lr_scale": 0.5}


def test_persistent_nan_stops_with_message_and_keeps_good_checkpoint(tmp_path, dataset):
    run = tmp_path / "run"
    trainer = _trainer(run, dataset, 20, "model.nan_from_step=7", "train.guard_max_retries=2")
    with pytest.raises(GenforgeError, match=r"diverged at step \d+ .*after 2 rollback"):
        trainer.fit()
    steps = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert steps == ["step-0000005"]  # nothing was saved after the divergence
    state = load_file(str(run / "checkpoints" / "step-0000005" / "state.safetensors"))
    assert all(np.isfinite(t).all() for t in state.values())
    assert not (run / "model.safetensors").exists()
    assert [r["lr_scale"] for r in _records(run) if r.get("event") == "rollback"] == [0.5, 0.25]
