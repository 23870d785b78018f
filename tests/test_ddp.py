"""Two gloo processes with batch B each train the same weights as one process with batch 2B."""

from __future__ import annotations

import json
import subprocess

import numpy as np
from safetensors.numpy import load_file

from test_train_models import PYTHON, cli_env, make_dataset, write_launcher


def test_two_process_gloo_run_matches_single_process(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    launcher = write_launcher(tmp_path)
    args = [
        "train", "--model", "test-ae", "--data", str(dataset), "--steps", "8", "--batch-size", "16", "--seed", "2",
        # noise and dropout draw per-rank random numbers; without them the maths is the same
        "--set", "model.noise=0", "--set", "model.dropout=0", "--set", "train.checkpoint_every=4",
        # fp32: a half batch rounds differently from the whole one in bf16 (auto's choice on this CPU)
        "--precision", "fp32",
        "--set", "train.tensorboard=false", "--set", "train.log_every=2",
    ]  # fmt: skip
    env = cli_env()
    single = subprocess.run(
        [PYTHON, str(launcher), *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr
    ddp_cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(launcher)]
    ddp = subprocess.run(
        [*ddp_cmd, *args, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # training moved the weights, so the comparison is not between two untouched initialisations
    init = load_file(str(tmp_path / "one" / "checkpoints" / "step-0000004" / "state.safetensors"))
    assert not np.allclose(init["model/decoder.weight"], one["decoder.weight"])
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2
    state = json.loads((tmp_path / "two" / "checkpoints" / "step-0000008" / "state.json").read_text())
    assert len(state["rng"]) == 2  # each rank's RNG state is kept
    logged = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4, 6, 8] and logged[-1]["images"] == 8 * 16
