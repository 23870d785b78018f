"""Importing this registers the `genforge sample` writers of the shipped modalities beyond images
(train/sampling.py registers the image writer)."""

from genforge.train import sample_audio, sample_text  # noqa: F401
