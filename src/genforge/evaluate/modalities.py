"""Importing this registers the evaluations of the shipped modalities beyond images."""

from __future__ import annotations

import genforge.evaluate.text  # noqa: F401  (registers the "text" evaluation and report sections)
