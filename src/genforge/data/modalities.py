"""Importing this registers the dataset readers (and ingesters) of the shipped modalities beyond images."""

from __future__ import annotations

import genforge.data.audio  # noqa: F401  (registers the "audio" dataset reader and ingester)
import genforge.data.text  # noqa: F401  (registers the "text" dataset reader and ingester)
