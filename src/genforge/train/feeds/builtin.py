"""Importing this registers the feeds of the shipped modalities."""

from genforge.train.feeds import image, text  # noqa: F401
