"""Checkpoints as safetensors + JSON: tensors flattened under key prefixes, everything else in JSON.

    checkpoints/step-NNNNNNN/state.safetensors   model/..., ema/..., optim/<phase>/<param>/<name>
    checkpoints/step-NNNNNNN/state.json          step, images, elapsed, config, loader and RNG
                                                 states, optimiser hyperparameters
    checkpoints/best.json                        which step is best by the configured metric

Loading reads tensors and JSON only: nothing is unpickled, so a checkpoint cannot run code.
A checkpoint whose files are truncated, unparsable or missing raises `CorruptCheckpoint`;
`--resume` then sets it aside (`step-NNNNNNN.corrupt`) and falls back to the one before.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genforge.core.atomic import atomic_dir, write_json
from genforge.core.errors import GenforgeError

try:
    from safetensors import SafetensorError
except ImportError:  # older safetensors: the Rust errors are not exported
    SafetensorError = ValueError

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
BEST_JSON = "best.json"
_STEP_DIR = re.compile(r"^step-(\d{7,})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


# --- optimiser state -------------------------------------------------------------------------


def optimizer_to_flat(
    opt: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (keyed prefix/param/name) and JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "/"):
            pid, name = key[len(prefix) + 1 :].split("/", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


# --- random number generators ----------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Global RNG states as JSON: torch CPU (and CUDA), numpy, python `random`."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a side task (sampling, evaluation) without moving the global RNG streams training uses."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    saved_cuda = torch.cuda.get_rng_state_all() if cuda else None
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
        if saved_cuda is not None:
            torch.cuda.set_rng_state_all(saved_cuda)


def generator_state(gen: torch.Generator) -> list[int]:
    return gen.get_state().tolist()


def set_generator_state(gen: torch.Generator, state: list[int]) -> None:
    gen.set_state(torch.tensor(state, dtype=torch.uint8))


# --- files -----------------------------------------------------------------------------------


def save(directory: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write checkpoint `step` under `directory` atomically; returns its path."""
    target = Path(directory) / step_dir_name(step)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_dir(target, overwrite=True) as tmp:
        save_file(flat, str(tmp / STATE_TENSORS))
        write_json(tmp / STATE_JSON, {**meta, "step": step})
    return target


class CorruptCheckpoint(GenforgeError):
    """A checkpoint's files are truncated, unparsable or missing (not: unreadable for permissions)."""


def load(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    try:
        tensors = load_file(str(path / STATE_TENSORS), device=str(device))
        meta = json.loads((path / STATE_JSON).read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
            raise ValueError(f"{STATE_JSON} holds no step number")
    except (FileNotFoundError, SafetensorError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
        missing = isinstance(exc, FileNotFoundError) and isinstance(exc.filename, str)
        what = f"{Path(exc.filename).name} is missing" if missing else exc
        raise CorruptCheckpoint(f"{path}: damaged checkpoint ({what})") from None
    except Exception as exc:
        raise GenforgeError(f"{path}: cannot read checkpoint ({exc})") from None
    return tensors, meta


def list_steps(directory: Path) -> list[int]:
    """Steps of the complete checkpoints in `directory`, ascending (temporary dirs are skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = []
    for child in directory.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and (child / STATE_JSON).is_file() and (child / STATE_TENSORS).is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def candidates(directory: Path) -> list[Path]:
    """Every step-NNNNNNN directory, newest first, complete or not (resume checks each in turn)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), c) for c in directory.iterdir() if (m := _STEP_DIR.match(c.name)) and c.is_dir()]
    return [c for _, c in sorted(found, reverse=True)]


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to step-NNNNNNN.corrupt[-K], out of every listing; its new path."""
    path = Path(path)
    target = path.with_name(path.name + ".corrupt")
    k = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{k}")
        k += 1
    path.rename(target)
    return target


def latest(directory: Path) -> Path | None:
    steps = list_steps(directory)
    return Path(directory) / step_dir_name(steps[-1]) if steps else None


def read_best(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / BEST_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def update_best(directory: Path, step: int, metric: str, value: float | None, mode: str) -> bool:
    """Record `step` as best when `value` beats the recorded one; True when it did."""
    if not metric or value is None or not np.isfinite(value):
        return False
    best = read_best(directory)
    if best is not None and best.get("metric") == metric and (best["step"] in list_steps(directory)):
        better = value < best["value"] if mode == "min" else value > best["value"]
        if not better:
            return False
    write_json(Path(directory) / BEST_JSON, {"step": step, "metric": metric, "value": value, "mode": mode})
    return True


def prune(directory: Path, keep_last: int) -> None:
    """Remove checkpoints except the last `keep_last` and the best one."""
    steps = list_steps(directory)
    keep = set(steps[-keep_last:]) if keep_last else set()
    best = read_best(directory)
    if best is not None:
        keep.add(int(best["step"]))
    for step in steps:
        if step not in keep:
            shutil.rmtree(Path(directory) / step_dir_name(step), ignore_errors=True)
