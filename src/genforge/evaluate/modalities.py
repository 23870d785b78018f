"""Importing this registers the evaluations of the shipped modalities beyond images."""

from __future__ import annotations
