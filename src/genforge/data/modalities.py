"""Importing this registers the dataset readers of the shipped modalities beyond images."""

from __future__ import annotations
