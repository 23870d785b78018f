"""Importing this registers the dataset readers of the shipped modalities beyond images."""

from __future__ import annotations

import genforge.data.text  # noqa: F401  (registers the "text" dataset reader and ingester)
