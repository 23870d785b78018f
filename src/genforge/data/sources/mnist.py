"""`mnist` (or `mnist:train`, `mnist:test`): the full MNIST, downloaded once into a cache.

The four files come from the first mirror that delivers them (`data.download.fetch`: retries,
resume, verification, atomic rename) into `cache_dir` (default `$GENFORGE_CACHE/mnist`, else
`~/.cache/genforge/mnist`), then are read by the `idx` source. Each file is verified by the
sha256 of its uncompressed content, which is the same whichever mirror re-gzipped it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genforge.core.errors import ConfigError
from genforge.data.download import fetch
from genforge.data.sources.idx import IdxPart, IdxSource
from genforge.data.sources.options import SourceOptions, parse_options

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# split -> (images file, labels file) as named on the mirrors
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# sha256 of the *uncompressed* files. The test digests are those of the copies in shared/data
# (checked against its README); the train digests are the ones published alongside MNIST loaders
# in several unrelated public projects, all agreeing. To fetch a file with no known digest, pass
# digests={name: None}: skipping verification is then the caller's explicit, recorded choice.
MNIST_SHA256: dict[str, str | None] = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def default_cache_dir() -> Path:
    root = os.environ.get("GENFORGE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "genforge") / "mnist"


@dataclass
class MnistOptions(SourceOptions):
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    mirrors: list[str] = field(default_factory=lambda: list(MIRRORS))  # base URLs, tried in order
    cache_dir: str | None = None
    digests: dict[str, str | None] = field(default_factory=dict)  # overrides of MNIST_SHA256 by file name
    retries: int = 3
    backoff: float = 1.0  # seconds before the second round over the mirrors, doubling after
    timeout: float = 30.0
    progress: Callable[[str, int, int | None], None] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [s for s in self.splits if s not in MNIST_FILES]
        if unknown or not self.splits:
            raise ValueError(f"splits must be a non-empty subset of {list(MNIST_FILES)}, got {self.splits}")


def expected_digest(name: str, overrides: dict[str, str | None]) -> str | None:
    if name in overrides:
        return overrides[name]
    if name not in MNIST_SHA256:
        raise ConfigError(
            f"mnist: no known sha256 for {name}; pass digests={{{name!r}: None}} to fetch it unverified"
        )
    return MNIST_SHA256[name]


def download_mnist(options: MnistOptions) -> tuple[Path, list[IdxPart], dict[str, str | None]]:
    """Fetch the files of `options.splits` into the cache; (cache dir, idx parts, digest per file)."""
    cache = Path(options.cache_dir).expanduser() if options.cache_dir else default_cache_dir()
    parts, digests = [], {}
    for split in options.splits:
        paths = []
        for name in MNIST_FILES[split]:
            digest = digests[name] = expected_digest(name, options.digests)
            urls = [base.rstrip("/") + "/" + name for base in options.mirrors]
            paths.append(
                fetch(
                    urls,
                    cache / name,
                    sha256=digest,
                    retries=options.retries,
                    backoff=options.backoff,
                    timeout=options.timeout,
                    progress=options.progress,
                )
            )
        parts.append(IdxPart(paths[0], paths[1], split))
    return cache, parts, digests


class MnistSource(IdxSource):
    name = "mnist"

    def __init__(self, options: MnistOptions):
        self.cache_dir, parts, self.digests = download_mnist(options)
        self.mirrors = list(options.mirrors)
        super().__init__(parts, options, "mnist")

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "source": self.name,
            "cache_dir": str(self.cache_dir),
            "mirrors": self.mirrors,
            "sha256": self.digests,
        }


class MnistFactory:
    def matches(self, spec: str) -> bool:
        return spec == "mnist" or spec.startswith("mnist:")

    def open(self, spec: str, **options: Any) -> MnistSource:
        _, _, splits = spec.partition(":")
        if splits:
            if "splits" in options:
                raise ConfigError(f"mnist: give the splits in the spec ({spec!r}) or as splits=, not both")
            options["splits"] = splits.split(",")
        return MnistSource(parse_options(MnistOptions, options, "mnist"))


FACTORY = MnistFactory()  # registered as 'mnist' by `builtin`, in matching order
