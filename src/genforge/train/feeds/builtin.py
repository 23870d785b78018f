"""Importing this registers the feeds of the shipped modalities."""

from genforge.train.feeds import audio, image, text  # noqa: F401
