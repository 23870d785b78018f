"""`torchscript:PATH`: any TorchScript feature extractor from a local file.

This is how a user plugs in the standard Inception-v3 for literature-comparable FID: the
pt_inception-2015-12-05 TorchScript file that clean-fid and torch-fidelity use. Nothing is
downloaded; the default preprocessing (3 channels, 299x299 bicubic, values in [0, 255]) is the
one that network expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genforge.core.errors import ConfigError, GenforgeError
from genforge.core.hashing import sha256_bytes
from genforge.evaluate.extractors.base import EXTRACTORS, ExtractorSpec, FeatureExtractor, Preprocess
from genforge.evaluate.extractors.training import frozen

MISSING_HELP = (
    "no TorchScript feature extractor at {path}. Nothing is downloaded at run time: fetch one yourself. "
    "For FID comparable with the literature use the Inception-v3 (2015-12-05) TorchScript file that "
    "clean-fid and StyleGAN2-ADA load, inception-2015-12-05.pt "
    "(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt), "
    "save it at {path}, and pass --features torchscript:{path} --ts-return-features "
    "(it takes 3x299x299 images in [0, 255], the default preprocessing here)"
)


class TorchScriptExtractor(FeatureExtractor):
    id = "torchscript"

    def __init__(self, path: Path, module: torch.jit.ScriptModule, preprocess: Preprocess, weights_hash: str,
                 return_features: bool):  # fmt: skip
        self.path, self.module, self.preprocess = path, module, preprocess
        self.weights_hash = weights_hash
        self.return_features = return_features
        probe = self.forward(torch.zeros(1, preprocess.channels or 3, *(preprocess.size or (32, 32))))[0]
        self.dim = int(probe.shape[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.module(x, return_features=True) if self.return_features else self.module(x)
        if isinstance(out, tuple | list):
            out = out[0]  # modules returning (features, logits, ...): the first is the feature vector
        if not isinstance(out, torch.Tensor):
            raise GenforgeError(f"{self.path}: the module returned {type(out).__name__}, expected a tensor")
        return out.reshape(len(out), -1), None


def _parse_range(value: Any) -> tuple[float, float]:
    if isinstance(value, str):
        value = value.split(",")
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"value_range: expected two numbers LO,HI, got {value!r}") from None
    return lo, hi


def _build(
    arg: str | None,
    dataset: Any,
    size: int = 299,
    value_range: Any = (0.0, 255.0),
    resize_filter: str = "bicubic",
    channels: int = 3,
    return_features: bool = False,
) -> FeatureExtractor:
    path = Path(arg or "").expanduser()
    if not path.is_file():
        raise GenforgeError(MISSING_HELP.format(path=path))
    if resize_filter not in ("bilinear", "bicubic", "nearest"):
        raise ConfigError(f"resize_filter: expected bilinear, bicubic or nearest, got {resize_filter!r}")
    data = path.read_bytes()
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises several types for a bad archive; the file name is what matters
        raise GenforgeError(f"{path}: not a loadable TorchScript module ({exc})") from None
    pre = Preprocess(size=(int(size), int(size)), resize_filter=resize_filter,  # type: ignore[arg-type]
                     value_range=_parse_range(value_range), channels=int(channels))  # fmt: skip
    return TorchScriptExtractor(path, frozen(module), pre, sha256_bytes(data)[:16], return_features)


EXTRACTORS.register(
    "torchscript",
    ExtractorSpec(
        build=_build,
        summary="a local TorchScript feature network, e.g. Inception-v3 for literature-comparable FID",
        takes_argument=True,
        options=("size", "value_range", "resize_filter", "channels", "return_features"),
    ),
)
