"""Importing this registers the service routes of the shipped modalities (images: deploy.service,
text: deploy.completions)."""

from __future__ import annotations

from genforge.deploy import completions, service  # noqa: F401  (registration)
