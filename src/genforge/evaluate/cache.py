"""Where trained evaluators and reference statistics are cached.

`GENFORGE_CACHE` (a directory) overrides the default `~/.cache/genforge`; evaluators live under
`evaluators/`, reference statistics under `stats/`.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("GENFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genforge"


def cache_dir(kind: str) -> Path:
    return cache_root() / kind
