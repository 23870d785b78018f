"""Importing this registers the service routes of the shipped modalities (images: deploy.service,
text: deploy.completions, audio: deploy.audio)."""

from __future__ import annotations

from genforge.deploy import audio, completions, service  # noqa: F401  (registration)
