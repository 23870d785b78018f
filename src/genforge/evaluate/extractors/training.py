"""Deterministic training and frozen inference for the evaluators this package trains."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genforge.core.atomic import atomic_dir
from genforge.core.errors import GenforgeError
from genforge.core.hashing import hash_state_dict

WEIGHTS = "weights.safetensors"
INFO = "evaluator.json"


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seed init and data order, force deterministic kernels; restore the caller's settings after."""
    was = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield torch.Generator().manual_seed(seed)
        finally:
            torch.use_deterministic_algorithms(was)


def frozen(net: nn.Module) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_or_train(
    path: Path,
    build: Callable[[dict[str, Any]], nn.Module],
    train: Callable[[], tuple[nn.Module, dict[str, Any]]],
    retrain: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """The evaluator cached at `path` (safetensors + JSON), or `train()`'s, cached atomically.

    `build(info)` makes an untrained network from the saved info; the loaded weights must match
    the recorded hash, so a corrupted cache fails loudly instead of shifting every metric.
    """
    if (path / INFO).is_file() and not retrain:
        try:
            info = json.loads((path / INFO).read_text())
            net = build(info)
            net.load_state_dict(load_file(path / WEIGHTS))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise GenforgeError(
                f"{path}: cached evaluator is unreadable ({exc}); delete the folder to retrain"
            ) from None
        if weights_hash(net) != info["weights_hash"]:
            raise GenforgeError(
                f"{path}: cached evaluator weights do not match their recorded hash; delete the folder"
            )
        return net, info
    net, info = train()
    info["weights_hash"] = weights_hash(net)
    with atomic_dir(path, overwrite=True) as tmp:
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS))
        (tmp / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return net, info


def weights_hash(net: nn.Module) -> str:
    return hash_state_dict(net.state_dict())[:16]


def evaluator_path(kind: str, fingerprint: str, config: Any) -> Path:
    """Cache folder of a trained evaluator: one per (dataset fingerprint, config)."""
    from genforge.core.config import to_dict
    from genforge.core.hashing import hash_json
    from genforge.evaluate.cache import cache_dir

    return cache_dir("evaluators") / f"{kind}-{fingerprint}-{hash_json(to_dict(config))[:12]}"


def register_trained(name: str, factory: Callable[..., Any], config_class: type, summary: str) -> None:
    """Register an evaluator trained on the reference dataset; its options are `config_class`'s fields."""
    import dataclasses

    from genforge.core.config import from_dict
    from genforge.evaluate.extractors.base import EXTRACTORS, ExtractorSpec

    def build(arg: str | None, dataset: Any, **options: Any) -> Any:
        return factory(dataset, from_dict(config_class, options, where=f"{name} evaluator"))

    fields = tuple(f.name for f in dataclasses.fields(config_class))
    EXTRACTORS.register(name, ExtractorSpec(build=build, summary=summary, needs_dataset=True, options=fields))
